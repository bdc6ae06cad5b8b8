//! Optimizer steps over one parameter tensor: read the gradient, update the parameter (and the
//! optimizer's moments), and zero the gradient for the next batch — one pass over the memory.

use super::simd;

/// One step of Adam (Kingma & Ba) as Keras has it: `m ← β₁m + (1-β₁)g`, `v ← β₂v + (1-β₂)g²`,
/// `p ← p - lr·m̂ / (√v̂ + ε)` with the bias-corrected `m̂ = m / (1-β₁ᵗ)`, `v̂ = v / (1-β₂ᵗ)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    /// The step's number, from 1.
    pub t: u32,
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
}

/// [`AdamStep`] over one parameter tensor `p` with gradient `g` and moments `m`, `v`.
pub fn adam(step: &AdamStep, p: &mut [f32], g: &mut [f32], m: &mut [f32], v: &mut [f32]) {
    let AdamStep { t, lr, betas: (beta1, beta2), eps } = *step;
    let (b1, b2) = (beta1 as f32, beta2 as f32);
    let c1 = (1.0 - beta1.powi(t as i32)) as f32;
    let c2 = (1.0 - beta2.powi(t as i32)) as f32;
    let (lr, eps) = (lr as f32, eps as f32);
    let step = |p: &mut [f32], g: &mut [f32], m: &mut [f32], v: &mut [f32]| {
        simd(
            #[inline(always)]
            || {
                for (((p, g), m), v) in p.iter_mut().zip(g.iter_mut()).zip(m.iter_mut()).zip(v.iter_mut()) {
                    let gv = std::mem::take(g);
                    *m = b1 * *m + (1.0 - b1) * gv;
                    *v = b2 * *v + (1.0 - b2) * gv * gv;
                    *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                }
            },
        )
    };
    if p.len() < SPLIT_MIN {
        return step(p, g, m, v);
    }
    // Two halves side by side: each value's update is the same, on one core or two.
    let half = p.len() / 2;
    let ((p0, p1), (g0, g1)) = (p.split_at_mut(half), g.split_at_mut(half));
    let ((m0, m1), (v0, v1)) = (m.split_at_mut(half), v.split_at_mut(half));
    rayon::join(|| step(p0, g0, m0, v0), || step(p1, g1, m1, v1));
}

/// Parameter tensors of at least this many values are updated on two cores.
const SPLIT_MIN: usize = 1 << 15;

/// Stochastic gradient descent, with classic momentum when `velocity` is given:
/// `u ← μu + g`, `p ← p - lr·u` (without momentum `p ← p - lr·g`).
pub fn sgd(lr: f64, momentum: f64, p: &mut [f32], g: &mut [f32], velocity: Option<&mut [f32]>) {
    let (lr, mu) = (lr as f32, momentum as f32);
    simd(
        #[inline(always)]
        || match velocity {
            Some(u) => {
                for ((p, g), u) in p.iter_mut().zip(g.iter_mut()).zip(u.iter_mut()) {
                    *u = mu * *u + std::mem::take(g);
                    *p -= lr * *u;
                }
            }
            None => {
                for (p, g) in p.iter_mut().zip(g.iter_mut()) {
                    *p -= lr * std::mem::take(g);
                }
            }
        },
    )
}

/// `g += wd · p` (an L2 penalty's gradient), nothing when `wd` is 0.
pub fn add_scaled(g: &mut [f32], p: &[f32], wd: f32) {
    if wd != 0.0 {
        super::simd(
            #[inline(always)]
            || g.iter_mut().zip(p).for_each(|(g, &p)| *g += wd * p),
        )
    }
}

/// `p *= factor` (decoupled weight decay), nothing when `factor` is 1.
pub fn scale(p: &mut [f32], factor: f32) {
    if factor != 1.0 {
        super::simd(
            #[inline(always)]
            || p.iter_mut().for_each(|p| *p *= factor),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two steps of Adam against the formula written out in f64.
    #[test]
    fn adam_matches_the_formula_and_zeroes_the_gradient() {
        let (mut p, mut m, mut v) = (vec![0.5f32, -1.0], vec![0f32; 2], vec![0f32; 2]);
        let grads = [[0.1f64, -0.2], [0.3, 0.05]];
        let (mut pe, mut me, mut ve) = ([0.5f64, -1.0], [0f64; 2], [0f64; 2]);
        for (t, gs) in grads.iter().enumerate() {
            let mut g: Vec<f32> = gs.iter().map(|&x| x as f32).collect();
            adam(
                &AdamStep { t: t as u32 + 1, lr: 1e-2, betas: (0.9, 0.999), eps: 1e-7 },
                &mut p,
                &mut g,
                &mut m,
                &mut v,
            );
            assert_eq!(g, vec![0.0; 2]);
            for i in 0..2 {
                me[i] = 0.9 * me[i] + 0.1 * gs[i];
                ve[i] = 0.999 * ve[i] + 0.001 * gs[i] * gs[i];
                let (mh, vh) = (me[i] / (1.0 - 0.9f64.powi(t as i32 + 1)), ve[i] / (1.0 - 0.999f64.powi(t as i32 + 1)));
                pe[i] -= 1e-2 * mh / (vh.sqrt() + 1e-7);
                assert!((p[i] as f64 - pe[i]).abs() < 1e-6, "step {t}: {} vs {}", p[i], pe[i]);
            }
        }
    }

    #[test]
    fn sgd_with_and_without_momentum() {
        let mut p = vec![1.0f32];
        sgd(0.5, 0.0, &mut p, &mut [2.0], None);
        assert_eq!(p, vec![0.0]);
        let (mut p, mut u) = (vec![0.0f32], vec![1.0f32]);
        let mut g = vec![1.0f32];
        sgd(0.1, 0.9, &mut p, &mut g, Some(&mut u));
        assert_eq!(u, vec![1.9]);
        assert!((p[0] + 0.19).abs() < 1e-7);
        assert_eq!(g, vec![0.0]);
    }
}
