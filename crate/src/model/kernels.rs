//! CPU kernels behind [`Linear`](super::layers::Linear) and [`ConvReluPool`](super::layers::ConvReluPool):
//! plain loops over row-major `f32` buffers plus one matrix-multiply routine (the `gemm` crate, a newer
//! version than dfdx's, with AVX-512 kernels), im2col and Winograd F(2×2, 3×3) convolutions, and fused
//! ReLU + max-pooling. The layers wrap them as dfdx operations with their own backward pass, so autodiff
//! and the optimizers see them like any other op. `README.md` ("Performance") measures each step.
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

/// A buffer of `f32` borrowed from a process-wide pool and returned to it when dropped. The kernels
/// need several megabytes of scratch per batch; fresh allocations that large come straight from the
/// kernel, zeroed a page at a time on first touch, which cost a fifth of a CNN epoch.
pub(crate) struct Buf(Vec<f32>);

static POOL: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());

impl Buf {
    /// `len` values, **not zeroed**: whatever the previous user left (callers overwrite all of it).
    pub fn dirty(len: usize) -> Buf {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest pooled buffer that is big enough, else a new one.
        let best = (0..pool.len()).filter(|&i| pool[i].capacity() >= len).min_by_key(|&i| pool[i].capacity());
        let mut v = best.map(|i| pool.swap_remove(i)).unwrap_or_default();
        drop(pool);
        if v.len() >= len {
            v.truncate(len);
        } else {
            v.resize(len, 0.0);
        }
        Buf(v)
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 32 {
            pool.push(std::mem::take(&mut self.0));
        }
    }
}

impl std::ops::Deref for Buf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
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

/// Bias, ReLU and max-pool of one image's convolution output `pre` `(H'·W', OUT)` (without bias) into the
/// pooled image `(H'/POOL · W'/POOL, OUT)`. The bias is the same across a window and ReLU commutes with
/// max, so this takes the window max, adds the bias and clamps at 0: one pass, and the convolution's
/// matrix product writes `pre` without reading it.
#[inline(never)]
pub(crate) fn relu_max_pool(g: &ConvGeom, pre: &[f32], bias: &[f32], out: &mut [f32]) {
    simd(#[inline(always)] || {
        for_each_window(g, #[inline(always)] |cell, window| {
            let out = &mut out[cell..][..g.cout];
            // Eight channels at a time in registers, then one at a time for the rest.
            let full = g.cout / 8 * 8;
            for cb in (0..full).step_by(8) {
                pool_forward::<8>(pre, window, cb, &bias[cb..], &mut out[cb..]);
            }
            for cb in full..g.cout {
                pool_forward::<1>(pre, window, cb, &bias[cb..], &mut out[cb..]);
            }
        })
    })
}

/// Backward of [`relu_max_pool`] for one image: writes the gradient of every pre-activation into
/// `grad_pre` `(H'·W', OUT)`. Each pooled value's gradient goes to the first position of its window
/// holding the maximum (as a forward that kept the first maximum would say), and nowhere when the
/// maximum plus bias was not positive (ReLU gave 0); every other position gets 0. Recomputing the
/// maximum here keeps the forward pass a plain max.
#[inline(never)]
pub(crate) fn relu_max_pool_backward(g: &ConvGeom, pre: &[f32], bias: &[f32], grad_out: &[f32], grad_pre: &mut [f32]) {
    simd(#[inline(always)] || {
        let (ho, wo) = g.conv_hw();
        let (hp, wp) = g.out_hw();
        if hp * g.pool < ho || wp * g.pool < wo {
            grad_pre.fill(0.0); // rows or columns no window covers
        }
        for_each_window(g, #[inline(always)] |cell, window| {
            let go = &grad_out[cell..][..g.cout];
            let full = g.cout / 8 * 8;
            for cb in (0..full).step_by(8) {
                pool_backward::<8>(pre, window, cb, &bias[cb..], &go[cb..], grad_pre);
            }
            for cb in full..g.cout {
                pool_backward::<1>(pre, window, cb, &bias[cb..], &go[cb..], grad_pre);
            }
        })
    })
}

/// Calls `f(offset of the pooled cell in the output, offsets of its POOL×POOL positions in pre)`.
#[inline(always)]
fn for_each_window(g: &ConvGeom, mut f: impl FnMut(usize, &[usize])) {
    let (_, wo) = g.conv_hw();
    let (hp, wp) = g.out_hw();
    let mut window = vec![0usize; g.pool * g.pool];
    for i in 0..hp {
        for j in 0..wp {
            for (w, at) in window.iter_mut().enumerate() {
                *at = ((i * g.pool + w / g.pool) * wo + j * g.pool + w % g.pool) * g.cout;
            }
            f((i * wp + j) * g.cout, &window);
        }
    }
}

/// `L` channels from `cb` of one pooled cell: `out = max(max over the window + bias, 0)`.
#[inline(always)]
fn pool_forward<const L: usize>(pre: &[f32], window: &[usize], cb: usize, bias: &[f32], out: &mut [f32]) {
    let mut m = [f32::NEG_INFINITY; L];
    for &at in window {
        let v: &[f32; L] = pre[at + cb..][..L].try_into().unwrap();
        for t in 0..L {
            m[t] = if v[t] > m[t] { v[t] } else { m[t] };
        }
    }
    for t in 0..L {
        let v = m[t] + bias[t];
        out[t] = if v > 0.0 { v } else { 0.0 };
    }
}

/// `L` channels from `cb` of one pooled cell: hands `grad_out` to the first window position holding
/// the maximum (none when ReLU gave 0) and writes 0 to the others.
#[inline(always)]
fn pool_backward<const L: usize>(pre: &[f32], window: &[usize], cb: usize, bias: &[f32], grad_out: &[f32], grad_pre: &mut [f32]) {
    let mut m = [f32::NEG_INFINITY; L];
    for &at in window {
        let v: &[f32; L] = pre[at + cb..][..L].try_into().unwrap();
        for t in 0..L {
            m[t] = if v[t] > m[t] { v[t] } else { m[t] };
        }
    }
    // The gradient not yet handed to a position.
    let mut left = [0f32; L];
    for t in 0..L {
        left[t] = if m[t] + bias[t] > 0.0 { grad_out[t] } else { 0.0 };
    }
    for &at in window {
        let v: &[f32; L] = pre[at + cb..][..L].try_into().unwrap();
        let gp: &mut [f32; L] = (&mut grad_pre[at + cb..][..L]).try_into().unwrap();
        for t in 0..L {
            let hit = v[t] == m[t];
            gp[t] = if hit { left[t] } else { 0.0 };
            left[t] = if hit { 0.0 } else { left[t] };
        }
    }
}

/// Winograd F(2×2, 3×3) (Lavin & Gray, 2016): a 3×3 convolution with one pixel of zero padding computed
/// per 2×2 block of output pixels from the 4×4 input tile around it, with 16 multiplications per tile
/// and channel pair instead of 36. Inputs and kernel are transformed (`Bᵀ d B`, `G g Gᵀ`), the
/// multiplications become 16 independent matrix products over (tiles × IN) · (IN × OUT), and `Aᵀ m A`
/// turns their results back into pixels. Used for the CNN's second convolution forward and for its
/// input gradient (itself a 3×3 convolution, with the kernel turned by 180° and IN/OUT swapped).
pub(crate) fn winograd_kernel(kernel: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    const G: [[f32; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
    let mut u = vec![0f32; 16 * cin * cout];
    for ci in 0..cin {
        for co in 0..cout {
            let g = |a: usize, b: usize| kernel[((a * 3 + b) * cin + ci) * cout + co];
            for r in 0..4 {
                for c in 0..4 {
                    let mut acc = 0f32;
                    for a in 0..3 {
                        for b in 0..3 {
                            acc += G[r][a] * g(a, b) * G[c][b];
                        }
                    }
                    u[((r * 4 + c) * cin + ci) * cout + co] = acc;
                }
            }
        }
    }
    u
}

/// The kernel of the input gradient: `(3, 3, IN, OUT)` → `(3, 3, OUT, IN)`, turned by 180°.
pub(crate) fn flip_kernel(kernel: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    let mut f = vec![0f32; 9 * cin * cout];
    for a in 0..3 {
        for b in 0..3 {
            for ci in 0..cin {
                for co in 0..cout {
                    f[(((2 - a) * 3 + (2 - b)) * cout + co) * cin + ci] = kernel[((a * 3 + b) * cin + ci) * cout + co];
                }
            }
        }
    }
    f
}

/// `out (m, H, W, OUT) [+]= conv3×3(x (m, H, W, IN))` with one pixel of zero padding, by Winograd
/// F(2×2, 3×3); `u` comes from [`winograd_kernel`]. Runs on the calling thread.
#[allow(clippy::too_many_arguments)]
pub(crate) fn winograd_conv(h: usize, w: usize, cin: usize, cout: usize, m: usize, x: &[f32], u: &[f32], out: &mut [f32], accumulate: bool) {
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    let tiles = m * th * tw;
    if tiles == 0 || cout == 0 {
        return;
    }
    let mut v = Buf::dirty(16 * tiles * cin);
    let mut mm = Buf::dirty(16 * tiles * cout);
    let zero = vec![0f32; cin];
    simd(#[inline(always)] || {
        let mut planes = v.chunks_exact_mut(tiles * cin);
        let mut planes: [&mut [f32]; 16] = std::array::from_fn(|_| planes.next().unwrap());
        for img in 0..m {
            let xi = &x[img * h * w * cin..][..h * w * cin];
            for ty in 0..th {
                for tx in 0..tw {
                    let t = (img * th + ty) * tw + tx;
                    let px = |r: usize, c: usize| -> &[f32] {
                        let (y, x) = ((2 * ty + r).wrapping_sub(1), (2 * tx + c).wrapping_sub(1));
                        if y < h && x < w {
                            &xi[(y * w + x) * cin..][..cin]
                        } else {
                            &zero
                        }
                    };
                    let mut d: [[&[f32]; 4]; 4] = [[&zero[..]; 4]; 4];
                    for (r, row) in d.iter_mut().enumerate() {
                        for (c, v) in row.iter_mut().enumerate() {
                            *v = px(r, c);
                        }
                    }
                    let full = cin / 8 * 8;
                    for cb in (0..full).step_by(8) {
                        winograd_in::<8>(&d, cb, &mut planes, t * cin + cb);
                    }
                    for cb in full..cin {
                        winograd_in::<1>(&d, cb, &mut planes, t * cin + cb);
                    }
                }
            }
        }
    });
    for xi in 0..16 {
        let (a, b) = (&v[xi * tiles * cin..][..tiles * cin], &u[xi * cin * cout..][..cin * cout]);
        matmul_on(false, tiles, cin, cout, a, false, b, false, &mut mm[xi * tiles * cout..][..tiles * cout], false);
    }
    simd(#[inline(always)] || {
        let mut planes: [&[f32]; 16] = [&[]; 16];
        for (k, p) in planes.iter_mut().enumerate() {
            *p = &mm[k * tiles * cout..][..tiles * cout];
        }
        for img in 0..m {
            let oi = &mut out[img * h * w * cout..][..h * w * cout];
            for ty in 0..th {
                for tx in 0..tw {
                    let t = (img * th + ty) * tw + tx;
                    let full = cout / 8 * 8;
                    for cb in (0..full).step_by(8) {
                        winograd_out::<8>(&planes, t * cout + cb, cb, oi, (ty, tx), (h, w, cout), accumulate);
                    }
                    for cb in full..cout {
                        winograd_out::<1>(&planes, t * cout + cb, cb, oi, (ty, tx), (h, w, cout), accumulate);
                    }
                }
            }
        }
    });
}

/// `L` channels from `cb` of one input tile: `Bᵀ d B`, written at `at` of the 16 planes.
/// (Plain loops over fixed-size arrays: they stay in registers and vectorise.)
#[inline(always)]
fn winograd_in<const L: usize>(src: &[[&[f32]; 4]; 4], cb: usize, planes: &mut [&mut [f32]; 16], at: usize) {
    let mut d = [[[0f32; L]; 4]; 4];
    for r in 0..4 {
        for c in 0..4 {
            d[r][c].copy_from_slice(&src[r][c][cb..cb + L]);
        }
    }
    // Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]] on the rows, then B on the columns.
    let mut t = [[[0f32; L]; 4]; 4];
    for c in 0..4 {
        for i in 0..L {
            t[0][c][i] = d[0][c][i] - d[2][c][i];
            t[1][c][i] = d[1][c][i] + d[2][c][i];
            t[2][c][i] = d[2][c][i] - d[1][c][i];
            t[3][c][i] = d[1][c][i] - d[3][c][i];
        }
    }
    for (r, t) in t.iter().enumerate() {
        let mut v = [[0f32; L]; 4];
        for i in 0..L {
            v[0][i] = t[0][i] - t[2][i];
            v[1][i] = t[1][i] + t[2][i];
            v[2][i] = t[2][i] - t[1][i];
            v[3][i] = t[1][i] - t[3][i];
        }
        for (c, v) in v.iter().enumerate() {
            planes[r * 4 + c][at..at + L].copy_from_slice(v);
        }
    }
}

/// `L` channels from `cb` of one output tile (at `at` of the 16 planes): `Aᵀ m A` with
/// `Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]`, written (or added) to the tile's pixels inside the image.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn winograd_out<const L: usize>(planes: &[&[f32]; 16], at: usize, cb: usize, out: &mut [f32], (ty, tx): (usize, usize), (h, w, cout): (usize, usize, usize), accumulate: bool) {
    let mut m = [[0f32; L]; 16];
    for (k, m) in m.iter_mut().enumerate() {
        m.copy_from_slice(&planes[k][at..at + L]);
    }
    let (mut s0, mut s1) = ([[0f32; L]; 4], [[0f32; L]; 4]);
    for c in 0..4 {
        for i in 0..L {
            s0[c][i] = m[c][i] + m[4 + c][i] + m[8 + c][i];
            s1[c][i] = m[4 + c][i] - m[8 + c][i] - m[12 + c][i];
        }
    }
    let mut y = [[[0f32; L]; 2]; 2];
    for (a, s) in [s0, s1].iter().enumerate() {
        for i in 0..L {
            y[a][0][i] = s[0][i] + s[1][i] + s[2][i];
            y[a][1][i] = s[1][i] - s[2][i] - s[3][i];
        }
    }
    for (a, row) in y.iter().enumerate() {
        for (b, v) in row.iter().enumerate() {
            let (yy, xx) = (2 * ty + a, 2 * tx + b);
            if yy >= h || xx >= w {
                continue;
            }
            let dst = &mut out[(yy * w + xx) * cout + cb..][..L];
            for i in 0..L {
                dst[i] = if accumulate { dst[i] + v[i] } else { v[i] };
            }
        }
    }
}

/// Winograd F(2×2, 3×3) is used for 3×3 convolutions with one pixel of padding and several input
/// channels (with one, as in the first layer, the matrix products would be too thin to gain).
fn winograd_applies(g: &ConvGeom) -> bool {
    g.k == 3 && g.p == 1 && g.cin >= 2
}

/// What the forward pass keeps for backward, per group of images (one group per thread).
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
/// `(B, H, W, IN)`. Each thread handles the group of images it had in forward.
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

    fn seq(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::data::batch_rng(seed);
        (0..n).map(|_| (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// Every transpose combination, overwrite and accumulate, on one thread and on all, against the
    /// definition.
    #[test]
    fn matmul_matches_the_definition() {
        for (m, k, n) in [(5, 7, 3), (1, 1, 1), (64, 300, 70), (300, 300, 300)] {
            for (a_t, b_t, acc) in [(false, false, false), (true, false, true), (false, true, false), (true, true, true)] {
                let (a, b, c0) = (seq(m * k, 1), seq(k * n, 2), seq(m * n, 3));
                let at = |i: usize, p: usize| if a_t { a[p * m + i] } else { a[i * k + p] };
                let bt = |p: usize, j: usize| if b_t { b[j * k + p] } else { b[p * n + j] };
                let mut c = c0.clone();
                matmul(m, k, n, &a, a_t, &b, b_t, &mut c, acc);
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k).map(|p| at(i, p) as f64 * bt(p, j) as f64).sum::<f64>()
                            + if acc { c0[i * n + j] as f64 } else { 0.0 };
                        let got = c[i * n + j] as f64;
                        assert!((got - want).abs() < 1e-3 * (1.0 + want.abs()), "{m}×{k}×{n} {a_t} {b_t}: {got} vs {want}");
                    }
                }
            }
        }
        let mut c = vec![1.0; 6];
        matmul(2, 0, 3, &[], false, &[], false, &mut c, false);
        assert_eq!(c, vec![0.0; 6], "k = 0 gives zeros");
    }

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

    /// Pooled buffers come back with the asked length, whatever was pooled before.
    #[test]
    fn pooled_buffers_have_the_asked_length() {
        drop(Buf::dirty(1000));
        assert_eq!(Buf::dirty(10).len(), 10);
        assert_eq!(Buf::dirty(5000).len(), 5000);
    }
}
