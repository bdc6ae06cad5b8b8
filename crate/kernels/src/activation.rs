//! Element-wise activations (sigmoid, tanh, GELU, leaky ReLU, ELU), forward and backward, and the sum
//! of two tensors (a residual connection). Large tensors are cut into fixed pieces spread over the
//! cores; each value depends only on its own input, so the result is the same on any number of threads.

use rayon::prelude::*;

use super::simd;

/// An activation function `f`, applied to each value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `x · Φ(x)` with `Φ` the standard normal distribution function (exact, with `erf`: Keras' and
    /// PyTorch's default, not the tanh approximation).
    Gelu,
    /// `x` for `x > 0`, else `slope · x`.
    LeakyRelu { slope: f32 },
    /// `x` for `x > 0`, else `alpha · (e^x - 1)`.
    Elu { alpha: f32 },
}

impl Activation {
    /// Whether backward reads the output `y` (sigmoid, tanh: `f'` is cheapest from `y`) rather than the
    /// input `x`.
    pub fn backward_reads_output(self) -> bool {
        matches!(self, Activation::Sigmoid | Activation::Tanh)
    }

    #[inline(always)]
    fn f(self, x: f32) -> f32 {
        match self {
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => x.tanh(),
            Activation::Gelu => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
            Activation::LeakyRelu { slope } => {
                if x > 0.0 {
                    x
                } else {
                    slope * x
                }
            }
            Activation::Elu { alpha } => {
                if x > 0.0 {
                    x
                } else {
                    alpha * x.exp_m1()
                }
            }
        }
    }

    /// `f'` from the saved value `s`: the output for sigmoid and tanh, else the input.
    #[inline(always)]
    fn df(self, s: f32) -> f32 {
        match self {
            Activation::Sigmoid => s * (1.0 - s),
            Activation::Tanh => 1.0 - s * s,
            Activation::Gelu => {
                let cdf = 0.5 * (1.0 + erf(s * std::f32::consts::FRAC_1_SQRT_2));
                let pdf = (-0.5 * s * s).exp() * 0.398_942_3; // 1/√(2π)
                cdf + s * pdf
            }
            Activation::LeakyRelu { slope } => {
                if s > 0.0 {
                    1.0
                } else {
                    slope
                }
            }
            Activation::Elu { alpha } => {
                if s > 0.0 {
                    1.0
                } else {
                    alpha * s.exp()
                }
            }
        }
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    // Never exponentiates a positive number, so never overflows.
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The error function, Abramowitz and Stegun 7.1.26 refined to 1.2e-7 absolute error (Numerical
/// Recipes' `erfc` Chebyshev fit): std has no `erf`, and this is the one function GELU needs.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let z = x.abs() as f64;
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    let r = (1.0 - erfc) as f32;
    if x >= 0.0 {
        r
    } else {
        -r
    }
}

/// Values per piece handed to a core: below two pieces the work stays on the calling thread.
const PIECE: usize = 1 << 15;

pub(crate) fn pieces(x: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if x.len() < 2 * PIECE {
        f(0, x);
    } else {
        x.par_chunks_mut(PIECE).enumerate().for_each(|(i, c)| f(i * PIECE, c));
    }
}

/// `x = f(x)` in place.
pub fn forward(act: Activation, x: &mut [f32]) {
    pieces(x, |_, c| {
        simd(
            #[inline(always)]
            || c.iter_mut().for_each(|v| *v = act.f(*v)),
        )
    });
}

/// `grad_in += grad_out · f'`, with `saved` the layer's output when
/// [`backward_reads_output`](Activation::backward_reads_output), else its input.
pub fn backward(act: Activation, saved: &[f32], grad_out: &[f32], grad_in: &mut [f32]) {
    pieces(grad_in, |at, gi| {
        let (s, go) = (&saved[at..][..gi.len()], &grad_out[at..][..gi.len()]);
        simd(
            #[inline(always)]
            || {
                for ((gi, &go), &s) in gi.iter_mut().zip(go).zip(s) {
                    *gi += go * act.df(s);
                }
            },
        )
    });
}

/// `a += b` element-wise.
pub fn add_into(a: &mut [f32], b: &[f32]) {
    pieces(a, |at, a| {
        let b = &b[at..][..a.len()];
        simd(
            #[inline(always)]
            || a.iter_mut().zip(b).for_each(|(a, &b)| *a += b),
        )
    });
}

/// The activation's value at one point, for references in tests elsewhere.
pub fn apply(act: Activation, x: f32) -> f32 {
    act.f(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf against known values (Abramowitz and Stegun's table).
    #[test]
    fn erf_matches_the_table() {
        for (x, want) in [(0.0, 0.0), (0.5, 0.520_499_9), (1.0, 0.842_700_8), (2.0, 0.995_322_3), (-1.5, -0.966_105_1)]
        {
            assert!((erf(x) - want).abs() < 3e-7, "erf({x}) = {} not {want}", erf(x));
        }
    }

    /// Each derivative against central differences of the function, at points away from the kinks.
    #[test]
    fn derivatives_match_differences() {
        let acts = [
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::Gelu,
            Activation::LeakyRelu { slope: 0.3 },
            Activation::Elu { alpha: 1.0 },
        ];
        for act in acts {
            for x in [-3.1f32, -0.7, -0.2, 0.3, 0.9, 2.5] {
                let h = 1e-2f64;
                let f = |x: f64| act.f(x as f32) as f64;
                let num = (f(x as f64 + h) - f(x as f64 - h)) / (2.0 * h);
                let s = if act.backward_reads_output() { act.f(x) } else { x };
                let ana = act.df(s) as f64;
                assert!((num - ana).abs() < 2e-3, "{act:?} at {x}: {ana} vs {num}");
            }
        }
    }

    /// Split over the cores or not, the values are the same.
    #[test]
    fn pieces_cover_every_value_once() {
        let n = 5 * PIECE + 17;
        let mut x: Vec<f32> = (0..n).map(|i| (i % 97) as f32 / 20.0 - 2.0).collect();
        let want: Vec<f32> = x.iter().map(|&v| act_tanh(v)).collect();
        forward(Activation::Tanh, &mut x);
        assert_eq!(x, want);
        let mut a = vec![1f32; n];
        add_into(&mut a, &vec![2f32; n]);
        assert!(a.iter().all(|&v| v == 3.0));
    }

    fn act_tanh(v: f32) -> f32 {
        Activation::Tanh.f(v)
    }
}
