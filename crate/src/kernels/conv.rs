//! Stride-1 `K×K` convolution + ReLU + max-pool on NHWC images, forward and backward: im2col and one
//! matrix product per chunk of images (or Winograd, see [`super::winograd`]), then the fused pooling of
//! [`super::pool`]. Groups of a fixed number of images, spread over the cores.

use rayon::prelude::*;

use super::matmul::{add_column_sums, matmul_on};
use super::pool::{relu_max_pool, relu_max_pool_backward};
use super::winograd::{flip_kernel, winograd_conv, winograd_kernel};
use super::{simd, Buf};


/// Geometry of a stride-1 `K×K` convolution with `P` pixels of zero padding followed by ReLU and a
/// `POOL×POOL` max-pool with stride `POOL` (floor, like Keras' `padding="valid"`), on NHWC images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub p: usize,
    pub pool: usize,
}

impl ConvGeom {
    /// Convolution output height and width.
    pub fn conv_hw(&self) -> (usize, usize) {
        ((self.h + 2 * self.p + 1).saturating_sub(self.k), (self.w + 2 * self.p + 1).saturating_sub(self.k))
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
    simd(#[inline(always)] || {
        let (ho, wo) = g.conv_hw();
        let (k, c) = (g.k, g.cin);
        for i in 0..ho {
            for j in 0..wo {
                let row = &mut cols[(i * wo + j) * g.patch()..][..g.patch()];
                for di in 0..k {
                    let r = (i + di).wrapping_sub(g.p);
                    let dst = &mut row[di * k * c..][..k * c];
                    if r >= g.h {
                        dst.fill(0.0);
                    } else if j >= g.p && j + k - g.p <= g.w {
                        // The whole window row is inside the image: K·IN contiguous values (NHWC).
                        dst.copy_from_slice(&x[(r * g.w + j - g.p) * c..][..k * c]);
                    } else {
                        for dj in 0..k {
                            let col = (j + dj).wrapping_sub(g.p);
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
    })
}

/// The adjoint of [`im2col`]: adds each window row of `cols` back onto the pixels it came from.
#[inline(never)]
pub(crate) fn col2im_add(g: &ConvGeom, cols: &[f32], dx: &mut [f32]) {
    simd(#[inline(always)] || {
        let (ho, wo) = g.conv_hw();
        let (k, c) = (g.k, g.cin);
        for i in 0..ho {
            for j in 0..wo {
                let row = &cols[(i * wo + j) * g.patch()..][..g.patch()];
                for di in 0..k {
                    let r = (i + di).wrapping_sub(g.p);
                    if r >= g.h {
                        continue;
                    }
                    for dj in 0..k {
                        let col = (j + dj).wrapping_sub(g.p);
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
    })
}

/// Winograd F(2×2, 3×3) is used for 3×3 convolutions with one pixel of padding and several input
/// channels (with one, as in the first layer, the matrix products would be too thin to gain).
fn winograd_applies(g: &ConvGeom) -> bool {
    g.k == 3 && g.p == 1 && g.cin >= 2
}

/// Images per group. Fixed — not one group per thread — so that the kernel gradient is summed in the
/// same order whatever the number of threads: the same seed gives the same weights on 1, 2 or 16 cores.
const GROUP: usize = 16;

/// What the forward pass keeps for backward, per group of images.
pub(crate) struct Saved {
    groups: Vec<GroupSaved>,
    /// Images per group (the last group may have fewer).
    per: usize,
}

struct GroupSaved {
    /// The group's im2col matrix `(n·H'·W', K·K·IN)`.
    cols: Buf,
    /// The group's convolution outputs before ReLU `(n·H'·W', OUT)`.
    pre: Buf,
}

/// Forward pass of a batch: `x` is `(B, H, W, IN)`, `kernel` `(K·K·IN, OUT)`, `bias` `(OUT)`. Returns the
/// pooled output `(B, H'/POOL, W'/POOL, OUT)` and — when `train` — what backward needs.
///
/// The batch is split into groups of [`GROUP`] images spread over the threads; each runs im2col, one matrix product
/// `(n·H'·W', K·K·IN) × (K·K·IN, OUT)` and the pooling for its group alone, so the two cores meet once
/// per layer instead of inside every product. Inference goes in chunks of a few images to bound memory.
pub(crate) fn conv_relu_pool_forward(g: &ConvGeom, batch: usize, x: &[f32], kernel: &[f32], bias: &[f32], train: bool) -> (Vec<f32>, Option<Saved>) {
    let (pix, patch, cout, in_len, out_len) = (g.pixels(), g.patch(), g.cout, g.in_len(), g.out_len());
    let per = GROUP;
    let mut out = vec![0f32; batch * out_len];
    if batch == 0 || out_len == 0 {
        return (out, train.then(|| Saved { groups: Vec::new(), per }));
    }
    // Images per im2col + product + pooling step: small enough that the im2col rows are still in cache
    // when the product reads them. Training keeps every step's rows for backward; inference reuses one.
    const CHUNK: usize = 8;
    let wino = winograd_applies(g).then(|| winograd_kernel(kernel, g.cin, cout));
    let groups: Vec<GroupSaved> = out
        .par_chunks_mut(per * out_len)
        .zip(x.par_chunks(per * in_len))
        .map(|(out, x)| {
            let n = x.len() / in_len;
            let kept = if train { n } else { CHUNK.min(n) };
            let mut cols = Buf::dirty(if train || wino.is_none() { kept * pix * patch } else { 0 });
            let mut pre = Buf::dirty(kept * pix * cout);
            for start in (0..n).step_by(CHUNK) {
                let m = CHUNK.min(n - start);
                let at = if train { start } else { 0 };
                let cols = cols.get_mut(at * pix * patch..(at + m) * pix * patch).unwrap_or(&mut []);
                let pre = &mut pre[at * pix * cout..(at + m) * pix * cout];
                let xs = &x[start * in_len..(start + m) * in_len];
                if train || wino.is_none() {
                    // The weight gradient needs the im2col rows.
                    for (c, xi) in cols.chunks_exact_mut(pix * patch).zip(xs.chunks_exact(in_len)) {
                        im2col(g, xi, c);
                    }
                }
                match &wino {
                    Some(u) => winograd_conv(g.h, g.w, g.cin, cout, m, xs, u, pre, false),
                    None => matmul_on(false, m * pix, patch, cout, cols, false, kernel, false, pre, false),
                }
                for (o, p) in out[start * out_len..].chunks_exact_mut(out_len).zip(pre.chunks_exact(pix * cout)) {
                    relu_max_pool(g, p, bias, o);
                }
            }
            GroupSaved { cols, pre }
        })
        .collect();
    (out, train.then_some(Saved { groups, per }))
}

/// Backward pass: from the gradient of the pooled output, adds the kernel and bias gradients into
/// `grad_kernel` `(K·K·IN, OUT)` and `grad_bias`, and — when `grad_x` is given — the input gradient
/// `(B, H, W, IN)`. Each group of images of the forward pass is one task; their kernel and bias
/// gradients are added in group order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_relu_pool_backward(
    g: &ConvGeom,
    saved: &Saved,
    grad_out: &[f32],
    kernel: &[f32],
    bias: &[f32],
    grad_kernel: &mut [f32],
    grad_bias: &mut [f32],
    grad_x: Option<&mut [f32]>,
) {
    let (pix, patch, cout, in_len, out_len) = (g.pixels(), g.patch(), g.cout, g.in_len(), g.out_len());
    let per = saved.per;
    let wino = (grad_x.is_some() && winograd_applies(g)).then(|| winograd_kernel(&flip_kernel(kernel, g.cin, cout), cout, g.cin));
    let mut grad_x_groups: Vec<Option<&mut [f32]>> = match grad_x {
        Some(dx) => dx.chunks_mut(per * in_len).map(Some).collect(),
        None => saved.groups.iter().map(|_| None).collect(),
    };
    let partial: Vec<(Vec<f32>, Vec<f32>)> = saved
        .groups
        .par_iter()
        .zip(grad_out.par_chunks(per * out_len))
        .zip(grad_x_groups.par_iter_mut())
        .map(|((s, gout), dx)| {
            let n = gout.len() / out_len;
            let mut grad_pre = Buf::dirty(n * pix * cout);
            for ((gp, p), go) in grad_pre.chunks_exact_mut(pix * cout).zip(s.pre.chunks_exact(pix * cout)).zip(gout.chunks_exact(out_len)) {
                relu_max_pool_backward(g, p, bias, go, gp);
            }
            let mut gk = vec![0f32; patch * cout];
            matmul_on(false, patch, n * pix, cout, &s.cols, true, &grad_pre, false, &mut gk, false);
            let mut gb = vec![0f32; cout];
            add_column_sums(&grad_pre, &mut gb);
            if let (Some(dx), Some(u)) = (dx.as_deref_mut(), &wino) {
                winograd_conv(g.h, g.w, cout, g.cin, n, &grad_pre, u, dx, true);
            } else if let Some(dx) = dx.as_deref_mut() {
                let mut grad_cols = Buf::dirty(n * pix * patch);
                matmul_on(false, n * pix, cout, patch, &grad_pre, false, kernel, true, &mut grad_cols, false);
                for (d, c) in dx.chunks_exact_mut(in_len).zip(grad_cols.chunks_exact(pix * patch)) {
                    col2im_add(g, c, d);
                }
            }
            (gk, gb)
        })
        .collect();
    for (gk, gb) in partial {
        for (a, b) in grad_kernel.iter_mut().zip(gk) {
            *a += b;
        }
        for (a, b) in grad_bias.iter_mut().zip(gb) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::seq;



    /// col2im is the adjoint of im2col: ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩, with and without padding.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        for (h, w, cin, p) in [(5, 4, 3, 1), (6, 6, 1, 0), (3, 7, 2, 1)] {
            let g = ConvGeom { h, w, cin, cout: 1, k: 3, p, pool: 1 };
            let x = seq(g.in_len(), 4);
            let c = seq(g.pixels() * g.patch(), 5);
            let mut cols = vec![0f32; c.len()];
            im2col(&g, &x, &mut cols);
            let mut back = vec![0f32; x.len()];
            col2im_add(&g, &c, &mut back);
            let lhs: f64 = cols.iter().zip(&c).map(|(a, b)| *a as f64 * *b as f64).sum();
            let rhs: f64 = x.iter().zip(&back).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!((lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()), "{lhs} vs {rhs}");
        }
    }

}
