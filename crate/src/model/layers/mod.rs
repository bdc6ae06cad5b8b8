//! The layers networks are made of, as dfdx modules (so autodiff, the optimizers and safetensors see
//! them like any other): dfdx 0.13 has `Linear` and `DropoutOneIn` on stable Rust but its convolution
//! and pooling only behind its `nightly` feature (which no longer builds), and its own `Linear` runs on
//! dfdx's generic matmul, compiled unoptimised in a notebook cell. The reference `Conv2d` and
//! `MaxPool2d` are written from operations that work on stable Rust — gather, reshape, matmul, slice,
//! max.
//!
//! The layers a network is made of — [`Flatten`], [`Linear`], [`ReLU`], [`DropoutOneIn`], [`AddChannel`],
//! [`ConvReluPool`] — run on the CPU through the non-generic operations of [`super::ops`] and the
//! kernels of the `fashion_kernels` crate (`crate/kernels`) (convolution + ReLU + max-pool in one pass for the CNN's blocks), so a
//! network type written in a notebook cell trains at full speed. Their results are tested against dfdx's
//! `Linear` and against `(Conv2d, ReLU, MaxPool2d)` built from dfdx ops, themselves tested against
//! naive references. With the `cuda` feature they are dfdx operations.
//!
//! Images flow in NHWC layout (batch, height, width, channels), as in Keras.
//!
//! | file | layers |
//! |---|---|
//! | `shape.rs` | [`Flatten`], [`AddChannel`] |
//! | `linear.rs` | [`Linear`] (Keras' `Dense`) |
//! | `conv.rs` | [`Conv2d`], [`ConvReluPool`] |
//! | `pool.rs` | [`MaxPool2d`] |
//! | `activation.rs` | [`ReLU`] |
//! | `dropout.rs` | [`DropoutOneIn`] |

mod activation;
mod conv;
mod dropout;
#[cfg(not(feature = "cuda"))]
mod linear;
mod pool;
mod shape;
#[cfg(test)]
mod tests;

use dfdx::prelude::*;
use num_traits::Float;
use rand_distr::uniform::SampleUniform;
use rand_distr::Uniform;

pub use activation::ReLU;
pub use conv::{Conv2d, ConvReluPool};
#[cfg(not(feature = "cuda"))]
pub(crate) use dropout::take_draws as take_dropout_draws;
pub use dropout::DropoutOneIn;
#[cfg(not(feature = "cuda"))]
pub use linear::Linear;
pub use pool::MaxPool2d;
pub use shape::{AddChannel, Flatten};

/// Builders: the types you write in an architecture (no dtype, no device).
pub mod builders {
    /// K×K convolution, stride 1, `P` pixels of zero padding on each side: `P = 0` is Keras'
    /// `padding="valid"`, `P = (K - 1) / 2` its `padding="same"`.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Conv2d<const IN: usize, const OUT: usize, const K: usize, const P: usize = 0>;
    /// [`Conv2d<IN, OUT, K, P>`](Conv2d), ReLU and `POOL×POOL` max-pooling as one layer.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct ConvReluPool<const IN: usize, const OUT: usize, const K: usize, const P: usize, const POOL: usize>;
    /// Fully connected layer `I → O` (Keras' `Dense`).
    #[cfg(not(feature = "cuda"))]
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Linear<const I: usize, const O: usize>;
    pub use super::{AddChannel, DropoutOneIn, Flatten, MaxPool2d, ReLU};
    #[cfg(feature = "cuda")]
    pub use dfdx::nn::builders::Linear;
}

/// The fans of a weight of this shape: `(I, O)` for a dense `(O, I)` matrix, `(K·K·IN, K·K·OUT)` for a
/// `(K, K, IN, OUT)` kernel; `None` for anything else (biases).
pub(crate) fn glorot_fans(dims: &[usize]) -> Option<(usize, usize)> {
    match dims {
        [out, inp] => Some((*inp, *out)),
        [k1, k2, inp, out] => Some((k1 * k2 * inp, k1 * k2 * out)),
        _ => None,
    }
}

/// Keras' initialisation: weights Glorot-uniform in `±sqrt(6 / (fan_in + fan_out))` — a dense `(O, I)`
/// matrix has fans `I` and `O`, a `(K, K, IN, OUT)` kernel `K·K·IN` and `K·K·OUT` — biases zero.
fn keras_init<S: ConstShape, E: Dtype + Float + SampleUniform, D: Device<E>>() -> TensorOptions<S, E, D> {
    TensorOptions::reset_with(|t| {
        let Some((fan_in, fan_out)) = glorot_fans(t.shape().concrete().as_ref()) else {
            return t.try_fill_with_zeros();
        };
        let bound = (E::from_f64(6.0).unwrap() / E::from_usize(fan_in + fan_out).unwrap()).sqrt();
        t.try_fill_with_distr(Uniform::new(-bound, bound))
    })
}
