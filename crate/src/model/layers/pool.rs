//! Pooling layers: `MaxPool2d`, `AvgPool2d` (any window and stride) and `GlobalAvgPool`. On the CPU
//! they run on `fashion_kernels::pool2d`; the reference pooling from dfdx operations (gather the
//! windows, reduce) serves the `cuda` feature and the tests.

#[cfg(not(feature = "cuda"))]
use super::super::ops::{self, flat, Pooling};
#[cfg(any(test, feature = "cuda"))]
use super::conv::{im2col_indices, out_size};
use dfdx::prelude::*;

/// `K×K` max-pooling every `S` pixels (Keras' `MaxPooling2D(pool_size=K, strides=S)`; `S` defaults to
/// `K`): `MaxPool2d<2>` halves an image, `MaxPool2d<3, 2>` is the overlapping pooling of AlexNet and
/// ResNet's stem. A trailing row/column that does not fill a window is dropped, as with
/// `padding="valid"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaxPool2d<const K: usize, const S: usize = K>;
impl<const K: usize, const S: usize> ZeroSizedModule for MaxPool2d<K, S> {}
impl<const K: usize, const S: usize> NonMutableModule for MaxPool2d<K, S> {}

/// `K×K` average-pooling every `S` pixels (Keras' `AveragePooling2D(pool_size=K, strides=S)`; `S`
/// defaults to `K`), as LeNet pools in d2l.ai.
#[derive(Debug, Clone, Copy, Default)]
pub struct AvgPool2d<const K: usize, const S: usize = K>;
impl<const K: usize, const S: usize> ZeroSizedModule for AvgPool2d<K, S> {}
impl<const K: usize, const S: usize> NonMutableModule for AvgPool2d<K, S> {}

/// The mean of each channel over the whole image: `(B, H, W, C)` → `(B, C)` (Keras'
/// `GlobalAveragePooling2D`), what a ResNet puts before its last dense layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct GlobalAvgPool;
impl ZeroSizedModule for GlobalAvgPool {}
impl NonMutableModule for GlobalAvgPool {}

#[cfg(any(test, feature = "cuda"))]
/// The pooling windows of `x` as dfdx operations: `(B·H'·W', K·K, C)`, then the output shape.
#[allow(clippy::type_complexity)] // dfdx shapes, spelled out
fn windows<B: Dim, H: Dim, W: Dim, C: Dim, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<(B, H, W, C), E, D, T>,
    k: usize,
    s: usize,
) -> Result<(Tensor<(usize, usize, C), E, D, T>, (B, usize, usize, C)), D::Err> {
    let (b, h, w, c) = *x.shape();
    let (ho, wo) = (out_size(h.size(), k, 0, s), out_size(w.size(), k, 0, s));
    let cells = b.size() * ho * wo;
    let idx = if cells == 0 { Vec::new() } else { im2col_indices(b.size(), (h.size(), w.size()), k, 0, s) };
    let idx = x.device().try_tensor_from_vec(idx, (cells * k * k,))?;
    let rows = x.try_reshape_like(&(b.size() * h.size() * w.size(), c))?;
    let picked: Tensor<(usize, C), E, D, T> = rows.try_gather(idx)?;
    Ok((picked.try_reshape_like(&(cells, k * k, c))?, (b, ho, wo, c)))
}

#[cfg(any(test, feature = "cuda"))]
/// Max- or average-pooling from dfdx operations, for any device.
#[allow(clippy::type_complexity)] // dfdx shapes, spelled out
pub(crate) fn reference_pool<B: Dim, H: Dim, W: Dim, C: Dim, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<(B, H, W, C), E, D, T>,
    (k, s): (usize, usize),
    max: bool,
) -> Result<Tensor<(B, usize, usize, C), E, D, T>, D::Err> {
    let (win, shape) = windows(x, k, s)?;
    let pooled: Tensor<(usize, C), E, D, T> =
        if max { win.try_max::<_, Axis<1>>()? } else { win.try_mean::<_, Axis<1>>()? };
    pooled.try_reshape_like(&shape)
}

macro_rules! pool_layer {
    ($layer:ident, $kind:ident, $max:expr) => {
        #[cfg(not(feature = "cuda"))]
        impl<const K: usize, const S: usize, B: Dim, H: Dim, W: Dim, C: Dim, T: Tape<f32, Cpu>>
            Module<Tensor<(B, H, W, C), f32, Cpu, T>> for $layer<K, S>
        {
            type Output = Tensor<(B, usize, usize, C), f32, Cpu, T>;
            type Error = CpuError;

            /// # Shapes
            /// `(B, H, W, C)` → `(B, (H-K)/S+1, (W-K)/S+1, C)`.
            fn try_forward(&self, x: Tensor<(B, H, W, C), f32, Cpu, T>) -> Result<Self::Output, CpuError> {
                use fashion_kernels::pool2d::PoolGeom;
                let (x, mut tape) = x.split_tape();
                let (b, h, w, c) = *x.shape();
                let g = PoolGeom { h: h.size(), w: w.size(), c: c.size(), k: K, s: S };
                let (ho, wo) = g.out_hw();
                let (y, backward) = ops::pool(flat(x), g, Pooling::$kind, T::OWNS_TAPE)?;
                if let Some(backward) = backward {
                    tape.add_backward_op(backward);
                }
                Ok(y.try_reshape_like(&(b, ho, wo, c))?.put_tape(tape))
            }
        }

        #[cfg(feature = "cuda")]
        impl<const K: usize, const S: usize, B: Dim, H: Dim, W: Dim, C: Dim, E: Dtype, D: Device<E>, T: Tape<E, D>>
            Module<Tensor<(B, H, W, C), E, D, T>> for $layer<K, S>
        {
            type Output = Tensor<(B, usize, usize, C), E, D, T>;
            type Error = D::Err;

            fn try_forward(&self, x: Tensor<(B, H, W, C), E, D, T>) -> Result<Self::Output, D::Err> {
                reference_pool(x, (K, S), $max)
            }
        }
    };
}
pool_layer!(MaxPool2d, Max, true);
pool_layer!(AvgPool2d, Average, false);

#[cfg(not(feature = "cuda"))]
impl<B: Dim, H: Dim, W: Dim, C: Dim, T: Tape<f32, Cpu>> Module<Tensor<(B, H, W, C), f32, Cpu, T>> for GlobalAvgPool {
    type Output = Tensor<(B, C), f32, Cpu, T>;
    type Error = CpuError;

    /// # Shapes
    /// `(B, H, W, C)` → `(B, C)`.
    fn try_forward(&self, x: Tensor<(B, H, W, C), f32, Cpu, T>) -> Result<Self::Output, CpuError> {
        let (x, mut tape) = x.split_tape();
        let (b, h, w, c) = *x.shape();
        let (y, backward) = ops::global_avg_pool(flat(x), (h.size() * w.size(), c.size()), T::OWNS_TAPE)?;
        if let Some(backward) = backward {
            tape.add_backward_op(backward);
        }
        Ok(y.try_reshape_like(&(b, c))?.put_tape(tape))
    }
}

#[cfg(feature = "cuda")]
impl<B: Dim, H: Dim, W: Dim, C: Dim, E: Dtype, D: Device<E>, T: Tape<E, D>> Module<Tensor<(B, H, W, C), E, D, T>>
    for GlobalAvgPool
{
    type Output = Tensor<(B, C), E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(B, H, W, C), E, D, T>) -> Result<Self::Output, D::Err> {
        reference_global_avg(x)
    }
}

#[cfg(any(test, feature = "cuda"))]
/// Global average pooling from dfdx operations, for any device.
#[allow(clippy::type_complexity)] // dfdx shapes, spelled out
pub(crate) fn reference_global_avg<B: Dim, H: Dim, W: Dim, C: Dim, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<(B, H, W, C), E, D, T>,
) -> Result<Tensor<(B, C), E, D, T>, D::Err> {
    let (b, h, w, c) = *x.shape();
    x.try_reshape_like(&(b, h.size() * w.size(), c))?.try_mean::<_, Axis<1>>()
}
