//! Batch normalization (Keras' `BatchNormalization`): over the last axis, so one layer serves a dense
//! layer's `(B, C)` output and a convolution's `(B, H, W, C)` images alike.

#[cfg(not(feature = "cuda"))]
use super::super::ops::{self, flat};
use dfdx::prelude::*;
use num_traits::Float;
use rand_distr::uniform::SampleUniform;

/// Keras' defaults: the running statistics move by `1 - MOMENTUM` of the batch's per step, and `EPS`
/// is added to the variance.
pub const MOMENTUM: f32 = 0.99;
pub const EPS: f32 = 1e-3;

/// Batch normalization of `C` channels (the last axis), Keras' `BatchNormalization()`:
/// `y = γ·(x - μ)/√(σ² + ε) + β` per channel.
///
/// - **While training** (`fit`), `μ` and `σ²` are the batch's own, and the running statistics move
///   towards them: `moving = 0.99·moving + 0.01·batch`.
/// - **At inference** (`evaluate`, `predict`, validation) the running statistics are used, so a
///   prediction does not depend on the rest of its batch — as dropout is off.
///
/// `gamma` (ones) and `beta` (zeros) are trained; `moving_mean` (zeros) and `moving_variance` (ones) are
/// not (the summary counts them as non-trainable), and all four are saved with the model.
#[derive(Debug, Clone)]
pub struct BatchNorm<const C: usize, E: Dtype, D: Storage<E>> {
    pub gamma: Tensor<Rank1<C>, E, D>,
    pub beta: Tensor<Rank1<C>, E, D>,
    pub moving_mean: Tensor<Rank1<C>, E, D>,
    pub moving_variance: Tensor<Rank1<C>, E, D>,
}

impl<const C: usize, E: Dtype, D: Device<E>> BuildOnDevice<D, E> for super::builders::BatchNorm<C>
where
    BatchNorm<C, E, D>: BuildModule<D, E>,
{
    type Built = BatchNorm<C, E, D>;
}

impl<const C: usize, E: Dtype + Float + SampleUniform, D: Device<E>> TensorCollection<E, D> for BatchNorm<C, E, D> {
    type To<E2: Dtype, D2: Device<E2>> = BatchNorm<C, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor("gamma", |s| &s.gamma, |s| &mut s.gamma, TensorOptions::reset_to_ones()),
                Self::tensor("beta", |s| &s.beta, |s| &mut s.beta, TensorOptions::reset_to_zeros()),
                Self::tensor(
                    "moving_mean",
                    |s| &s.moving_mean,
                    |s| &mut s.moving_mean,
                    TensorOptions::detached(|t| t.try_fill_with_zeros()),
                ),
                Self::tensor(
                    "moving_variance",
                    |s| &s.moving_variance,
                    |s| &mut s.moving_variance,
                    TensorOptions::detached(|t| t.try_fill_with_ones()),
                ),
            ),
            |(gamma, beta, moving_mean, moving_variance)| BatchNorm { gamma, beta, moving_mean, moving_variance },
        )
    }
}

#[cfg(not(feature = "cuda"))]
impl<const C: usize, S: Shape> Module<Tensor<S, f32, Cpu, NoneTape>> for BatchNorm<C, f32, Cpu> {
    type Output = Tensor<S, f32, Cpu, NoneTape>;
    type Error = CpuError;

    /// Inference, with the running statistics.
    ///
    /// # Shapes
    /// `(…, C)`, unchanged.
    fn try_forward(&self, x: Tensor<S, f32, Cpu, NoneTape>) -> Result<Self::Output, CpuError> {
        let shape = *x.shape();
        let (g, b) = (flat(self.gamma.clone()), flat(self.beta.clone()));
        let (m, v) = (flat(self.moving_mean.clone()), flat(self.moving_variance.clone()));
        ops::batch_norm_infer(flat(x), C, (&g, &b), (&m, &v), EPS)?.try_reshape_like(&shape)
    }
}

#[cfg(not(feature = "cuda"))]
impl<const C: usize, S: Shape> ModuleMut<Tensor<S, f32, Cpu, OwnedTape<f32, Cpu>>> for BatchNorm<C, f32, Cpu> {
    type Output = Tensor<S, f32, Cpu, OwnedTape<f32, Cpu>>;
    type Error = CpuError;

    /// Training, with the batch's statistics; updates the running ones.
    ///
    /// # Shapes
    /// `(…, C)`, unchanged.
    fn try_forward_mut(&mut self, x: Tensor<S, f32, Cpu, OwnedTape<f32, Cpu>>) -> Result<Self::Output, CpuError> {
        let (x, mut tape) = x.split_tape();
        let shape = *x.shape();
        let params = (flat(self.gamma.clone()), flat(self.beta.clone()));
        let (y, (mean, var), backward) = ops::batch_norm_train(flat(x), C, params, EPS, true)?;
        tape.add_backward_op(backward);
        for (moving, batch) in [(&mut self.moving_mean, mean), (&mut self.moving_variance, var)] {
            let mut m = vec![0f32; C];
            moving.copy_into(&mut m);
            m.iter_mut().zip(batch).for_each(|(m, b)| *m = MOMENTUM * *m + (1.0 - MOMENTUM) * b);
            moving.copy_from(&m);
        }
        Ok(y.try_reshape_like(&shape)?.put_tape(tape))
    }
}

/// The `(rows, C)` view of `x`, for the `cuda` feature's dfdx operations.
#[cfg(feature = "cuda")]
#[allow(clippy::type_complexity)] // dfdx shapes, spelled out
fn rows<S: Shape, const C: usize, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<S, E, D, T>,
) -> Result<Tensor<(usize, Const<C>), E, D, T>, D::Err> {
    let n = x.shape().num_elements() / C;
    x.try_reshape_like(&(n, Const::<C>))
}

#[cfg(feature = "cuda")]
impl<const C: usize, S: Shape, E: Dtype + Float, D: Device<E>> Module<Tensor<S, E, D, NoneTape>>
    for BatchNorm<C, E, D>
{
    type Output = Tensor<S, E, D, NoneTape>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<S, E, D, NoneTape>) -> Result<Self::Output, D::Err> {
        let shape = *x.shape();
        let x = rows::<S, C, E, D, NoneTape>(x)?;
        let n = x.shape().0;
        let eps = E::from_f32(EPS).unwrap();
        let std = self.moving_variance.clone().try_add(eps)?.try_sqrt()?;
        let y = x
            .try_sub(self.moving_mean.clone().try_broadcast_like(&(n, Const::<C>))?)?
            .try_div(std.try_broadcast_like(&(n, Const::<C>))?)?
            .try_mul(self.gamma.clone().try_broadcast_like(&(n, Const::<C>))?)?
            .try_add(self.beta.clone().try_broadcast_like(&(n, Const::<C>))?)?;
        y.try_reshape_like(&shape)
    }
}

#[cfg(feature = "cuda")]
impl<const C: usize, S: Shape, E: Dtype + Float, D: Device<E>> ModuleMut<Tensor<S, E, D, OwnedTape<E, D>>>
    for BatchNorm<C, E, D>
{
    type Output = Tensor<S, E, D, OwnedTape<E, D>>;
    type Error = D::Err;

    fn try_forward_mut(&mut self, x: Tensor<S, E, D, OwnedTape<E, D>>) -> Result<Self::Output, D::Err> {
        let shape = *x.shape();
        let x = rows::<S, C, E, D, OwnedTape<E, D>>(x)?;
        let n = x.shape().0;
        let mean: Tensor<Rank1<C>, E, D> = x.retaped::<NoneTape>().try_mean::<_, Axis<0>>()?;
        let var: Tensor<Rank1<C>, E, D> = x.retaped::<NoneTape>().try_var::<_, Axis<0>>()?;
        let m = MOMENTUM as f64;
        self.moving_mean.try_axpy(m, &mean, 1.0 - m)?;
        self.moving_variance.try_axpy(m, &var, 1.0 - m)?;
        let y = x.try_normalize::<Axis<0>>(EPS as f64)?;
        let y = y
            .try_mul(self.gamma.retaped::<OwnedTape<E, D>>().try_broadcast_like(&(n, Const::<C>))?)?
            .try_add(self.beta.retaped::<OwnedTape<E, D>>().try_broadcast_like(&(n, Const::<C>))?)?;
        y.try_reshape_like(&shape)
    }
}
