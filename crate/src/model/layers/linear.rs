//! The fully connected layer (Keras' `Dense`) on the CPU; with the `cuda` feature networks use dfdx's own.

use super::super::ops::{self, flat};
use dfdx::prelude::*;
use num_traits::Float;
use rand_distr::uniform::SampleUniform;

use super::{builders, keras_init};

/// Fully connected layer `I → O`, `y = x·Wᵀ + b` (Keras' `Dense`): dfdx's `Linear` (same weight layout
/// `(O, I)`, same safetensors names) with its own CPU kernel. When it is a network's first layer its
/// input is data, nothing needs that gradient, and [`Model`](crate::train::Model) sets
/// `input_is_data` so backward skips it — a third of the MLP's arithmetic.
#[derive(Debug, Clone)]
pub struct Linear<const I: usize, const O: usize, E: Dtype, D: Storage<E>> {
    /// Shape `(O, I)`.
    pub weight: Tensor<Rank2<O, I>, E, D>,
    /// Shape `(O,)`.
    pub bias: Tensor<Rank1<O>, E, D>,
    /// Skip the input gradient (set on a network's first layer).
    pub input_is_data: bool,
}

impl<const I: usize, const O: usize, E: Dtype, D: Device<E>> BuildOnDevice<D, E> for builders::Linear<I, O>
where
    Linear<I, O, E, D>: BuildModule<D, E>,
{
    type Built = Linear<I, O, E, D>;
}

impl<const I: usize, const O: usize, E: Dtype, D: Storage<E>> NonMutableModule for Linear<I, O, E, D> {}

impl<const I: usize, const O: usize, E: Dtype + Float + SampleUniform, D: Device<E>> TensorCollection<E, D>
    for Linear<I, O, E, D>
{
    type To<E2: Dtype, D2: Device<E2>> = Linear<I, O, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor("weight", |s| &s.weight, |s| &mut s.weight, keras_init()),
                Self::tensor("bias", |s| &s.bias, |s| &mut s.bias, keras_init()),
            ),
            |(weight, bias)| Linear { weight, bias, input_is_data: false },
        )
    }
}

impl<const I: usize, const O: usize, B: Dim, T: Tape<f32, Cpu>> Module<Tensor<(B, Const<I>), f32, Cpu, T>>
    for Linear<I, O, f32, Cpu>
{
    type Output = Tensor<(B, Const<O>), f32, Cpu, T>;
    type Error = CpuError;

    /// # Shapes
    /// `(B, I)` → `(B, O)`.
    fn try_forward(&self, x: Tensor<(B, Const<I>), f32, Cpu, T>) -> Result<Self::Output, CpuError> {
        let (x, mut tape) = x.split_tape();
        let b = x.shape().0;
        let (w, bias) = (flat(self.weight.clone()), flat(self.bias.clone()));
        let (y, backward) =
            ops::linear(flat(x), (b.size(), I, O), w, bias, ops::Grads::of(T::OWNS_TAPE, self.input_is_data))?;
        if let Some(backward) = backward {
            tape.add_backward_op(backward);
        }
        Ok(y.try_reshape_like(&(b, Const::<O>))?.put_tape(tape))
    }
}
