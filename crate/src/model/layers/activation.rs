//! Activations, element-wise: `ReLU`, `Sigmoid`, `Tanh`, `Gelu`, `LeakyReLU`, `Elu`. On the CPU each is
//! one non-generic kernel call (`fashion_kernels::activation`); with the `cuda` feature, dfdx's ops.

#[cfg(not(feature = "cuda"))]
use super::super::ops::{self, flat};
use dfdx::prelude::*;
#[cfg(not(feature = "cuda"))]
use fashion_kernels::activation::Activation;

/// `ReLU`: `max(x, 0)` element-wise (Keras' `activation="relu"` or `layers.ReLU()`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReLU;
impl ZeroSizedModule for ReLU {}
impl NonMutableModule for ReLU {}

#[cfg(not(feature = "cuda"))]
impl<S: Shape, T: Tape<f32, Cpu>> Module<Tensor<S, f32, Cpu, T>> for ReLU {
    type Output = Tensor<S, f32, Cpu, T>;
    type Error = CpuError;

    /// # Shapes
    /// Any shape, unchanged.
    fn try_forward(&self, x: Tensor<S, f32, Cpu, T>) -> Result<Self::Output, CpuError> {
        let (x, mut tape) = x.split_tape();
        let shape = *x.shape();
        let (y, backward) = ops::relu(flat(x), T::OWNS_TAPE)?;
        if let Some(backward) = backward {
            tape.add_backward_op(backward);
        }
        Ok(y.try_reshape_like(&shape)?.put_tape(tape))
    }
}

#[cfg(feature = "cuda")]
impl<S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>> Module<Tensor<S, E, D, T>> for ReLU {
    type Output = Tensor<S, E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<S, E, D, T>) -> Result<Self::Output, D::Err> {
        x.try_relu()
    }
}

/// `Sigmoid`: `1 / (1 + e^-x)` (Keras' `activation="sigmoid"`), LeNet's activation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sigmoid;

/// `Tanh`: `tanh(x)` (Keras' `activation="tanh"`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tanh;

/// `Gelu`: `x·Φ(x)`, `Φ` the normal distribution function — exact, as Keras' `activation="gelu"` and
/// PyTorch's `nn.GELU()` by default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gelu;

/// `LeakyReLU<PERCENT>`: `x` for `x > 0`, else `PERCENT/100 · x`. The default, `LeakyReLU` =
/// `LeakyReLU<30>`, is Keras' `layers.LeakyReLU()` (slope 0.3); `LeakyReLU<1>` is PyTorch's (0.01).
#[derive(Debug, Clone, Copy, Default)]
pub struct LeakyReLU<const PERCENT: usize = 30>;

/// `Elu`: `x` for `x > 0`, else `e^x - 1` (Keras' `activation="elu"`, alpha 1), the activation of the
/// TF *Overfit and underfit* tutorial.
#[derive(Debug, Clone, Copy, Default)]
pub struct Elu;

macro_rules! activation_layer {
    ($layer:ty, [$($generics:tt)*], $act:expr, |$x:ident| $cuda:expr) => {
        impl<$($generics)*> ZeroSizedModule for $layer {}
        impl<$($generics)*> NonMutableModule for $layer {}

        #[cfg(not(feature = "cuda"))]
        impl<$($generics)* S: Shape, T: Tape<f32, Cpu>> Module<Tensor<S, f32, Cpu, T>> for $layer {
            type Output = Tensor<S, f32, Cpu, T>;
            type Error = CpuError;

            /// # Shapes
            /// Any shape, unchanged.
            fn try_forward(&self, x: Tensor<S, f32, Cpu, T>) -> Result<Self::Output, CpuError> {
                let (x, mut tape) = x.split_tape();
                let shape = *x.shape();
                let (y, backward) = ops::activation(flat(x), $act, T::OWNS_TAPE)?;
                if let Some(backward) = backward {
                    tape.add_backward_op(backward);
                }
                Ok(y.try_reshape_like(&shape)?.put_tape(tape))
            }
        }

        #[cfg(feature = "cuda")]
        impl<$($generics)* S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>> Module<Tensor<S, E, D, T>> for $layer {
            type Output = Tensor<S, E, D, T>;
            type Error = D::Err;

            fn try_forward(&self, $x: Tensor<S, E, D, T>) -> Result<Self::Output, D::Err> {
                $cuda
            }
        }
    };
}

activation_layer!(Sigmoid, [], Activation::Sigmoid, |x| x.try_sigmoid());
activation_layer!(Tanh, [], Activation::Tanh, |x| x.try_tanh());
activation_layer!(Gelu, [], Activation::Gelu, |x| x.try_accurate_gelu());
activation_layer!(
    LeakyReLU<PERCENT>,
    [const PERCENT: usize,],
    Activation::LeakyRelu { slope: PERCENT as f32 / 100.0 },
    |x| x.try_prelu(E::from_f64(PERCENT as f64 / 100.0).unwrap())
);
activation_layer!(Elu, [], Activation::Elu { alpha: 1.0 }, |x| {
    // relu(x) + e^min(x, 0) - 1
    let negative =
        x.with_empty_tape().try_clamp(f64::NEG_INFINITY, 0.0)?.try_exp()?.try_sub(E::from_f64(1.0).unwrap())?;
    x.try_relu()?.try_add(negative)
});
