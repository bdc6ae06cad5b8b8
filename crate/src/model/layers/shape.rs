//! Layers that only change a tensor's shape: `Flatten`, `AddChannel`.

use dfdx::prelude::*;

/// `Flatten<N>`: `(batch, …)` → `(batch, N)`, like `keras.layers.Flatten`. `N` must be the number of
/// values per sample (784 for a 28×28 image); the type says it so the next `Linear<N, _>` fits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flatten<const N: usize>;
impl<const N: usize> ZeroSizedModule for Flatten<N> {}
impl<const N: usize> NonMutableModule for Flatten<N> {}

impl<const N: usize, S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>> Module<Tensor<S, E, D, T>> for Flatten<N> {
    type Output = Tensor<(usize, Const<N>), E, D, T>;
    type Error = D::Err;

    /// # Shapes
    /// `(B, d1, d2, …)` → `(B, N)` with `N = d1·d2·…`.
    fn try_forward(&self, x: Tensor<S, E, D, T>) -> Result<Self::Output, D::Err> {
        let batch = x.shape().concrete().into_iter().next().unwrap_or(0);
        x.try_reshape_like(&(batch, Const::<N>))
    }
}

/// `AddChannel`: grey images `(B, H, W)` → `(B, H, W, 1)`, what a convolution expects.
#[derive(Debug, Clone, Copy, Default)]
pub struct AddChannel;
impl ZeroSizedModule for AddChannel {}
impl NonMutableModule for AddChannel {}

impl<B: Dim, H: Dim, W: Dim, E: Dtype, D: Device<E>, T: Tape<E, D>> Module<Tensor<(B, H, W), E, D, T>> for AddChannel {
    type Output = Tensor<(B, H, W, Const<1>), E, D, T>;
    type Error = D::Err;

    /// # Shapes
    /// `(B, H, W)` → `(B, H, W, 1)`.
    fn try_forward(&self, x: Tensor<(B, H, W), E, D, T>) -> Result<Self::Output, D::Err> {
        let (b, h, w) = *x.shape();
        x.try_reshape_like(&(b, h, w, Const::<1>))
    }
}
