//! Dropout, active while training only: `Dropout<PERCENT>` (Keras' `Dropout(rate)`) and `DropoutOneIn<N>`.

#[cfg(not(feature = "cuda"))]
use super::super::ops::{self, flat};
use dfdx::prelude::*;

/// `Dropout<PERCENT>`: while training, zeroes each value with probability `PERCENT/100` and scales the
/// others by `1/(1 - PERCENT/100)`; at inference it does nothing. `Dropout<20>` is Keras'
/// `Dropout(0.2)`, `Dropout<50>` its `Dropout(0.5)`. The mask is drawn from the device's seeded
/// generator, so a seed still fixes a whole training run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dropout<const PERCENT: usize>;

/// `DropoutOneIn<N>`: while training, zeroes each value with probability `1/N` and scales the others
/// by `N/(N-1)`; at inference it does nothing. `DropoutOneIn<2>` is `Dropout<50>`, `DropoutOneIn<5>`
/// is `Dropout<20>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DropoutOneIn<const N: usize>;

macro_rules! dropout_layer {
    ($layer:ident<$n:ident>, $p:expr) => {
        impl<const $n: usize> ZeroSizedModule for $layer<$n> {}

        impl<const $n: usize, S: Shape, E: Dtype, D: Device<E>> Module<Tensor<S, E, D, NoneTape>> for $layer<$n> {
            type Output = Tensor<S, E, D, NoneTape>;
            type Error = D::Err;

            /// Inference: the identity.
            fn try_forward(&self, x: Tensor<S, E, D, NoneTape>) -> Result<Self::Output, D::Err> {
                Ok(x)
            }
        }

        #[cfg(not(feature = "cuda"))]
        impl<const $n: usize, S: Shape> ModuleMut<Tensor<S, f32, Cpu, OwnedTape<f32, Cpu>>> for $layer<$n> {
            type Output = Tensor<S, f32, Cpu, OwnedTape<f32, Cpu>>;
            type Error = CpuError;

            /// # Shapes
            /// Any shape, unchanged.
            fn try_forward_mut(
                &mut self,
                x: Tensor<S, f32, Cpu, OwnedTape<f32, Cpu>>,
            ) -> Result<Self::Output, CpuError> {
                let (x, mut tape) = x.split_tape();
                let (shape, seed) = (*x.shape(), draw_seed(x.device()));
                let (y, backward) = ops::dropout(flat(x), $p, seed)?;
                tape.add_backward_op(backward);
                Ok(y.try_reshape_like(&shape)?.put_tape(tape))
            }
        }

        #[cfg(feature = "cuda")]
        impl<const $n: usize, S: Shape, E: Dtype, D: Device<E>> ModuleMut<Tensor<S, E, D, OwnedTape<E, D>>>
            for $layer<$n>
        {
            type Output = Tensor<S, E, D, OwnedTape<E, D>>;
            type Error = D::Err;

            fn try_forward_mut(&mut self, x: Tensor<S, E, D, OwnedTape<E, D>>) -> Result<Self::Output, D::Err> {
                x.try_dropout($p)
            }
        }
    };
}
dropout_layer!(Dropout<PERCENT>, PERCENT as f64 / 100.0);
dropout_layer!(DropoutOneIn<N>, 1.0 / N as f64);

#[cfg(not(feature = "cuda"))]
thread_local! {
    static DRAWS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A mask's seed from the device's generator, counted: a checkpoint records how many were drawn, so a
/// resumed run can bring a fresh device's generator to the same point (dfdx keeps its state private).
#[cfg(not(feature = "cuda"))]
fn draw_seed(dev: &Cpu) -> u64 {
    use dfdx::tensor::RandomU64;
    DRAWS.with(|d| d.set(d.get() + 1));
    dev.random_u64()
}

/// The masks drawn on this thread since the last call.
#[cfg(not(feature = "cuda"))]
pub(crate) fn take_draws() -> u64 {
    DRAWS.with(|d| d.replace(0))
}
