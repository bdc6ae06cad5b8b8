//! Pooling layers.

use dfdx::prelude::*;

/// `K×K` max-pooling with stride `K` (Keras' `MaxPooling2D((2, 2))`); a trailing row/column that does not
/// fill a window is dropped, as with `padding="valid"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaxPool2d<const K: usize>;
impl<const K: usize> ZeroSizedModule for MaxPool2d<K> {}
impl<const K: usize> NonMutableModule for MaxPool2d<K> {}

impl<const K: usize, B: Dim, H: Dim, W: Dim, C: Dim, E: Dtype, D: Device<E>, T: Tape<E, D>>
    Module<Tensor<(B, H, W, C), E, D, T>> for MaxPool2d<K>
{
    type Output = Tensor<(B, usize, usize, C), E, D, T>;
    type Error = D::Err;

    /// # Shapes
    /// `(B, H, W, C)` → `(B, H/K, W/K, C)` (integer division).
    fn try_forward(&self, x: Tensor<(B, H, W, C), E, D, T>) -> Result<Self::Output, D::Err> {
        let (b, h, w, c) = *x.shape();
        let (ho, wo) = (h.size() / K, w.size() / K);
        let x = if ho * K != h.size() || wo * K != w.size() {
            let s: Tensor<(B, usize, usize, C), E, D, T> = x.try_slice((.., ..ho * K, ..wo * K, ..))?;
            s.try_reshape_like(&(b, ho * K, wo * K, c))?
        } else {
            x.try_reshape_like(&(b, ho * K, wo * K, c))?
        };
        let windows = x.try_reshape_like(&(b, ho, Const::<K>, wo, Const::<K>, c))?;
        windows.try_max::<(B, usize, usize, C), Axes2<2, 4>>()
    }
}
