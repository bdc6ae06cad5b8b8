//! The layers networks are made of, as dfdx modules (so autodiff, the optimizers and safetensors see
//! them like any other): dfdx 0.13 has `Linear` and `DropoutOneIn` on stable Rust but its convolution
//! and pooling only behind its `nightly` feature (which no longer builds), and its own `Linear` runs on
//! dfdx's generic matmul, compiled unoptimised in a notebook cell. The reference `Conv2d` and
//! `MaxPool2d` are written from operations that work on stable Rust — gather, reshape, matmul, slice,
//! max.
//!
//! The layers a network is made of run on the CPU through the non-generic operations of
//! [`super::ops`] and the kernels of the `fashion_kernels` crate (`crate/kernels`), so a network type
//! written in a notebook cell trains at full speed, however its layers are combined. Each is tested
//! against a naive reference or the same computation from dfdx ops (outputs and numerical gradients).
//! With the `cuda` feature they are dfdx operations.
//!
//! Images flow in NHWC layout (batch, height, width, channels), as in Keras.
//!
//! | file | layers | Keras |
//! |---|---|---|
//! | `shape.rs` | [`Flatten`], [`AddChannel`] | `Flatten`, `Reshape((28, 28, 1))` |
//! | `linear.rs` | [`Linear`] | `Dense` |
//! | `conv.rs` | [`Conv2d`], [`ConvReluPool`] | `Conv2D`, `Conv2D(activation="relu")` + `MaxPooling2D` |
//! | `pool.rs` | [`MaxPool2d`], [`AvgPool2d`], [`GlobalAvgPool`] | `MaxPooling2D`, `AveragePooling2D`, `GlobalAveragePooling2D` |
//! | `activation.rs` | [`ReLU`], [`Sigmoid`], [`Tanh`], [`Gelu`], [`LeakyReLU`], [`Elu`] | `ReLU`, `Activation(…)`, `LeakyReLU`, `ELU` |
//! | `norm.rs` | [`BatchNorm`] | `BatchNormalization` |
//! | `dropout.rs` | [`Dropout`], [`DropoutOneIn`] | `Dropout` |
//! | `residual.rs` | [`Residual`], [`ResidualProjection`] | `Add()([x, f(x)])` |

mod activation;
pub(crate) mod conv;
mod dropout;
#[cfg(not(feature = "cuda"))]
mod linear;
mod norm;
pub(crate) mod pool;
mod residual;
mod shape;
#[cfg(test)]
mod tests;

use dfdx::prelude::*;
use num_traits::Float;
use rand_distr::uniform::SampleUniform;
use rand_distr::Uniform;

pub use activation::{Elu, Gelu, LeakyReLU, ReLU, Sigmoid, Tanh};
pub use conv::{Conv2d, ConvReluPool};
#[cfg(not(feature = "cuda"))]
pub(crate) use dropout::take_draws as take_dropout_draws;
pub use dropout::{Dropout, DropoutOneIn};
#[cfg(not(feature = "cuda"))]
pub use linear::Linear;
pub use norm::BatchNorm;
pub use pool::{AvgPool2d, GlobalAvgPool, MaxPool2d};
pub use residual::{Residual, ResidualProjection};
pub use shape::{AddChannel, Flatten};

/// Builders: the types you write in an architecture (no dtype, no device).
pub mod builders {
    /// K×K convolution with `P` pixels of zero padding on each side and stride `S`: `P = 0` is Keras'
    /// `padding="valid"`, `P = (K - 1) / 2` its `padding="same"`; `Conv2d<16, 32, 3, 1, 2>` is
    /// `Conv2D(32, 3, strides=2, padding="same")` over 16 channels.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Conv2d<const IN: usize, const OUT: usize, const K: usize, const P: usize = 0, const S: usize = 1>;
    /// Batch normalization of `C` channels (the last axis): Keras' `BatchNormalization()`.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct BatchNorm<const C: usize>;
    /// [`Conv2d<IN, OUT, K, P>`](Conv2d), ReLU and `POOL×POOL` max-pooling as one layer.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct ConvReluPool<const IN: usize, const OUT: usize, const K: usize, const P: usize, const POOL: usize>;
    /// Fully connected layer `I → O` (Keras' `Dense`).
    #[cfg(not(feature = "cuda"))]
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Linear<const I: usize, const O: usize>;
    pub use super::{
        AddChannel, AvgPool2d, Dropout, DropoutOneIn, Elu, Flatten, Gelu, GlobalAvgPool, LeakyReLU, MaxPool2d, ReLU,
        Residual, ResidualProjection, Sigmoid, Tanh,
    };
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
