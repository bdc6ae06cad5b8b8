//! CPU kernels behind [`Linear`](super::layers::Linear) and [`ConvReluPool`](super::layers::ConvReluPool):
//! plain loops over row-major `f32` buffers plus one matrix-multiply routine (the `gemm` crate dfdx
//! itself uses). The layers wrap them as dfdx operations with their own backward pass, so autodiff and
//! the optimizers see them like any other op.
//!
//! Why not dfdx's ops: a dfdx matmul always computes the gradient of both operands (a third of the MLP's
//! work is the unused gradient of the input images), hands every product to both cores (at the MLP's
//! batch of 32 the thread hand-off costs more than it saves), and a convolution composed from gather,
//! reshape and max makes several passes over the activations where one suffices.

use gemm::Parallelism;
use rayon::prelude::*;

/// Runs `f` compiled for AVX2 + FMA when the CPU has them (checked once at run time), otherwise as is.
/// The crate is built for the x86-64 baseline (SSE2) so that it runs everywhere; the loops below only
/// vectorise well with AVX2's blends and wider registers.
#[inline(always)]
fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// Products with fewer multiply-adds than this run on one thread.
const PARALLEL_MIN_MACS: usize = 16 << 20;

/// `c (m×n) = [c +] op(a) · op(b)`, all row-major. `op(a)` is `a` stored `(m, k)`, or with `a_t` the
/// transpose of `a` stored `(k, m)`; likewise `op(b)` is `b` `(k, n)` or, with `b_t`, `b` stored `(n, k)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(m: usize, k: usize, n: usize, a: &[f32], a_t: bool, b: &[f32], b_t: bool, c: &mut [f32], accumulate: bool) {
    let parallel = m * k * n >= PARALLEL_MIN_MACS;
    matmul_on(parallel, m, k, n, a, a_t, b, b_t, c, accumulate)
}

/// [`matmul`] on the calling thread only (`parallel = false`) or on all of rayon's threads.
#[allow(clippy::too_many_arguments)]
fn matmul_on(parallel: bool, m: usize, k: usize, n: usize, a: &[f32], a_t: bool, b: &[f32], b_t: bool, c: &mut [f32], accumulate: bool) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "matmul: buffers smaller than the shapes");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    let (a_rs, a_cs) = if a_t { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if b_t { (1, k as isize) } else { (n as isize, 1) };
    let parallelism = if parallel {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    };
    // SAFETY: the assert above keeps every index the strides produce inside the three slices, and `c`
    // is borrowed mutably, so it does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `out[j] += Σ_i m[i, j]` for a row-major `(rows, out.len())` matrix (bias gradients).
pub(crate) fn add_column_sums(m: &[f32], out: &mut [f32]) {
    simd(#[inline(always)] || {
        let n = out.len();
        if n == 0 {
            return;
        }
        for row in m.chunks_exact(n) {
            for (o, v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
    })
}

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

/// Marks a pooled value whose maximum was not positive: ReLU made it 0 and no gradient flows.
pub(crate) const NO_GRAD: u32 = u32::MAX;

/// ReLU then max-pool of one image's convolution output `pre` `(H'·W', OUT)`: writes the pooled image
/// `(H'/POOL · W'/POOL, OUT)` and, when `arg` is given (training), for each pooled value the index in the
/// batch's pre-activations it came from (`base` + its index in `pre`; `NO_GRAD` where ReLU zeroed it).
/// ReLU and max commute, so this takes the window max and clamps it at 0; the loops over channels are
/// written as selects so that they vectorise.
#[inline(never)]
pub(crate) fn relu_max_pool(g: &ConvGeom, pre: &[f32], out: &mut [f32], mut arg: Option<&mut [u32]>, base: u32) {
    simd(#[inline(always)] || {
        let (_, wo) = g.conv_hw();
        let (hp, wp) = g.out_hw();
        let c = g.cout;
        for i in 0..hp {
            for j in 0..wp {
                let o = (i * wp + j) * c;
                let out = &mut out[o..o + c];
                let first = (i * g.pool * wo + j * g.pool) * c;
                out.copy_from_slice(&pre[first..first + c]);
                let mut arg = arg.as_deref_mut().map(|a| &mut a[o..o + c]);
                if let Some(arg) = arg.as_deref_mut() {
                    for (t, a) in arg.iter_mut().enumerate() {
                        *a = base + (first + t) as u32;
                    }
                }
                for di in 0..g.pool {
                    for dj in 0..g.pool {
                        let at = ((i * g.pool + di) * wo + j * g.pool + dj) * c;
                        let window = &pre[at..at + c];
                        match arg.as_deref_mut() {
                            Some(arg) => {
                                let at = base + at as u32;
                                let (arg, window) = (&mut arg[..c], &window[..c]);
                                for t in 0..c {
                                    let gt = window[t] > out[t];
                                    out[t] = if gt { window[t] } else { out[t] };
                                    arg[t] = if gt { at + t as u32 } else { arg[t] };
                                }
                            }
                            None => {
                                for (o, &v) in out.iter_mut().zip(window) {
                                    *o = if v > *o { v } else { *o };
                                }
                            }
                        }
                    }
                }
                match arg {
                    Some(arg) => {
                        for (v, a) in out.iter_mut().zip(arg.iter_mut()) {
                            let positive = *v > 0.0;
                            *v = if positive { *v } else { 0.0 };
                            *a = if positive { *a } else { NO_GRAD };
                        }
                    }
                    None => {
                        for v in out.iter_mut() {
                            *v = if *v > 0.0 { *v } else { 0.0 };
                        }
                    }
                }
            }
        }
    })
}

/// What the forward pass keeps for backward, per group of images (one group per thread).
pub(crate) struct Saved {
    groups: Vec<GroupSaved>,
    /// Images per group (the last group may have fewer).
    per: usize,
}

struct GroupSaved {
    /// The group's im2col matrix `(n·H'·W', K·K·IN)`.
    cols: Vec<f32>,
    /// For each pooled value, its index in the group's pre-activations `(n·H'·W', OUT)`, or `NO_GRAD`.
    arg: Vec<u32>,
}

/// Forward pass of a batch: `x` is `(B, H, W, IN)`, `kernel` `(K·K·IN, OUT)`, `bias` `(OUT)`. Returns the
/// pooled output `(B, H'/POOL, W'/POOL, OUT)` and — when `train` — what backward needs.
///
/// The batch is split into one group of images per thread; each thread runs im2col, one matrix product
/// `(n·H'·W', K·K·IN) × (K·K·IN, OUT)` and the pooling for its group alone, so the two cores meet once
/// per layer instead of inside every product. Inference goes in chunks of a few images to bound memory.
pub(crate) fn conv_relu_pool_forward(g: &ConvGeom, batch: usize, x: &[f32], kernel: &[f32], bias: &[f32], train: bool) -> (Vec<f32>, Option<Saved>) {
    let (pix, patch, cout, in_len, out_len) = (g.pixels(), g.patch(), g.cout, g.in_len(), g.out_len());
    let per = batch.div_ceil(rayon::current_num_threads().max(1)).max(1);
    let mut out = vec![0f32; batch * out_len];
    if batch == 0 || out_len == 0 {
        return (out, train.then(|| Saved { groups: Vec::new(), per }));
    }
    let chunk = if train { per } else { per.min(16) };
    let groups: Vec<GroupSaved> = out
        .par_chunks_mut(per * out_len)
        .zip(x.par_chunks(per * in_len))
        .map(|(out, x)| {
            let n = x.len() / in_len;
            let mut cols = vec![0f32; chunk.min(n) * pix * patch];
            let mut pre = vec![0f32; chunk.min(n) * pix * cout];
            let mut arg = if train { vec![NO_GRAD; n * out_len] } else { Vec::new() };
            for start in (0..n).step_by(chunk) {
                let m = chunk.min(n - start);
                let (cols, pre) = (&mut cols[..m * pix * patch], &mut pre[..m * pix * cout]);
                for (c, xi) in cols.chunks_exact_mut(pix * patch).zip(x[start * in_len..].chunks_exact(in_len)) {
                    im2col(g, xi, c);
                }
                for row in pre.chunks_exact_mut(cout) {
                    row.copy_from_slice(bias);
                }
                matmul_on(false, m * pix, patch, cout, cols, false, kernel, false, pre, true);
                for i in 0..m {
                    let o = &mut out[(start + i) * out_len..][..out_len];
                    let p = &pre[i * pix * cout..][..pix * cout];
                    let a = if train { Some(&mut arg[(start + i) * out_len..][..out_len]) } else { None };
                    relu_max_pool(g, p, o, a, ((start + i) * pix * cout) as u32);
                }
            }
            GroupSaved { cols, arg }
        })
        .collect();
    (out, train.then_some(Saved { groups, per }))
}

/// Backward pass: from the gradient of the pooled output, adds the kernel and bias gradients into
/// `grad_kernel` `(K·K·IN, OUT)` and `grad_bias`, and — when `grad_x` is given — the input gradient
/// `(B, H, W, IN)`. Each thread handles the group of images it had in forward.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_relu_pool_backward(
    g: &ConvGeom,
    saved: &Saved,
    grad_out: &[f32],
    kernel: &[f32],
    grad_kernel: &mut [f32],
    grad_bias: &mut [f32],
    grad_x: Option<&mut [f32]>,
) {
    let (pix, patch, cout, in_len, out_len) = (g.pixels(), g.patch(), g.cout, g.in_len(), g.out_len());
    let per = saved.per;
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
            // Each pooled value's gradient goes to the one position it came from (windows do not
            // overlap), nothing where ReLU was 0.
            let mut grad_pre = vec![0f32; n * pix * cout];
            simd(#[inline(always)] || {
                for (&a, &gv) in s.arg.iter().zip(gout) {
                    if a != NO_GRAD {
                        grad_pre[a as usize] = gv;
                    }
                }
            });
            let mut gk = vec![0f32; patch * cout];
            matmul_on(false, patch, n * pix, cout, &s.cols, true, &grad_pre, false, &mut gk, false);
            let mut gb = vec![0f32; cout];
            add_column_sums(&grad_pre, &mut gb);
            if let Some(dx) = dx.as_deref_mut() {
                let mut grad_cols = vec![0f32; n * pix * patch];
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
