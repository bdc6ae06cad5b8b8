//! Direct 3×3 convolution + ReLU + max-pool of images with one channel (the CNN's first layer),
//! forward and backward, without the intermediate images; and the same convolution alone (the
//! `Conv2d` layer over one channel, [`forward_plain`]).
//!
//! With one input channel a pixel's convolution is 9 multiply-adds per output channel: as a matrix
//! product (im2col) it is too thin to gain, and the convolution's output — 32 channels of 28×28, 32×
//! the input — costs more to write, pool and read back than to compute. Here each pooled value is
//! computed from its window in registers: the convolution at the window's positions, their maximum,
//! the bias and ReLU. Training keeps, per pooled value, which position held the maximum
//! ([`NONE`] where ReLU gave 0), so backward hands the gradient to that position without the
//! pre-activations: one byte per pooled value instead of four floats.

use super::conv::{ConvGeom, ConvGrads};
use super::simd;

/// The window position of a pooled value whose ReLU gave 0 (no gradient).
pub(crate) const NONE: u8 = u8::MAX;

/// The kernel size the direct path is written for.
pub(crate) const K: usize = 3;

/// Whether [`forward`] and [`backward`] handle `g`: one input channel, a 3×3 kernel, a pooling window
/// of at most 15 positions (they fit in a byte next to [`NONE`]).
pub(crate) fn applies(g: &ConvGeom) -> bool {
    g.cin == 1 && g.k == K && g.s == 1 && g.pool * g.pool < 16
}

/// Height and width of an image with its padding.
fn padded_hw(g: &ConvGeom) -> (usize, usize) {
    (g.h + 2 * g.p, g.w + 2 * g.p)
}

/// Values per padded image.
pub(crate) fn padded_len(g: &ConvGeom) -> usize {
    let (hp, wp) = padded_hw(g);
    hp * wp
}

/// Copies the images `x (n, H, W)` into `padded (n, H + 2P, W + 2P)` with a border of zeros.
pub(crate) fn pad(g: &ConvGeom, x: &[f32], padded: &mut [f32]) {
    let (hp, wp) = padded_hw(g);
    for (dst, src) in padded.chunks_exact_mut(hp * wp).zip(x.chunks_exact(g.h * g.w)) {
        dst.fill(0.0);
        for r in 0..g.h {
            dst[(r + g.p) * wp + g.p..][..g.w].copy_from_slice(&src[r * g.w..][..g.w]);
        }
    }
}

/// Forward pass of the padded images `padded` (from [`pad`]); `kernel` is `(3, 3, OUT)`. Writes the
/// pooled images `out (n, H'/POOL, W'/POOL, OUT)` and, when given, `sel` (same shape): the window
/// position (row-major, the first on ties) of each pooled maximum, or [`NONE`].
pub(crate) fn forward(
    g: &ConvGeom,
    padded: &[f32],
    kernel: &[f32],
    bias: &[f32],
    out: &mut [f32],
    mut sel: Option<&mut [u8]>,
) {
    simd(
        #[inline(always)]
        || {
            let cout = g.cout;
            let full = cout / 16 * 16;
            for (img, xp) in padded.chunks_exact(padded_len(g)).enumerate() {
                let o = &mut out[img * g.out_len()..][..g.out_len()];
                let mut s = sel.as_deref_mut().map(|s| &mut s[img * g.out_len()..][..g.out_len()]);
                for cb in (0..full).step_by(16) {
                    forward_block::<16>(g, xp, kernel, bias, cb, o, s.as_deref_mut());
                }
                for cb in full..cout {
                    forward_block::<1>(g, xp, kernel, bias, cb, o, s.as_deref_mut());
                }
            }
        },
    )
}

/// `L` output channels from `cb` of one image. (Fixed-size arrays the compiler keeps in registers.)
#[inline(always)]
fn forward_block<const L: usize>(
    g: &ConvGeom,
    xp: &[f32],
    kernel: &[f32],
    bias: &[f32],
    cb: usize,
    out: &mut [f32],
    mut sel: Option<&mut [u8]>,
) {
    let (_, wp) = padded_hw(g);
    let (hq, wq) = g.out_hw();
    let kb: [[f32; L]; K * K] = std::array::from_fn(|ab| kernel[ab * g.cout + cb..][..L].try_into().unwrap());
    let b: [f32; L] = bias[cb..cb + L].try_into().unwrap();
    for i in 0..hq {
        for j in 0..wq {
            let (mut best, mut arg) = ([f32::NEG_INFINITY; L], [0u8; L]);
            for pos in 0..g.pool * g.pool {
                let (y, x) = (i * g.pool + pos / g.pool, j * g.pool + pos % g.pool);
                let mut acc = [0f32; L];
                for a in 0..K {
                    let row = &xp[(y + a) * wp + x..][..K];
                    for (bcol, &v) in row.iter().enumerate() {
                        for t in 0..L {
                            acc[t] += v * kb[a * K + bcol][t];
                        }
                    }
                }
                for t in 0..L {
                    let better = acc[t] > best[t];
                    best[t] = if better { acc[t] } else { best[t] };
                    arg[t] = if better { pos as u8 } else { arg[t] };
                }
            }
            let at = (i * wq + j) * g.cout + cb;
            let o: &mut [f32; L] = (&mut out[at..at + L]).try_into().unwrap();
            for t in 0..L {
                let v = best[t] + b[t];
                o[t] = if v > 0.0 { v } else { 0.0 };
            }
            if let Some(s) = sel.as_deref_mut() {
                let s: &mut [u8; L] = (&mut s[at..at + L]).try_into().unwrap();
                for t in 0..L {
                    s[t] = if best[t] + b[t] > 0.0 { arg[t] } else { NONE };
                }
            }
        }
    }
}

/// Backward pass: from the gradient of the pooled output `grad_out`, the padded images and the
/// positions `sel` of the forward pass, adds the kernel gradient `(3, 3, OUT)` and the bias gradient,
/// and — when `grad_padded` is given — adds the gradient of the padded images to it. The sums run
/// image after image, pixel after pixel, whatever the number of threads.
///
/// The compiler leaves the choice of each channel's gradient by its byte-sized position scalar (the
/// pass took 2–7× as long as the forward pass in every form tried), so on CPUs with AVX-512 blocks of
/// 16 channels are written with its intrinsics; the portable loop handles the rest.
pub(crate) fn backward(
    g: &ConvGeom,
    (padded, sel): (&[f32], &[u8]),
    grad_out: &[f32],
    kernel: &[f32],
    grads: ConvGrads,
) {
    let ConvGrads { kernel: grad_kernel, bias: grad_bias, input: grad_padded } = grads;
    // Channels below `from` are done with AVX-512.
    #[cfg(target_arch = "x86_64")]
    let from = if std::is_x86_feature_detected!("avx512f") {
        for cb in (0..g.cout / 16 * 16).step_by(16) {
            // SAFETY: the CPU has AVX-512F; the function checks its slices' lengths.
            unsafe { avx512::backward_block(g, padded, sel, grad_out, cb, grad_kernel, grad_bias) };
        }
        g.cout / 16 * 16
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let from = 0;
    backward_portable(g, padded, sel, grad_out, from, grad_kernel, grad_bias);
    if let Some(gx) = grad_padded {
        input_gradient(g, sel, grad_out, kernel, gx);
    }
}

/// [`backward`]'s kernel and bias gradients of channels `from..OUT`, in loops over a pixel's channels.
fn backward_portable(
    g: &ConvGeom,
    padded: &[f32],
    sel: &[u8],
    grad_out: &[f32],
    from: usize,
    grad_kernel: &mut [f32],
    grad_bias: &mut [f32],
) {
    let (cout, (_, wp), (hq, wq)) = (g.cout, padded_hw(g), g.out_hw());
    if from == cout {
        return;
    }
    let mut gp = vec![0f32; cout - from];
    simd(
        #[inline(always)]
        || {
            for (img, xp) in padded.chunks_exact(padded_len(g)).enumerate() {
                for i in 0..hq {
                    for j in 0..wq {
                        let at = img * g.out_len() + (i * wq + j) * cout;
                        let (s, go) = (&sel[at + from..at + cout], &grad_out[at + from..at + cout]);
                        for ((b, s), go) in grad_bias[from..].iter_mut().zip(s).zip(go) {
                            *b += if *s != NONE { *go } else { 0.0 };
                        }
                        for pos in 0..g.pool * g.pool {
                            for ((d, s), go) in gp.iter_mut().zip(s).zip(go) {
                                *d = if *s as usize == pos { *go } else { 0.0 };
                            }
                            let (y, x) = (i * g.pool + pos / g.pool, j * g.pool + pos % g.pool);
                            for ab in 0..K * K {
                                let v = xp[(y + ab / K) * wp + x + ab % K];
                                for (k, d) in grad_kernel[ab * cout + from..][..cout - from].iter_mut().zip(&gp) {
                                    *k += v * d;
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{padded_hw, padded_len, ConvGeom, K, NONE};

    /// [`super::backward`]'s kernel and bias gradients of channels `cb..cb + 16`, summed in registers.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn backward_block(
        g: &ConvGeom,
        padded: &[f32],
        sel: &[u8],
        grad_out: &[f32],
        cb: usize,
        grad_kernel: &mut [f32],
        grad_bias: &mut [f32],
    ) {
        let (cout, (_, wp), (hq, wq)) = (g.cout, padded_hw(g), g.out_hw());
        let plen = padded_len(g);
        let n = padded.len() / plen;
        assert!(cb + 16 <= cout && sel.len() >= n * g.out_len() && grad_out.len() >= n * g.out_len());
        assert!(grad_kernel.len() >= K * K * cout && grad_bias.len() >= cout);
        let mut gk = [_mm512_setzero_ps(); K * K];
        let mut gb = _mm512_setzero_ps();
        let none = _mm512_set1_epi32(NONE as i32);
        for (img, xp) in padded.chunks_exact(plen).enumerate() {
            for i in 0..hq {
                for j in 0..wq {
                    let at = img * g.out_len() + (i * wq + j) * cout + cb;
                    // SAFETY (loads): `at + 16 <= n · out_len` by the asserts.
                    let s = _mm512_cvtepu8_epi32(_mm_loadu_si128(sel.as_ptr().add(at) as *const __m128i));
                    let go = _mm512_loadu_ps(grad_out.as_ptr().add(at));
                    gb = _mm512_add_ps(gb, _mm512_maskz_mov_ps(_mm512_cmpneq_epi32_mask(s, none), go));
                    for pos in 0..g.pool * g.pool {
                        let gp = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(s, _mm512_set1_epi32(pos as i32)), go);
                        let (y, x) = (i * g.pool + pos / g.pool, j * g.pool + pos % g.pool);
                        for (ab, acc) in gk.iter_mut().enumerate() {
                            let v = _mm512_set1_ps(xp[(y + ab / K) * wp + x + ab % K]);
                            *acc = _mm512_fmadd_ps(v, gp, *acc);
                        }
                    }
                }
            }
        }
        for (ab, acc) in gk.iter().enumerate() {
            let dst = grad_kernel.as_mut_ptr().add(ab * cout + cb);
            _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), *acc));
        }
        let dst = grad_bias.as_mut_ptr().add(cb);
        _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), gb));
    }
}

/// Adds the gradient of the padded images: each pooled value's gradient, through the kernel, onto the
/// window of the position that held its maximum. (Only when a one-channel convolution is not the
/// network's first layer.)
fn input_gradient(g: &ConvGeom, sel: &[u8], grad_out: &[f32], kernel: &[f32], grad_padded: &mut [f32]) {
    let (_, wp) = padded_hw(g);
    let (hq, wq) = g.out_hw();
    for (img, gx) in grad_padded.chunks_exact_mut(padded_len(g)).enumerate() {
        for i in 0..hq {
            for j in 0..wq {
                let at = img * g.out_len() + (i * wq + j) * g.cout;
                for (c, (&s, &go)) in sel[at..at + g.cout].iter().zip(&grad_out[at..at + g.cout]).enumerate() {
                    if s == NONE {
                        continue;
                    }
                    let pos = s as usize;
                    let (y, x) = (i * g.pool + pos / g.pool, j * g.pool + pos % g.pool);
                    for ab in 0..K * K {
                        gx[(y + ab / K) * wp + x + ab % K] += kernel[ab * g.cout + c] * go;
                    }
                }
            }
        }
    }
}

/// Adds the gradient of the padded images to the images' gradient `grad_x (n, H, W)`.
pub(crate) fn unpad_add(g: &ConvGeom, grad_padded: &[f32], grad_x: &mut [f32]) {
    let (_, wp) = padded_hw(g);
    for (dst, src) in grad_x.chunks_exact_mut(g.h * g.w).zip(grad_padded.chunks_exact(padded_len(g))) {
        for r in 0..g.h {
            for (d, s) in dst[r * g.w..][..g.w].iter_mut().zip(&src[(r + g.p) * wp + g.p..][..g.w]) {
                *d += s;
            }
        }
    }
}

/// The convolution alone (`g.pool` 1) of the padded images: `out (n, H', W', OUT)` with the bias
/// added, each value's 9 products summed in registers — the im2col rows of one channel (9 values)
/// make a product too thin to gain, as for the fused layer.
pub(crate) fn forward_plain(g: &ConvGeom, padded: &[f32], kernel: &[f32], bias: &[f32], out: &mut [f32]) {
    simd(
        #[inline(always)]
        || {
            let (cout, plen, olen) = (g.cout, padded_len(g), g.pixels() * g.cout);
            let full = cout / 16 * 16;
            for (xp, o) in padded.chunks_exact(plen).zip(out.chunks_exact_mut(olen)) {
                for cb in (0..full).step_by(16) {
                    plain_block::<16>(g, xp, kernel, bias, cb, o);
                }
                for cb in full..cout {
                    plain_block::<1>(g, xp, kernel, bias, cb, o);
                }
            }
        },
    )
}

/// `L` output channels from `cb` of one image's plain convolution.
#[inline(always)]
fn plain_block<const L: usize>(g: &ConvGeom, xp: &[f32], kernel: &[f32], bias: &[f32], cb: usize, out: &mut [f32]) {
    let (_, wp) = padded_hw(g);
    let (ho, wo) = g.conv_hw();
    let kb: [[f32; L]; K * K] = std::array::from_fn(|ab| kernel[ab * g.cout + cb..][..L].try_into().unwrap());
    let b: [f32; L] = bias[cb..cb + L].try_into().unwrap();
    for y in 0..ho {
        for x in 0..wo {
            let mut acc = b;
            for a in 0..K {
                let row = &xp[(y + a) * wp + x..][..K];
                for (bcol, &v) in row.iter().enumerate() {
                    for t in 0..L {
                        acc[t] += v * kb[a * K + bcol][t];
                    }
                }
            }
            let at = (y * wo + x) * g.cout + cb;
            out[at..at + L].copy_from_slice(&acc);
        }
    }
}

/// Backward pass of [`forward_plain`]: from the output gradient `grad_out (n, H', W', OUT)`, adds the
/// kernel gradient `(3, 3, OUT)` and the bias gradient (the input gradient, when a one-channel
/// convolution is not the first layer, is im2col's: a matrix product). The sums run image after
/// image, pixel after pixel, whatever the number of threads.
pub(crate) fn backward_plain(
    g: &ConvGeom,
    padded: &[f32],
    grad_out: &[f32],
    grad_kernel: &mut [f32],
    grad_bias: &mut [f32],
) {
    simd(
        #[inline(always)]
        || {
            let full = g.cout / 16 * 16;
            for cb in (0..full).step_by(16) {
                plain_backward_block::<16>(g, padded, grad_out, cb, grad_kernel, grad_bias);
            }
            for cb in full..g.cout {
                plain_backward_block::<1>(g, padded, grad_out, cb, grad_kernel, grad_bias);
            }
        },
    )
}

/// [`backward_plain`]'s kernel and bias gradients of `L` channels from `cb`, summed in registers.
#[inline(always)]
fn plain_backward_block<const L: usize>(
    g: &ConvGeom,
    padded: &[f32],
    grad_out: &[f32],
    cb: usize,
    grad_kernel: &mut [f32],
    grad_bias: &mut [f32],
) {
    let (_, wp) = padded_hw(g);
    let (ho, wo) = g.conv_hw();
    let olen = ho * wo * g.cout;
    let mut gk = [[0f32; L]; K * K];
    let mut gb = [0f32; L];
    for (xp, go) in padded.chunks_exact(padded_len(g)).zip(grad_out.chunks_exact(olen)) {
        for y in 0..ho {
            for x in 0..wo {
                let d: [f32; L] = go[(y * wo + x) * g.cout + cb..][..L].try_into().unwrap();
                for t in 0..L {
                    gb[t] += d[t];
                }
                for (ab, acc) in gk.iter_mut().enumerate() {
                    let v = xp[(y + ab / K) * wp + x + ab % K];
                    for t in 0..L {
                        acc[t] += v * d[t];
                    }
                }
            }
        }
    }
    for (ab, acc) in gk.iter().enumerate() {
        for (k, a) in grad_kernel[ab * g.cout + cb..][..L].iter_mut().zip(acc) {
            *k += a;
        }
    }
    for (b, a) in grad_bias[cb..cb + L].iter_mut().zip(&gb) {
        *b += a;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq;

    /// The portable backward over all channels gives the gradients [`backward`] gives (with AVX-512,
    /// where the CPU has it, for blocks of 16): on such a CPU the portable loop otherwise only ever
    /// sees the leftover channels.
    #[test]
    fn portable_backward_matches_backward() {
        let g = ConvGeom { h: 9, w: 10, cin: 1, cout: 35, k: 3, p: 1, s: 1, pool: 2 };
        let n = 3;
        let mut padded = vec![0f32; n * padded_len(&g)];
        pad(&g, &seq(n * g.h * g.w, 1), &mut padded);
        let (kernel, bias) = (seq(9 * g.cout, 2), seq(g.cout, 3));
        let (mut out, mut sel) = (vec![0f32; n * g.out_len()], vec![0u8; n * g.out_len()]);
        forward(&g, &padded, &kernel, &bias, &mut out, Some(&mut sel));
        assert!(sel.contains(&NONE) && sel.contains(&3), "both ReLU outcomes and all positions occur");
        let grad_out = seq(out.len(), 4);
        let (mut gk1, mut gb1) = (vec![0.5f32; kernel.len()], vec![0.5f32; g.cout]);
        backward(&g, (&padded, &sel), &grad_out, &kernel, ConvGrads { kernel: &mut gk1, bias: &mut gb1, input: None });
        let (mut gk2, mut gb2) = (vec![0.5f32; kernel.len()], vec![0.5f32; g.cout]);
        backward_portable(&g, &padded, &sel, &grad_out, 0, &mut gk2, &mut gb2);
        for (a, b) in gk1.iter().zip(&gk2).chain(gb1.iter().zip(&gb2)) {
            assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}
