//! Element-wise kernels: ReLU and dropout.

use super::activation::pieces;
use super::simd;

/// `x = max(x, 0)` in place (large tensors in pieces over the cores).
pub fn relu(x: &mut [f32]) {
    pieces(x, |_, x| {
        simd(
            #[inline(always)]
            || {
                for v in x.iter_mut() {
                    *v = v.max(0.0);
                }
            },
        )
    })
}

/// `x = max(x, 0)` in place, and `mask[i] = 1` where `x[i]` was positive (else 0).
pub fn relu_with_mask(x: &mut [f32], mask: &mut [u8]) {
    use rayon::prelude::*;
    let one = |x: &mut [f32], m: &mut [u8]| {
        simd(
            #[inline(always)]
            || {
                for (v, m) in x.iter_mut().zip(m.iter_mut()) {
                    let positive = *v > 0.0;
                    *m = positive as u8;
                    *v = if positive { *v } else { 0.0 };
                }
            },
        )
    };
    const PIECE: usize = 1 << 15;
    if x.len() < 2 * PIECE {
        one(x, mask);
    } else {
        x.par_chunks_mut(PIECE).zip(mask.par_chunks_mut(PIECE)).for_each(|(x, m)| one(x, m));
    }
}

/// `grad_in += grad_out` where `mask` (from [`relu_with_mask`]) says the input was positive.
pub fn relu_backward_mask(mask: &[u8], grad_out: &[f32], grad_in: &mut [f32]) {
    pieces(grad_in, |at, gi| {
        let (go, m) = (&grad_out[at..][..gi.len()], &mask[at..][..gi.len()]);
        simd(
            #[inline(always)]
            || {
                for ((gi, &go), &m) in gi.iter_mut().zip(go).zip(m) {
                    *gi += if m != 0 { go } else { 0.0 };
                }
            },
        )
    })
}

/// Inverted-dropout factors for `n` values: `0` with probability `p`, else `1 / (1 - p)`, drawn from
/// a SplitMix64 stream seeded with `seed`.
pub fn dropout_mask(n: usize, p: f64, seed: u64) -> Vec<f32> {
    let keep = 1.0 / (1.0 - p) as f32;
    // Keep when the top 53 bits, as a number in [0, 1), are at least p.
    let threshold = (p * (1u64 << 53) as f64) as u64;
    let mut rng = crate::rng::SplitMix64(seed);
    (0..n).map(|_| if rng.next_u64() >> 11 >= threshold { keep } else { 0.0 }).collect()
}

/// `x *= m` element-wise.
pub fn mul_into(x: &mut [f32], m: &[f32]) {
    simd(
        #[inline(always)]
        || {
            for (v, &f) in x.iter_mut().zip(m) {
                *v *= f;
            }
        },
    )
}

/// `out += a * b` element-wise.
pub fn mul_add(a: &[f32], b: &[f32], out: &mut [f32]) {
    simd(
        #[inline(always)]
        || {
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o += x * y;
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_mask_keeps_the_expected_share_and_scales() {
        let m = dropout_mask(100_000, 0.5, 7);
        let kept = m.iter().filter(|&&v| v != 0.0).count() as f64 / m.len() as f64;
        assert!((kept - 0.5).abs() < 0.01, "{kept}");
        assert!(m.iter().all(|&v| v == 0.0 || v == 2.0));
        assert_eq!(m, dropout_mask(100_000, 0.5, 7), "same seed, same mask");
        assert_ne!(m, dropout_mask(100_000, 0.5, 8));
        let m = dropout_mask(100_000, 0.2, 1);
        let kept = m.iter().filter(|&&v| v != 0.0).count() as f64 / m.len() as f64;
        assert!((kept - 0.8).abs() < 0.01, "{kept}");
        assert!(dropout_mask(10, 0.0, 1).iter().all(|&v| v == 1.0));
    }

    #[test]
    fn relu_and_its_gradient() {
        let mut x = vec![-1.0, 0.0, 2.0];
        relu(&mut x);
        assert_eq!(x, vec![0.0, 0.0, 2.0]);
        let (mut y, mut mask) = (vec![-1.0, 0.0, 2.0], vec![0u8; 3]);
        relu_with_mask(&mut y, &mut mask);
        assert_eq!(y, x);
        let mut g = vec![1.0; 3];
        relu_backward_mask(&mask, &[5.0, 6.0, 7.0], &mut g);
        assert_eq!(g, vec![1.0, 1.0, 8.0]);
    }
}
