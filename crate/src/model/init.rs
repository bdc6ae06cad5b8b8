//! Weight initialisation of a built network: Keras' default (Glorot-uniform, which the layers already
//! draw when they are built) or He et al.'s for ReLU networks (Keras' `he_normal` and `he_uniform`,
//! PyTorch's `kaiming_normal_` / `kaiming_uniform_` with `nonlinearity="relu"`).

use dfdx::prelude::*;
use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};

use super::{layers, Dev};

/// How the weights of dense layers and convolutions are drawn. `fan_in` is a dense layer's inputs, or
/// `K·K·IN` for a `K×K` convolution over `IN` channels; `fan_out` likewise. Biases start at zero, and
/// every other tensor (batch norm's γ = 1, β = 0 and statistics) at its layer's own start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Initializer {
    /// Uniform in `±√(6 / (fan_in + fan_out))`: Keras' default (`glorot_uniform`), used by `Model::new`.
    #[default]
    GlorotUniform,
    /// Uniform in `±√(6 / fan_in)`: Keras' `he_uniform`.
    HeUniform,
    /// Normal with standard deviation `√(2 / fan_in)`, truncated at two standard deviations (and scaled
    /// up so that the truncated distribution keeps that deviation): Keras' `he_normal`.
    HeNormal,
}

impl Initializer {
    /// Keras' name of the initializer.
    pub fn name(self) -> &'static str {
        match self {
            Initializer::GlorotUniform => "glorot_uniform",
            Initializer::HeUniform => "he_uniform",
            Initializer::HeNormal => "he_normal",
        }
    }
}

/// The standard deviation of a unit normal truncated to `[-2, 2]` (Keras divides by it).
const TRUNCATED_STD: f32 = 0.879_625_7;

/// A normal distribution with its draws beyond two standard deviations drawn again.
struct TruncatedNormal {
    normal: Normal<f32>,
    bound: f32,
}

impl Distribution<f32> for TruncatedNormal {
    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f32 {
        loop {
            let v = self.normal.sample(rng);
            if v.abs() <= self.bound {
                return v;
            }
        }
    }
}

/// Draws every weight of `model` anew with `init` from the device's generator (so the seed decides),
/// and resets every other tensor to its layer's start.
pub(crate) fn initialize<M: TensorCollection<f32, Dev>>(
    model: &mut M,
    init: Initializer,
) -> Result<(), <Dev as HasErr>::Err> {
    struct Visit(Initializer);
    impl TensorVisitor<f32, Dev> for Visit {
        type Viewer = ViewTensorMut;
        type Err = <Dev as HasErr>::Err;
        type E2 = f32;
        type D2 = Dev;
        fn visit<S: Shape>(
            &mut self,
            options: TensorOptions<S, f32, Dev>,
            t: &mut Tensor<S, f32, Dev>,
        ) -> Result<Option<Tensor<S, f32, Dev>>, Self::Err> {
            let dims: Vec<usize> = t.shape().concrete().into_iter().collect();
            match layers::glorot_fans(&dims) {
                Some((fan_in, fan_out)) if options.do_gradient_update => {
                    let (fan_in, fan_out) = (fan_in.max(1) as f32, fan_out as f32);
                    match self.0 {
                        Initializer::GlorotUniform => {
                            let b = (6.0 / (fan_in + fan_out).max(1.0)).sqrt();
                            t.try_fill_with_distr(Uniform::new(-b, b))?
                        }
                        Initializer::HeUniform => {
                            let b = (6.0 / fan_in).sqrt();
                            t.try_fill_with_distr(Uniform::new(-b, b))?
                        }
                        Initializer::HeNormal => {
                            let sd = (2.0 / fan_in).sqrt() / TRUNCATED_STD;
                            let normal = Normal::new(0.0, sd).expect("a positive, finite deviation");
                            t.try_fill_with_distr(TruncatedNormal { normal, bound: 2.0 * sd })?
                        }
                    }
                }
                _ => (options.reset)(t)?,
            }
            Ok(None)
        }
        fn visit_scalar<N: num_traits::NumCast>(
            &mut self,
            _: ScalarOptions<N>,
            _: &mut N,
        ) -> Result<Option<N>, Self::Err> {
            Ok(None)
        }
    }
    M::iter_tensors(&mut RecursiveWalker { m: model, f: &mut Visit(init) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BatchNorm, Flatten, Linear, ReLU};

    type Net = (Flatten<784>, Linear<784, 256>, BatchNorm<256>, ReLU, Linear<256, 10>);

    fn mean_sd(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        (m, (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n).sqrt())
    }

    /// He-normal: deviation √(2/fan_in), nothing beyond the truncation; He-uniform: the whole range
    /// `±√(6/fan_in)` and the same deviation; biases and batch norm back at their start; same seed,
    /// same weights.
    #[test]
    fn he_initializers_follow_keras_and_leave_the_rest_at_their_start() {
        let build = |init| {
            let dev = Dev::seed_from_u64(5);
            let mut net = dev.build_module::<Net, f32>();
            net.2.gamma = net.2.gamma.clone() * 3.0;
            initialize(&mut net, init).unwrap();
            net
        };
        let sd = (2.0f64 / 784.0).sqrt();
        let net = build(Initializer::HeNormal);
        let w = net.1.weight.as_vec();
        let (m, s) = mean_sd(&w);
        assert!(m.abs() < 0.01 * sd && (s / sd - 1.0).abs() < 0.01, "mean {m}, sd {s} vs {sd}");
        let cut = 2.0 * sd / TRUNCATED_STD as f64;
        assert!(w.iter().all(|v| (v.abs() as f64) <= cut * 1.0001), "truncated at two deviations");
        assert!(w.iter().any(|v| (v.abs() as f64) > 0.98 * cut), "up to the truncation");
        let (_, s2) = mean_sd(&net.4.weight.as_vec());
        assert!((s2 / (2.0f64 / 256.0).sqrt() - 1.0).abs() < 0.05, "fan_in of the second layer: {s2}");
        assert!(net.1.bias.as_vec().iter().chain(&net.4.bias.as_vec()).all(|&b| b == 0.0));
        assert!(net.2.gamma.as_vec().iter().chain(&net.2.moving_variance.as_vec()).all(|&g| g == 1.0));
        assert_eq!(build(Initializer::HeNormal).1.weight.as_vec(), w, "same seed, same weights");

        let w = build(Initializer::HeUniform).1.weight.as_vec();
        let bound = (6.0f64 / 784.0).sqrt();
        assert!(w.iter().all(|v| (v.abs() as f64) <= bound) && w.iter().any(|v| (v.abs() as f64) > 0.99 * bound));
        let (_, s) = mean_sd(&w);
        assert!((s / sd - 1.0).abs() < 0.01, "uniform deviation {s} vs {sd}");

        let w = build(Initializer::GlorotUniform).1.weight.as_vec();
        let bound = (6.0f64 / (784.0 + 256.0)).sqrt();
        assert!(w.iter().all(|v| (v.abs() as f64) <= bound) && w.iter().any(|v| (v.abs() as f64) > 0.99 * bound));
        assert_eq!(Initializer::HeNormal.name(), "he_normal");
    }
}
