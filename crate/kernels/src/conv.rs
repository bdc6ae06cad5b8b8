//! `K×K` convolution on NHWC images, forward and backward, alone ([`conv_forward`], the `Conv2d`
//! layer: bias added) or followed by ReLU + max-pool in the same pass ([`conv_relu_pool_forward`]):
//! im2col and one matrix product per chunk of images (or, at stride 1, Winograd F(4×4, 3×3), see
//! [`super::winograd`]), then the fused pooling of [`super::pool`]; 3×3 stride-1 layers over images of
//! one channel go to [`super::direct`] instead. Groups of a fixed number of images, spread over the cores.

use rayon::prelude::*;

use super::matmul::{add_column_sums, matmul_serial, Mat, Store};
use super::pool::{relu_max_pool, relu_max_pool_backward};
use super::winograd::{self, flip_kernel, plane_stride, transform_kernel, Planes, Tiling, PLANES};
use super::{direct, simd, Buf, Pass};

/// Geometry of a `K×K` convolution with stride `S` and `P` pixels of zero padding, followed (in the
/// fused layer) by ReLU and a `POOL×POOL` max-pool with stride `POOL` (floor, like Keras'
/// `padding="valid"`), on NHWC images. The plain convolution has `pool: 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub p: usize,
    /// The convolution's stride.
    pub s: usize,
    pub pool: usize,
}

impl ConvGeom {
    /// Convolution output height and width.
    pub fn conv_hw(&self) -> (usize, usize) {
        let o = |n: usize| {
            let padded = n + 2 * self.p;
            if padded < self.k || self.s == 0 {
                0
            } else {
                (padded - self.k) / self.s + 1
            }
        };
        (o(self.h), o(self.w))
    }
    /// Pooled output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        let (ho, wo) = self.conv_hw();
        (ho / self.pool, wo / self.pool)
    }
    /// Length of one im2col row: `K·K·IN`.
    pub fn patch(&self) -> usize {
        self.k * self.k * self.cin
    }
    /// Values per input image.
    pub fn in_len(&self) -> usize {
        self.h * self.w * self.cin
    }
    /// Convolution output pixels per image.
    pub fn pixels(&self) -> usize {
        let (ho, wo) = self.conv_hw();
        ho * wo
    }
    /// Values per pooled output image.
    pub fn out_len(&self) -> usize {
        let (hp, wp) = self.out_hw();
        hp * wp * self.cout
    }
}

/// Writes the im2col rows of one image: `cols` is `(H'·W', K·K·IN)`, row `(i, j)` holding the `K×K×IN`
/// window at output pixel `(i, j)`, zeros where the window reaches into the padding.
#[inline(never)]
pub(crate) fn im2col(g: &ConvGeom, x: &[f32], cols: &mut [f32]) {
    simd(
        #[inline(always)]
        || {
            let (ho, wo) = g.conv_hw();
            let (k, c) = (g.k, g.cin);
            for i in 0..ho {
                for j in 0..wo {
                    let row = &mut cols[(i * wo + j) * g.patch()..][..g.patch()];
                    let j0 = j * g.s;
                    for di in 0..k {
                        let r = (i * g.s + di).wrapping_sub(g.p);
                        let dst = &mut row[di * k * c..][..k * c];
                        if r >= g.h {
                            dst.fill(0.0);
                        } else if j0 >= g.p && j0 + k - g.p <= g.w {
                            // The whole window row is inside the image: K·IN contiguous values (NHWC).
                            dst.copy_from_slice(&x[(r * g.w + j0 - g.p) * c..][..k * c]);
                        } else {
                            for dj in 0..k {
                                let col = (j0 + dj).wrapping_sub(g.p);
                                let d = &mut dst[dj * c..][..c];
                                if col >= g.w {
                                    d.fill(0.0);
                                } else {
                                    d.copy_from_slice(&x[(r * g.w + col) * c..][..c]);
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The adjoint of [`im2col`]: adds each window row of `cols` back onto the pixels it came from.
#[inline(never)]
pub(crate) fn col2im_add(g: &ConvGeom, cols: &[f32], dx: &mut [f32]) {
    simd(
        #[inline(always)]
        || {
            let (ho, wo) = g.conv_hw();
            let (k, c) = (g.k, g.cin);
            for i in 0..ho {
                for j in 0..wo {
                    let row = &cols[(i * wo + j) * g.patch()..][..g.patch()];
                    for di in 0..k {
                        let r = (i * g.s + di).wrapping_sub(g.p);
                        if r >= g.h {
                            continue;
                        }
                        for dj in 0..k {
                            let col = (j * g.s + dj).wrapping_sub(g.p);
                            if col >= g.w {
                                continue;
                            }
                            let src = &row[(di * k + dj) * c..][..c];
                            for (d, s) in dx[(r * g.w + col) * c..][..c].iter_mut().zip(src) {
                                *d += s;
                            }
                        }
                    }
                }
            }
        },
    )
}

/// Adds `bias` `(OUT)` to every row of `y` `(pixels, OUT)`.
fn add_bias(y: &mut [f32], bias: &[f32]) {
    simd(
        #[inline(always)]
        || {
            for row in y.chunks_exact_mut(bias.len()) {
                row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
            }
        },
    )
}

/// Winograd F(4×4, 3×3) is used for 3×3 convolutions with one pixel of padding and several input
/// channels (with one, as in the first layer, [`direct`] computes 3×3 stride-1 convolutions without
/// products).
fn winograd_applies(g: &ConvGeom) -> bool {
    g.k == 3 && g.p == 1 && g.s == 1 && g.cin >= 2
}

/// What follows the convolution in the same pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Epilogue {
    /// The bias only: the `Conv2d` layer.
    Bias,
    /// Bias, ReLU and max-pool: the `ConvReluPool` layer.
    ReluPool,
}

/// Images per group. Fixed — not one group per thread — so that the kernel gradient is summed in the
/// same order whatever the number of threads: the same seed gives the same weights on 1, 2 or 16 cores.
const GROUP: usize = 16;

/// Images per step of a group (im2col or input transform, product, pooling): small enough that what
/// the step writes is still in cache when the next part reads it.
const CHUNK: usize = 8;

/// What the forward pass keeps for backward, per group of images.
pub struct Saved {
    groups: Vec<GroupSaved>,
    /// Images per group (the last group may have fewer).
    per: usize,
}

enum GroupSaved {
    /// The group's input as the kernel gradient reads it — the im2col matrix `(n·H'·W', K·K·IN)`, or
    /// with Winograd the 36 planes of transformed input tiles, `(36, n·tiles, IN)` — and the
    /// convolution outputs before ReLU `(n·H'·W', OUT)` (empty for the plain convolution).
    Products { cols: Buf, pre: Buf, fused: bool },
    /// One input channel ([`direct`]): the zero-padded images and the window position of each pooled
    /// maximum.
    Direct { padded: Vec<f32>, sel: Vec<u8> },
    /// One input channel, the convolution alone ([`direct::forward_plain`]): the zero-padded images.
    DirectPlain { padded: Vec<f32> },
}

/// Forward pass of a batch: `x` is `(B, H, W, IN)`, `kernel` `(K·K·IN, OUT)`, `bias` `(OUT)`. Returns the
/// pooled output `(B, H'/POOL, W'/POOL, OUT)` and — when training — what backward needs.
///
/// The batch is split into groups of [`GROUP`] images spread over the threads; each runs the
/// convolution (im2col and one matrix product, Winograd, or with one input channel the direct
/// convolution) and the pooling for its group alone, so the two cores meet once per layer instead of
/// inside every product. Inference goes in chunks of a few images to bound memory.
pub fn conv_relu_pool_forward(
    g: &ConvGeom,
    batch: usize,
    x: &[f32],
    kernel_bias: (&[f32], &[f32]),
    pass: Pass,
) -> (Vec<f32>, Option<Saved>) {
    forward(g, batch, x, kernel_bias, pass, Epilogue::ReluPool)
}

/// Forward pass of the convolution alone (`g.pool` must be 1): `(B, H', W', OUT)` with the bias added.
pub fn conv_forward(
    g: &ConvGeom,
    batch: usize,
    x: &[f32],
    kernel_bias: (&[f32], &[f32]),
    pass: Pass,
) -> (Vec<f32>, Option<Saved>) {
    debug_assert_eq!(g.pool, 1);
    forward(g, batch, x, kernel_bias, pass, Epilogue::Bias)
}

fn forward(
    g: &ConvGeom,
    batch: usize,
    x: &[f32],
    (kernel, bias): (&[f32], &[f32]),
    pass: Pass,
    epilogue: Epilogue,
) -> (Vec<f32>, Option<Saved>) {
    let train = pass == Pass::Train;
    let fused = epilogue == Epilogue::ReluPool;
    let (pix, patch, cout, in_len, out_len) = (g.pixels(), g.patch(), g.cout, g.in_len(), g.out_len());
    let per = GROUP;
    // Every path below writes every output value.
    let mut out = super::dirty_vec(batch * out_len);
    if batch == 0 || out_len == 0 {
        return (out, train.then(|| Saved { groups: Vec::new(), per }));
    }
    let tl = Tiling::new(g.h, g.w);
    let wino = winograd_applies(g).then(|| transform_kernel(kernel, g.cin, cout));
    let groups: Vec<GroupSaved> = out
        .par_chunks_mut(per * out_len)
        .zip(x.par_chunks(per * in_len))
        .map(|(out, x)| {
            let n = x.len() / in_len;
            if direct::applies(g) {
                let mut padded = vec![0f32; n * direct::padded_len(g)];
                direct::pad(g, x, &mut padded);
                if !fused {
                    direct::forward_plain(g, &padded, kernel, bias, out);
                    return GroupSaved::DirectPlain { padded };
                }
                let mut sel = vec![0u8; if train { n * out_len } else { 0 }];
                direct::forward(g, &padded, kernel, bias, out, train.then_some(&mut sel[..]));
                return GroupSaved::Direct { padded, sel };
            }
            // Training keeps every step's im2col rows or input planes for backward; inference reuses one.
            let kept = if train { n } else { CHUNK.min(n) };
            // The planes of all `kept` images: a step's tiles start at its first image's.
            let stride = plane_stride(kept * tl.per_image() * g.cin);
            let mut cols = Buf::dirty(if wino.is_some() { PLANES * stride } else { kept * pix * patch });
            // The plain convolution writes its products straight into the output; backward needs
            // only the fused layer's pre-activations.
            let mut pre = Buf::dirty(if fused { kept * pix * cout } else { 0 });
            for start in (0..n).step_by(CHUNK) {
                let m = CHUNK.min(n - start);
                let at = if train { start } else { 0 };
                let (pre_chunk, out_chunk) = (
                    &mut pre[if fused { at * pix * cout..(at + m) * pix * cout } else { 0..0 }],
                    &mut out[start * out_len..(start + m) * out_len],
                );
                let dst = if fused { &mut *pre_chunk } else { &mut *out_chunk };
                let xs = &x[start * in_len..(start + m) * in_len];
                match &wino {
                    Some(u) => {
                        let v = &mut cols[at * tl.per_image() * g.cin..];
                        winograd::transform_input(tl, g.cin, m, xs, v, stride);
                        winograd::conv_planes(
                            tl,
                            (g.cin, cout),
                            m,
                            Planes { values: v, stride },
                            u,
                            dst,
                            Store::Overwrite,
                        );
                    }
                    None => {
                        let cols = &mut cols[at * pix * patch..(at + m) * pix * patch];
                        for (c, xi) in cols.chunks_exact_mut(pix * patch).zip(xs.chunks_exact(in_len)) {
                            im2col(g, xi, c);
                        }
                        matmul_serial(
                            (m * pix, patch, cout),
                            Mat::Plain(cols),
                            Mat::Plain(kernel),
                            dst,
                            Store::Overwrite,
                        );
                    }
                }
                if fused {
                    for (o, p) in out_chunk.chunks_exact_mut(out_len).zip(pre_chunk.chunks_exact(pix * cout)) {
                        relu_max_pool(g, p, bias, o);
                    }
                } else {
                    add_bias(out_chunk, bias);
                }
            }
            GroupSaved::Products { cols, pre, fused }
        })
        .collect();
    (out, train.then_some(Saved { groups, per }))
}

/// Where a backward pass adds its gradients: the kernel's `(K·K·IN, OUT)`, the bias', and — when
/// given — the input's `(B, H, W, IN)`.
pub struct ConvGrads<'a> {
    pub kernel: &'a mut [f32],
    pub bias: &'a mut [f32],
    pub input: Option<&'a mut [f32]>,
}

/// Backward pass: from the gradient of the output (pooled, or the plain convolution's), adds the
/// kernel, bias and (when asked) input gradients into `grads`. Each group of images of the forward
/// pass is one task; their kernel and bias gradients are added in group order.
pub fn conv_relu_pool_backward(
    g: &ConvGeom,
    saved: &Saved,
    grad_out: &[f32],
    (kernel, bias): (&[f32], &[f32]),
    grads: ConvGrads,
) {
    let ConvGrads { kernel: grad_kernel, bias: grad_bias, input: grad_x } = grads;
    let (pix, patch, cout, in_len, out_len) = (g.pixels(), g.patch(), g.cout, g.in_len(), g.out_len());
    let per = saved.per;
    let tl = Tiling::new(g.h, g.w);
    let wino = winograd_applies(g);
    // The input gradient's transformed kernel: `(3, 3, OUT, IN)` turned by 180°.
    let u_back = (grad_x.is_some() && wino).then(|| transform_kernel(&flip_kernel(kernel, g.cin, cout), cout, g.cin));
    let mut grad_x_groups: Vec<Option<&mut [f32]>> = match grad_x {
        Some(dx) => dx.chunks_mut(per * in_len).map(Some).collect(),
        None => saved.groups.iter().map(|_| None).collect(),
    };
    // Per group: the kernel gradient (with Winograd still as its 36 planes) and the bias gradient.
    let partial: Vec<(Vec<f32>, Vec<f32>)> = saved
        .groups
        .par_iter()
        .zip(grad_out.par_chunks(per * out_len))
        .zip(grad_x_groups.par_iter_mut())
        .map(|((s, gout), dx)| {
            let n = gout.len() / out_len;
            let (cols, pre, fused) = match s {
                GroupSaved::Products { cols, pre, fused } => (cols, pre, *fused),
                GroupSaved::Direct { padded, sel } => {
                    let (mut gk, mut gb) = (vec![0f32; patch * cout], vec![0f32; cout]);
                    let mut grad_padded = dx.is_some().then(|| vec![0f32; padded.len()]);
                    let grads = ConvGrads { kernel: &mut gk, bias: &mut gb, input: grad_padded.as_deref_mut() };
                    direct::backward(g, (padded, sel), gout, kernel, grads);
                    if let (Some(dx), Some(gp)) = (dx.as_deref_mut(), &grad_padded) {
                        direct::unpad_add(g, gp, dx);
                    }
                    return (gk, gb);
                }
                GroupSaved::DirectPlain { padded } => {
                    let (mut gk, mut gb) = (vec![0f32; patch * cout], vec![0f32; cout]);
                    direct::backward_plain(g, padded, gout, &mut gk, &mut gb);
                    if let Some(dx) = dx.as_deref_mut() {
                        input_gradient_im2col(g, n, gout, kernel, dx);
                    }
                    return (gk, gb);
                }
            };
            let mut through_pool = Buf::dirty(if fused { n * pix * cout } else { 0 });
            let grad_pre: &[f32] = if fused {
                for ((gp, p), go) in through_pool
                    .chunks_exact_mut(pix * cout)
                    .zip(pre.chunks_exact(pix * cout))
                    .zip(gout.chunks_exact(out_len))
                {
                    relu_max_pool_backward(g, p, bias, go, gp);
                }
                &through_pool
            } else {
                gout
            };
            let mut gb = vec![0f32; cout];
            add_column_sums(grad_pre, &mut gb);
            if !wino {
                let mut gk = vec![0f32; patch * cout];
                matmul_serial(
                    (patch, n * pix, cout),
                    Mat::Transposed(cols),
                    Mat::Plain(grad_pre),
                    &mut gk,
                    Store::Overwrite,
                );
                if let Some(dx) = dx.as_deref_mut() {
                    input_gradient_im2col(g, n, grad_pre, kernel, dx);
                }
                return (gk, gb);
            }
            let tiles = tl.per_image();
            let mut planes = vec![0f32; PLANES * g.cin * cout];
            let v_stride = plane_stride(n * tiles * g.cin);
            for start in (0..n).step_by(CHUNK) {
                let m = CHUNK.min(n - start);
                let gp = &grad_pre[start * pix * cout..(start + m) * pix * cout];
                let d_stride = plane_stride(m * tiles * cout);
                let mut d = Buf::dirty(PLANES * d_stride);
                winograd::transform_grad(tl, cout, m, gp, &mut d, d_stride);
                let v = Planes { values: &cols[start * tiles * g.cin..], stride: v_stride };
                winograd::kernel_gradient_planes(
                    m * tiles,
                    (g.cin, cout),
                    v,
                    Planes { values: &d, stride: d_stride },
                    &mut planes,
                );
                if let (Some(dx), Some(u)) = (dx.as_deref_mut(), &u_back) {
                    let dx = &mut dx[start * in_len..(start + m) * in_len];
                    winograd::conv(tl, (cout, g.cin), m, gp, u, dx, Store::Accumulate);
                }
            }
            (planes, gb)
        })
        .collect();
    let mut planes = vec![0f32; if wino { PLANES * g.cin * cout } else { 0 }];
    for (gk, gb) in partial {
        let sum = if wino { &mut planes[..] } else { &mut grad_kernel[..] };
        for (a, b) in sum.iter_mut().zip(gk) {
            *a += b;
        }
        for (a, b) in grad_bias.iter_mut().zip(gb) {
            *a += b;
        }
    }
    if wino {
        winograd::add_kernel_gradient(&planes, g.cin, cout, grad_kernel);
    }
}

/// Adds the input gradient of `n` images from the gradient of the convolution's output `grad_pre`
/// `(n·H'·W', OUT)`: the im2col rows' gradient (one product with the kernel) added back onto the
/// pixels they came from.
fn input_gradient_im2col(g: &ConvGeom, n: usize, grad_pre: &[f32], kernel: &[f32], dx: &mut [f32]) {
    let (pix, patch) = (g.pixels(), g.patch());
    let mut grad_cols = Buf::dirty(n * pix * patch);
    matmul_serial(
        (n * pix, g.cout, patch),
        Mat::Plain(grad_pre),
        Mat::Transposed(kernel),
        &mut grad_cols,
        Store::Overwrite,
    );
    for (d, c) in dx.chunks_exact_mut(g.in_len()).zip(grad_cols.chunks_exact(pix * patch)) {
        col2im_add(g, c, d);
    }
}

// The tests and the profiling aid: against naive loops and adjoint identities.
#[cfg(test)]
#[path = "conv_tests.rs"]
mod tests;
