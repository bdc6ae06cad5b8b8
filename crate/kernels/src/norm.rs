//! Batch normalization over the rows of a `(rows, C)` matrix — a dense layer's `(B, C)` output or a
//! convolution's `(B·H·W, C)` pixels — forward (batch or running statistics) and backward. The
//! channel sums are taken over fixed blocks of rows in `f64` and added in block order, so the result
//! is the same on any number of threads.

use rayon::prelude::*;

use super::simd;

/// Rows per block of the channel sums.
const BLOCK: usize = 512;

/// Per-channel sums of `a` and of `a·b` over the rows, in `f64`, where `b` is `a` itself
/// ([`Other::Same`]) or `x·scale + shift` of another matrix ([`Other::Affine`], the normalized input
/// recomputed on the fly).
fn channel_sums(c: usize, a: &[f32], b: Other) -> (Vec<f64>, Vec<f64>) {
    let blocks: Vec<(Vec<f64>, Vec<f64>)> = a
        .par_chunks(BLOCK * c)
        .enumerate()
        .map(|(i, a)| {
            let (mut s, mut p) = (vec![0f64; c], vec![0f64; c]);
            // Vectorised across the channels; each channel still adds its rows in order.
            simd(
                #[inline(always)]
                || match b {
                    Other::Same => {
                        for row in a.chunks_exact(c) {
                            for ((s, p), &x) in s.iter_mut().zip(p.iter_mut()).zip(row) {
                                *s += x as f64;
                                *p += x as f64 * x as f64;
                            }
                        }
                    }
                    Other::Affine(x, scale, shift) => {
                        let x = &x[i * BLOCK * c..][..a.len()];
                        for (row, xr) in a.chunks_exact(c).zip(x.chunks_exact(c)) {
                            let per_channel =
                                s.iter_mut().zip(p.iter_mut()).zip(row.iter().zip(xr)).zip(scale.iter().zip(shift));
                            for (((s, p), (&d, &x)), (&scale, &shift)) in per_channel {
                                let h = x * scale + shift;
                                *s += d as f64;
                                *p += d as f64 * h as f64;
                            }
                        }
                    }
                },
            );
            (s, p)
        })
        .collect();
    let (mut s, mut p) = (vec![0f64; c], vec![0f64; c]);
    for (bs, bp) in blocks {
        s.iter_mut().zip(bs).for_each(|(a, b)| *a += b);
        p.iter_mut().zip(bp).for_each(|(a, b)| *a += b);
    }
    (s, p)
}

/// The second factor of [`channel_sums`]' products.
#[derive(Clone, Copy)]
enum Other<'a> {
    Same,
    /// `x·scale + shift` per channel, from `(x, scale, shift)`.
    Affine(&'a [f32], &'a [f32], &'a [f32]),
}

/// `y = f(channel, x)` for every value of `x` `(rows, C)`, rows in parallel, into a recycled buffer
/// (every value is written).
#[inline(always)]
fn per_channel(c: usize, x: &[f32], f: impl Fn(usize, f32) -> f32 + Sync) -> Vec<f32> {
    let mut y = super::dirty_vec(x.len());
    y.par_chunks_mut(BLOCK * c).zip(x.par_chunks(BLOCK * c)).for_each(|(y, x)| {
        simd(
            #[inline(always)]
            || {
                for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                    for ch in 0..c {
                        yr[ch] = f(ch, xr[ch]);
                    }
                }
            },
        )
    });
    y
}

/// What a training pass keeps for backward: its input and, per channel, `1/σ` and `-μ/σ`, from which
/// backward recomputes the normalized input `x̂ = x·(1/σ) - μ/σ` (the expression of the forward pass,
/// so the same values) instead of reading a stored copy.
pub struct BatchStats {
    pub x: Vec<f32>,
    pub inv_std: Vec<f32>,
    shift: Vec<f32>,
    /// The batch's mean and (biased) variance per channel, for the running statistics.
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

/// Training: normalizes `x` `(rows, C)` with the batch's own mean and variance, then scales by
/// `gamma` and shifts by `beta`: `y = γ·(x - μ)/√(σ² + ε) + β`. Keeps `x` for backward.
pub fn batch_norm_train(c: usize, x: Vec<f32>, gamma: &[f32], beta: &[f32], eps: f32) -> (Vec<f32>, BatchStats) {
    let rows = x.len().checked_div(c).unwrap_or(0);
    let (s, p) = channel_sums(c, &x, Other::Same);
    let n = rows.max(1) as f64;
    let mean: Vec<f64> = s.iter().map(|s| s / n).collect();
    let var: Vec<f64> = p.iter().zip(&mean).map(|(p, m)| (p / n - m * m).max(0.0)).collect();
    let inv_std: Vec<f32> = var.iter().map(|v| (1.0 / (v + eps as f64).sqrt()) as f32).collect();
    let shift: Vec<f32> = mean.iter().zip(&inv_std).map(|(m, i)| (-m * *i as f64) as f32).collect();
    let y = per_channel(c, &x, |ch, v| (v * inv_std[ch] + shift[ch]) * gamma[ch] + beta[ch]);
    let stats = BatchStats {
        x,
        inv_std,
        shift,
        mean: mean.iter().map(|&m| m as f32).collect(),
        var: var.iter().map(|&v| v as f32).collect(),
    };
    (y, stats)
}

/// Inference: `y = γ·(x - mean)/√(var + ε) + β` with the running statistics.
pub fn batch_norm_infer(
    c: usize,
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    (mean, var): (&[f32], &[f32]),
    eps: f32,
) -> Vec<f32> {
    let scale: Vec<f32> = (0..c).map(|ch| gamma[ch] / (var[ch] + eps).sqrt()).collect();
    let shift: Vec<f32> = (0..c).map(|ch| beta[ch] - mean[ch] * scale[ch]).collect();
    per_channel(c, x, |ch, v| v * scale[ch] + shift[ch])
}

/// Backward of [`batch_norm_train`]: adds the gradients of `gamma` and `beta`, and — when given — of
/// the input: `dx = γ/σ · (dy - mean(dy) - x̂·mean(dy·x̂))`.
pub fn batch_norm_backward(
    c: usize,
    stats: &BatchStats,
    gamma: &[f32],
    grad_out: &[f32],
    (grad_gamma, grad_beta): (&mut [f32], &mut [f32]),
    grad_x: Option<&mut [f32]>,
) {
    let rows = grad_out.len().checked_div(c).unwrap_or(0);
    let (x, inv_std, shift) = (&stats.x[..], &stats.inv_std[..], &stats.shift[..]);
    let (sum_dy, sum_dy_xhat) = channel_sums(c, grad_out, Other::Affine(x, inv_std, shift));
    for ch in 0..c {
        grad_beta[ch] += sum_dy[ch] as f32;
        grad_gamma[ch] += sum_dy_xhat[ch] as f32;
    }
    let Some(gx) = grad_x else { return };
    let n = rows.max(1) as f64;
    let k: Vec<f32> = (0..c).map(|ch| gamma[ch] * stats.inv_std[ch]).collect();
    let m_dy: Vec<f32> = sum_dy.iter().map(|s| (s / n) as f32).collect();
    let m_dyx: Vec<f32> = sum_dy_xhat.iter().map(|s| (s / n) as f32).collect();
    gx.par_chunks_mut(BLOCK * c).zip(grad_out.par_chunks(BLOCK * c)).zip(x.par_chunks(BLOCK * c)).for_each(
        |((gx, dy), x)| {
            simd(
                #[inline(always)]
                || {
                    for ((gr, dr), xr) in gx.chunks_exact_mut(c).zip(dy.chunks_exact(c)).zip(x.chunks_exact(c)) {
                        for ch in 0..c {
                            let h = xr[ch] * inv_std[ch] + shift[ch];
                            gr[ch] += k[ch] * (dr[ch] - m_dy[ch] - h * m_dyx[ch]);
                        }
                    }
                },
            )
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq;

    /// The output of a training pass has, per channel, mean β and standard deviation γ (up to ε), and
    /// inference with the batch's own statistics gives the same values.
    #[test]
    fn training_normalizes_and_inference_with_its_statistics_agrees() {
        let (c, rows) = (3, 1100);
        let x: Vec<f32> = seq(rows * c, 2).iter().enumerate().map(|(i, v)| v * (1 + i % c) as f32 + 5.0).collect();
        let (gamma, beta) = ([1.0, 2.0, 0.5], [0.0, 1.0, -1.0]);
        let (y, st) = batch_norm_train(c, x.clone(), &gamma, &beta, 1e-5);
        for ch in 0..c {
            let v: Vec<f64> = y.iter().skip(ch).step_by(c).map(|&v| v as f64).collect();
            let m = v.iter().sum::<f64>() / rows as f64;
            let sd = (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / rows as f64).sqrt();
            assert!((m - beta[ch] as f64).abs() < 1e-4 && (sd - gamma[ch] as f64).abs() < 1e-3, "{ch}: {m} {sd}");
        }
        let inf = batch_norm_infer(c, &x, (&gamma, &beta), (&st.mean, &st.var), 1e-5);
        for (a, b) in inf.iter().zip(&y) {
            assert!((a - b).abs() < 1e-4);
        }
    }

    /// The input and parameter gradients against central differences of `Σ y·w`.
    #[test]
    fn gradients_match_differences() {
        let (c, rows) = (2, 7);
        let x = seq(rows * c, 5);
        let w = seq(rows * c, 6);
        let (gamma, beta) = ([1.3f32, 0.7], [0.2f32, -0.1]);
        let loss = |x: &[f32], gamma: &[f32], beta: &[f32]| -> f64 {
            let (y, _) = batch_norm_train(c, x.to_vec(), gamma, beta, 1e-3);
            y.iter().zip(&w).map(|(a, b)| (a * b) as f64).sum()
        };
        let (_, st) = batch_norm_train(c, x.clone(), &gamma, &beta, 1e-3);
        let (mut gg, mut gb, mut gx) = (vec![0f32; c], vec![0f32; c], vec![0f32; x.len()]);
        batch_norm_backward(c, &st, &gamma, &w, (&mut gg, &mut gb), Some(&mut gx));
        let h = 1e-2f32;
        for i in 0..x.len() {
            let (mut a, mut b) = (x.clone(), x.clone());
            a[i] += h;
            b[i] -= h;
            let num = (loss(&a, &gamma, &beta) - loss(&b, &gamma, &beta)) / (2.0 * h as f64);
            assert!((num - gx[i] as f64).abs() < 2e-2, "dx[{i}] {num} vs {}", gx[i]);
        }
        for ch in 0..c {
            let (mut a, mut b) = (gamma, gamma);
            a[ch] += h;
            b[ch] -= h;
            let num = (loss(&x, &a, &beta) - loss(&x, &b, &beta)) / (2.0 * h as f64);
            assert!((num - gg[ch] as f64).abs() < 1e-2, "dγ {num} vs {}", gg[ch]);
            let want_b: f32 = w.iter().skip(ch).step_by(c).sum();
            assert!((want_b - gb[ch]).abs() < 1e-4);
        }
    }
}
