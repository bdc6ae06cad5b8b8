//! Residual connections (He et al., d2l.ai's `Residual`): `Residual<F>` is `x + F(x)`, and
//! `ResidualProjection<F, P>` is `P(x) + F(x)` for a block that changes the channels or the size (`P`
//! is then usually a 1×1 `Conv2d` with the block's stride). The blocks are any layers; the sum runs on
//! the CPU kernel `fashion_kernels::activation::add_into`.

#[cfg(not(feature = "cuda"))]
use super::super::ops::{self, flat};
use dfdx::prelude::*;

/// `x + F(x)`: `F` must keep the shape (say `(Conv2d<C, C, 3, 1>, BatchNorm<C>, ReLU, Conv2d<C, C, 3,
/// 1>, BatchNorm<C>)`).
#[derive(Debug, Clone, Default)]
pub struct Residual<F>(pub F);

/// `P(x) + F(x)`: the projection `P` brings `x` to the shape of `F(x)` (say `(Conv2d<C, 2C, 1, 0, 2>,
/// BatchNorm<2C>)` beside a stride-2 `F`).
#[derive(Debug, Clone, Default)]
pub struct ResidualProjection<F, P> {
    pub f: F,
    pub proj: P,
}

impl<F: BuildOnDevice<D, E>, D: Device<E>, E: Dtype> BuildOnDevice<D, E> for Residual<F> {
    type Built = Residual<F::Built>;
}

impl<F: BuildOnDevice<D, E>, P: BuildOnDevice<D, E>, D: Device<E>, E: Dtype> BuildOnDevice<D, E>
    for ResidualProjection<F, P>
{
    type Built = ResidualProjection<F::Built, P::Built>;
}

impl<E: Dtype, D: Device<E>, F: TensorCollection<E, D>> TensorCollection<E, D> for Residual<F> {
    type To<E2: Dtype, D2: Device<E2>> = Residual<F::To<E2, D2>>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(Self::module("0", |s| &s.0, |s| &mut s.0), Residual)
    }
}

impl<E: Dtype, D: Device<E>, F: TensorCollection<E, D>, P: TensorCollection<E, D>> TensorCollection<E, D>
    for ResidualProjection<F, P>
{
    type To<E2: Dtype, D2: Device<E2>> = ResidualProjection<F::To<E2, D2>, P::To<E2, D2>>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (Self::module("f", |s| &s.f, |s| &mut s.f), Self::module("proj", |s| &s.proj, |s| &mut s.proj)),
            |(f, proj)| ResidualProjection { f, proj },
        )
    }
}

/// `a + b` with one tape: the CPU kernel, or dfdx's `add` with the `cuda` feature. The shapes were
/// checked when the model was built (its summary); a mismatch here is dfdx's error.
#[cfg(not(feature = "cuda"))]
fn sum<S: Shape, T: Tape<f32, Cpu>>(
    a: Tensor<S, f32, Cpu>,
    b: Tensor<S, f32, Cpu, T>,
) -> Result<Tensor<S, f32, Cpu, T>, CpuError> {
    let (b, mut tape) = b.split_tape();
    let shape = *b.shape();
    let (y, backward) = ops::add(flat(a.try_reshape_like(&shape)?), flat(b), T::OWNS_TAPE)?;
    if let Some(backward) = backward {
        tape.add_backward_op(backward);
    }
    y.try_reshape_like(&shape).map(|y| y.put_tape(tape))
}

#[cfg(feature = "cuda")]
fn sum<S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    a: Tensor<S, E, D>,
    b: Tensor<S, E, D, T>,
) -> Result<Tensor<S, E, D, T>, D::Err> {
    b.try_add(a)
}

#[cfg(not(feature = "cuda"))]
type Dev = Cpu;
#[cfg(not(feature = "cuda"))]
type Elem = f32;

macro_rules! residual_impls {
    ($trait:ident, $method:ident, $($mut_:ident)?) => {
        #[cfg(not(feature = "cuda"))]
        impl<S: Shape, T: Tape<Elem, Dev>, F> $trait<Tensor<S, Elem, Dev, T>> for Residual<F>
        where
            F: $trait<Tensor<S, Elem, Dev, T>, Output = Tensor<S, Elem, Dev, T>, Error = CpuError>,
        {
            type Output = Tensor<S, Elem, Dev, T>;
            type Error = CpuError;

            /// # Shapes
            /// Those of `F`, which keeps its input's.
            fn $method(&$($mut_)? self, x: Tensor<S, Elem, Dev, T>) -> Result<Self::Output, CpuError> {
                let (x, tape) = x.split_tape();
                let fx = self.0.$method(x.clone().put_tape(tape))?;
                sum(x, fx)
            }
        }

        #[cfg(not(feature = "cuda"))]
        impl<S: Shape, S2: Shape, T: Tape<Elem, Dev>, F, P> $trait<Tensor<S, Elem, Dev, T>> for ResidualProjection<F, P>
        where
            F: $trait<Tensor<S, Elem, Dev, T>, Output = Tensor<S2, Elem, Dev, T>, Error = CpuError>,
            P: $trait<Tensor<S, Elem, Dev, T>, Output = Tensor<S2, Elem, Dev, T>, Error = CpuError>,
        {
            type Output = Tensor<S2, Elem, Dev, T>;
            type Error = CpuError;

            /// # Shapes
            /// Those of `F`; `P` gives the same.
            fn $method(&$($mut_)? self, x: Tensor<S, Elem, Dev, T>) -> Result<Self::Output, CpuError> {
                let (x, tape) = x.split_tape();
                let fx = self.f.$method(x.clone().put_tape(tape))?;
                let (fx, tape) = fx.split_tape();
                let px = self.proj.$method(x.put_tape(tape))?;
                sum(fx, px)
            }
        }

        #[cfg(feature = "cuda")]
        impl<S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>, F> $trait<Tensor<S, E, D, T>> for Residual<F>
        where
            F: $trait<Tensor<S, E, D, T>, Output = Tensor<S, E, D, T>, Error = D::Err>,
        {
            type Output = Tensor<S, E, D, T>;
            type Error = D::Err;

            fn $method(&$($mut_)? self, x: Tensor<S, E, D, T>) -> Result<Self::Output, D::Err> {
                let (x, tape) = x.split_tape();
                let fx = self.0.$method(x.clone().put_tape(tape))?;
                sum(x, fx)
            }
        }

        #[cfg(feature = "cuda")]
        impl<S: Shape, S2: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>, F, P> $trait<Tensor<S, E, D, T>>
            for ResidualProjection<F, P>
        where
            F: $trait<Tensor<S, E, D, T>, Output = Tensor<S2, E, D, T>, Error = D::Err>,
            P: $trait<Tensor<S, E, D, T>, Output = Tensor<S2, E, D, T>, Error = D::Err>,
        {
            type Output = Tensor<S2, E, D, T>;
            type Error = D::Err;

            fn $method(&$($mut_)? self, x: Tensor<S, E, D, T>) -> Result<Self::Output, D::Err> {
                let (x, tape) = x.split_tape();
                let fx = self.f.$method(x.clone().put_tape(tape))?;
                let (fx, tape) = fx.split_tape();
                let px = self.proj.$method(x.put_tape(tape))?;
                sum(fx, px)
            }
        }
    };
}
residual_impls!(Module, try_forward,);
residual_impls!(ModuleMut, try_forward_mut, mut);
