//! Activations, element-wise.

#[cfg(not(feature = "cuda"))]
use super::super::ops::{self, flat};
use dfdx::prelude::*;

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
