//! The layers networks are made of, as dfdx modules (so autodiff, the optimizers and safetensors see
//! them like any other): dfdx 0.13 has `Linear` and `DropoutOneIn` on stable Rust but its convolution
//! and pooling only behind its `nightly` feature (which no longer builds), and its own `Linear` runs on
//! dfdx's generic matmul, compiled unoptimised in a notebook cell. The reference `Conv2d` and
//! `MaxPool2d` are written from operations that work on stable Rust — gather, reshape, matmul, slice,
//! max.
//!
//! The layers a network is made of — [`Flatten`], [`Linear`], [`ReLU`], [`DropoutOneIn`], [`AddChannel`],
//! [`ConvReluPool`] — run on the CPU through the non-generic operations of [`super::ops`] and the
//! kernels of the `fashion_kernels` crate (`crate/kernels`) (convolution + ReLU + max-pool in one pass for the CNN's blocks), so a
//! network type written in a notebook cell trains at full speed. Their results are tested against dfdx's
//! `Linear` and against `(Conv2d, ReLU, MaxPool2d)` built from dfdx ops, themselves tested against
//! naive references. With the `cuda` feature they are dfdx operations.
//!
//! Images flow in NHWC layout (batch, height, width, channels), as in Keras.

#[cfg(not(feature = "cuda"))]
use super::ops::{self, flat};
#[cfg(test)]
use dfdx::optim::Sgd;
use dfdx::prelude::*;
use num_traits::Float;
use rand_distr::uniform::SampleUniform;
use rand_distr::Uniform;

/// Builders: the types you write in an architecture (no dtype, no device).
pub mod builders {
    /// K×K convolution, stride 1, `P` pixels of zero padding on each side: `P = 0` is Keras'
    /// `padding="valid"`, `P = (K - 1) / 2` its `padding="same"`.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Conv2d<const IN: usize, const OUT: usize, const K: usize, const P: usize = 0>;
    /// [`Conv2d<IN, OUT, K, P>`](Conv2d), ReLU and `POOL×POOL` max-pooling as one layer.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct ConvReluPool<const IN: usize, const OUT: usize, const K: usize, const P: usize, const POOL: usize>;
    /// Fully connected layer `I → O` (Keras' `Dense`).
    #[cfg(not(feature = "cuda"))]
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Linear<const I: usize, const O: usize>;
    pub use super::{AddChannel, DropoutOneIn, Flatten, MaxPool2d, ReLU};
    #[cfg(feature = "cuda")]
    pub use dfdx::nn::builders::Linear;
}

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

/// `DropoutOneIn<N>`: while training, zeroes each value with probability `1/N` and scales the others
/// by `N/(N-1)`; at inference it does nothing (Keras' `Dropout(1/N)`). `DropoutOneIn<2>` is
/// `Dropout(0.5)`, `DropoutOneIn<5>` is `Dropout(0.2)`. The mask is drawn from the device's seeded
/// generator, so a seed still fixes a whole training run.
#[derive(Debug, Clone, Copy, Default)]
pub struct DropoutOneIn<const N: usize>;
impl<const N: usize> ZeroSizedModule for DropoutOneIn<N> {}

impl<const N: usize, S: Shape, E: Dtype, D: Device<E>> Module<Tensor<S, E, D, NoneTape>> for DropoutOneIn<N> {
    type Output = Tensor<S, E, D, NoneTape>;
    type Error = D::Err;

    /// Inference: the identity.
    fn try_forward(&self, x: Tensor<S, E, D, NoneTape>) -> Result<Self::Output, D::Err> {
        Ok(x)
    }
}

#[cfg(not(feature = "cuda"))]
impl<const N: usize, S: Shape> ModuleMut<Tensor<S, f32, Cpu, OwnedTape<f32, Cpu>>> for DropoutOneIn<N> {
    type Output = Tensor<S, f32, Cpu, OwnedTape<f32, Cpu>>;
    type Error = CpuError;

    /// # Shapes
    /// Any shape, unchanged.
    fn try_forward_mut(&mut self, x: Tensor<S, f32, Cpu, OwnedTape<f32, Cpu>>) -> Result<Self::Output, CpuError> {
        use dfdx::tensor::RandomU64;
        let (x, mut tape) = x.split_tape();
        let (shape, seed) = (*x.shape(), x.device().random_u64());
        let (y, backward) = ops::dropout(flat(x), 1.0 / N as f64, seed)?;
        tape.add_backward_op(backward);
        Ok(y.try_reshape_like(&shape)?.put_tape(tape))
    }
}

#[cfg(feature = "cuda")]
impl<const N: usize, S: Shape, E: Dtype, D: Device<E>> ModuleMut<Tensor<S, E, D, OwnedTape<E, D>>> for DropoutOneIn<N> {
    type Output = Tensor<S, E, D, OwnedTape<E, D>>;
    type Error = D::Err;

    fn try_forward_mut(&mut self, x: Tensor<S, E, D, OwnedTape<E, D>>) -> Result<Self::Output, D::Err> {
        x.try_dropout(1.0 / N as f64)
    }
}

/// A 2-d convolution with `IN` input channels, `OUT` filters of size `K×K`, stride 1, `P` pixels of
/// zero padding on each side, plus a bias per filter.
///
/// The kernel is stored as `(K, K, IN, OUT)` — Keras' layout — so that it *is* the `(K·K·IN, OUT)`
/// matrix of the "im2col" formulation: each output pixel gathers its `K·K·IN` input values into one row
/// and the whole layer is a single matrix multiply.
#[derive(Debug, Clone)]
pub struct Conv2d<const IN: usize, const OUT: usize, const K: usize, const P: usize, E: Dtype, D: Storage<E>> {
    /// Shape `(K, K, IN, OUT)`.
    pub weight: Tensor<(Const<K>, Const<K>, Const<IN>, Const<OUT>), E, D>,
    /// Shape `(OUT,)`.
    pub bias: Tensor<Rank1<OUT>, E, D>,
}

impl<const IN: usize, const OUT: usize, const K: usize, const P: usize, E: Dtype, D: Device<E>> BuildOnDevice<D, E>
    for builders::Conv2d<IN, OUT, K, P>
where
    Conv2d<IN, OUT, K, P, E, D>: BuildModule<D, E>,
{
    type Built = Conv2d<IN, OUT, K, P, E, D>;
}

impl<const IN: usize, const OUT: usize, const K: usize, const P: usize, E: Dtype, D: Storage<E>> NonMutableModule
    for Conv2d<IN, OUT, K, P, E, D>
{
}

impl<const IN: usize, const OUT: usize, const K: usize, const P: usize, E, D> TensorCollection<E, D>
    for Conv2d<IN, OUT, K, P, E, D>
where
    E: Dtype + Float + SampleUniform,
    D: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = Conv2d<IN, OUT, K, P, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor("weight", |s| &s.weight, |s| &mut s.weight, keras_init()),
                Self::tensor("bias", |s| &s.bias, |s| &mut s.bias, keras_init()),
            ),
            |(weight, bias)| Conv2d { weight, bias },
        )
    }
}

/// Row indices that turn the `(B·H·W, C)` rows of an image batch into `(B·H'·W'·K·K, C)` patch rows
/// (im2col), for `p` pixels of zero padding: a position in the padding points at row `B·H·W`, which
/// the caller appends as a row of zeros.
pub(crate) fn im2col_indices(b: usize, h: usize, w: usize, k: usize, p: usize) -> Vec<usize> {
    let (ho, wo) = ((h + 2 * p + 1).saturating_sub(k), (w + 2 * p + 1).saturating_sub(k));
    let zero = b * h * w;
    let mut idx = Vec::with_capacity(b * ho * wo * k * k);
    for n in 0..b {
        for i in 0..ho {
            for j in 0..wo {
                for di in 0..k {
                    for dj in 0..k {
                        let (r, c) = ((i + di).wrapping_sub(p), (j + dj).wrapping_sub(p));
                        idx.push(if r < h && c < w { (n * h + r) * w + c } else { zero });
                    }
                }
            }
        }
    }
    idx
}

impl<const IN: usize, const OUT: usize, const K: usize, const P: usize, B: Dim, H: Dim, W: Dim, E, D, T>
    Module<Tensor<(B, H, W, Const<IN>), E, D, T>> for Conv2d<IN, OUT, K, P, E, D>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
{
    type Output = Tensor<(B, usize, usize, Const<OUT>), E, D, T>;
    type Error = D::Err;

    /// # Shapes
    /// `(B, H, W, IN)` → `(B, H+2P-K+1, W+2P-K+1, OUT)`. Inputs smaller than the kernel give an empty
    /// output.
    fn try_forward(&self, x: Tensor<(B, H, W, Const<IN>), E, D, T>) -> Result<Self::Output, D::Err> {
        let (b, h, w, _) = *x.shape();
        let (nb, nh, nw) = (b.size(), h.size(), w.size());
        let (ho, wo) = ((nh + 2 * P + 1).saturating_sub(K), (nw + 2 * P + 1).saturating_sub(K));
        let pixels = nb * ho * wo;
        let idx = if pixels == 0 { Vec::new() } else { im2col_indices(nb, nh, nw, K, P) };
        let idx = x.device().try_tensor_from_vec(idx, (pixels * K * K,))?;
        // (B, H, W, IN) → rows (B·H·W [+ a zero row], IN) → patch rows (B·H'·W'·K·K, IN)
        // → patches (B·H'·W', K·K·IN)
        let rows = x.try_reshape_like(&(nb * nh * nw, Const::<IN>))?;
        let rows = if P > 0 {
            let zero: Tensor<(usize, Const<IN>), E, D> = rows.device().try_zeros_like(&(1, Const))?;
            (rows, zero).try_concat_along(Axis::<0>)?
        } else {
            rows
        };
        let patches: Tensor<(usize, Const<IN>), E, D, T> = rows.try_gather(idx)?;
        let patches = patches.try_reshape_like(&(pixels, K * K * IN))?;
        let kernel = self.weight.retaped::<T>().try_reshape_like(&(K * K * IN, Const::<OUT>))?;
        let y = patches.try_matmul(kernel)?;
        let y = y.try_add(self.bias.retaped::<T>().try_broadcast_like(&(pixels, Const::<OUT>))?)?;
        y.try_reshape_like(&(b, ho, wo, Const::<OUT>))
    }
}

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

/// Fully connected layer `I → O`, `y = x·Wᵀ + b` (Keras' `Dense`): dfdx's `Linear` (same weight layout
/// `(O, I)`, same safetensors names) with its own CPU kernel. When it is a network's first layer its
/// input is data, nothing needs that gradient, and [`Model`](crate::train::Model) sets
/// `input_is_data` so backward skips it — a third of the MLP's arithmetic.
#[cfg(not(feature = "cuda"))]
#[derive(Debug, Clone)]
pub struct Linear<const I: usize, const O: usize, E: Dtype, D: Storage<E>> {
    /// Shape `(O, I)`.
    pub weight: Tensor<Rank2<O, I>, E, D>,
    /// Shape `(O,)`.
    pub bias: Tensor<Rank1<O>, E, D>,
    /// Skip the input gradient (set on a network's first layer).
    pub input_is_data: bool,
}

#[cfg(not(feature = "cuda"))]
impl<const I: usize, const O: usize, E: Dtype, D: Device<E>> BuildOnDevice<D, E> for builders::Linear<I, O>
where
    Linear<I, O, E, D>: BuildModule<D, E>,
{
    type Built = Linear<I, O, E, D>;
}

#[cfg(not(feature = "cuda"))]
impl<const I: usize, const O: usize, E: Dtype, D: Storage<E>> NonMutableModule for Linear<I, O, E, D> {}

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

#[cfg(not(feature = "cuda"))]
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

#[cfg(not(feature = "cuda"))]
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

/// `Conv2d<IN, OUT, K, P>` → ReLU → `POOL×POOL` max-pool (stride `POOL`, floor), as one layer: Keras'
/// `Conv2D(OUT, K, activation="relu")` followed by `MaxPooling2D(POOL)`. Parameters and their layout are
/// those of [`Conv2d`] (kernel `(K, K, IN, OUT)`, bias `(OUT,)`).
///
/// On the CPU the three steps run as one kernel per group of images and core: the convolution (Winograd
/// F(4×4, 3×3) for 3×3 "same" kernels over several channels, otherwise im2col + one matrix product), then
/// bias, ReLU and pooling in one pass; backward finds each window's maximum again. A 3×3 kernel over one
/// input channel is computed directly, window by window, and keeps the position of each maximum. With
/// the `cuda` feature it is `MaxPool2d(relu(Conv2d(x)))` from dfdx ops.
#[derive(Debug, Clone)]
pub struct ConvReluPool<
    const IN: usize,
    const OUT: usize,
    const K: usize,
    const P: usize,
    const POOL: usize,
    E: Dtype,
    D: Storage<E>,
> {
    /// Shape `(K, K, IN, OUT)`.
    pub weight: Tensor<(Const<K>, Const<K>, Const<IN>, Const<OUT>), E, D>,
    /// Shape `(OUT,)`.
    pub bias: Tensor<Rank1<OUT>, E, D>,
    /// Skip the input gradient (set on a network's first layer).
    pub input_is_data: bool,
}

impl<const IN: usize, const OUT: usize, const K: usize, const P: usize, const POOL: usize, E: Dtype, D: Device<E>>
    BuildOnDevice<D, E> for builders::ConvReluPool<IN, OUT, K, P, POOL>
where
    ConvReluPool<IN, OUT, K, P, POOL, E, D>: BuildModule<D, E>,
{
    type Built = ConvReluPool<IN, OUT, K, P, POOL, E, D>;
}

impl<const IN: usize, const OUT: usize, const K: usize, const P: usize, const POOL: usize, E: Dtype, D: Storage<E>>
    NonMutableModule for ConvReluPool<IN, OUT, K, P, POOL, E, D>
{
}

impl<const IN: usize, const OUT: usize, const K: usize, const P: usize, const POOL: usize, E, D> TensorCollection<E, D>
    for ConvReluPool<IN, OUT, K, P, POOL, E, D>
where
    E: Dtype + Float + SampleUniform,
    D: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = ConvReluPool<IN, OUT, K, P, POOL, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor("weight", |s| &s.weight, |s| &mut s.weight, keras_init()),
                Self::tensor("bias", |s| &s.bias, |s| &mut s.bias, keras_init()),
            ),
            |(weight, bias)| ConvReluPool { weight, bias, input_is_data: false },
        )
    }
}

#[cfg(not(feature = "cuda"))]
impl<
        const IN: usize,
        const OUT: usize,
        const K: usize,
        const P: usize,
        const POOL: usize,
        B: Dim,
        H: Dim,
        W: Dim,
        T,
    > Module<Tensor<(B, H, W, Const<IN>), f32, Cpu, T>> for ConvReluPool<IN, OUT, K, P, POOL, f32, Cpu>
where
    T: Tape<f32, Cpu>,
{
    type Output = Tensor<(B, usize, usize, Const<OUT>), f32, Cpu, T>;
    type Error = CpuError;

    /// # Shapes
    /// `(B, H, W, IN)` → `(B, (H+2P-K+1)/POOL, (W+2P-K+1)/POOL, OUT)`.
    fn try_forward(&self, x: Tensor<(B, H, W, Const<IN>), f32, Cpu, T>) -> Result<Self::Output, CpuError> {
        use fashion_kernels::conv::ConvGeom;
        let (x, mut tape) = x.split_tape();
        let (b, h, w, _) = *x.shape();
        let g = ConvGeom { h: h.size(), w: w.size(), cin: IN, cout: OUT, k: K, p: P, pool: POOL };
        let (hp, wp) = g.out_hw();
        let (kernel, bias) = (flat(self.weight.clone()), flat(self.bias.clone()));
        let (y, backward) = ops::conv_relu_pool(
            flat(x),
            (g, b.size()),
            kernel,
            bias,
            ops::Grads::of(T::OWNS_TAPE, self.input_is_data),
        )?;
        if let Some(backward) = backward {
            tape.add_backward_op(backward);
        }
        Ok(y.try_reshape_like(&(b, hp, wp, Const::<OUT>))?.put_tape(tape))
    }
}

#[cfg(feature = "cuda")]
impl<
        const IN: usize,
        const OUT: usize,
        const K: usize,
        const P: usize,
        const POOL: usize,
        B: Dim,
        H: Dim,
        W: Dim,
        E,
        D,
        T,
    > Module<Tensor<(B, H, W, Const<IN>), E, D, T>> for ConvReluPool<IN, OUT, K, P, POOL, E, D>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
{
    type Output = Tensor<(B, usize, usize, Const<OUT>), E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(B, H, W, Const<IN>), E, D, T>) -> Result<Self::Output, D::Err> {
        let conv = Conv2d::<IN, OUT, K, P, E, D> { weight: self.weight.clone(), bias: self.bias.clone() };
        MaxPool2d::<POOL>.try_forward(conv.try_forward(x)?.try_relu()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Dev = Cpu;

    /// Naive reference: direct 4-loop convolution in f64 of `(b, h, w, cin)` NHWC images.
    fn naive_conv(x: &[f32], dims: (usize, usize, usize, usize), kern: &[f32], bias: &[f32], k: usize) -> Vec<f64> {
        naive_conv_p(x, dims, kern, bias, k, 0)
    }

    /// Naive reference with `p` pixels of zero padding.
    fn naive_conv_p(
        x: &[f32],
        (b, h, w, cin): (usize, usize, usize, usize),
        kern: &[f32],
        bias: &[f32],
        k: usize,
        p: usize,
    ) -> Vec<f64> {
        let cout = bias.len();
        let (ho, wo) = (h + 2 * p - k + 1, w + 2 * p - k + 1);
        let mut out = vec![0f64; b * ho * wo * cout];
        for n in 0..b {
            for i in 0..ho {
                for j in 0..wo {
                    for o in 0..cout {
                        let mut acc = bias[o] as f64;
                        for di in 0..k {
                            for dj in 0..k {
                                let (r, col) = ((i + di).wrapping_sub(p), (j + dj).wrapping_sub(p));
                                if r >= h || col >= w {
                                    continue;
                                }
                                for c in 0..cin {
                                    let xv = x[((n * h + r) * w + col) * cin + c] as f64;
                                    let kv = kern[((di * k + dj) * cin + c) * cout + o] as f64;
                                    acc += xv * kv;
                                }
                            }
                        }
                        out[((n * ho + i) * wo + j) * cout + o] = acc;
                    }
                }
            }
        }
        out
    }

    fn naive_pool(x: &[f32], b: usize, h: usize, w: usize, c: usize, k: usize) -> Vec<f32> {
        let (ho, wo) = (h / k, w / k);
        let mut out = vec![f32::MIN; b * ho * wo * c];
        for n in 0..b {
            for i in 0..ho * k {
                for j in 0..wo * k {
                    for ch in 0..c {
                        let o = &mut out[((n * ho + i / k) * wo + j / k) * c + ch];
                        *o = o.max(x[((n * h + i) * w + j) * c + ch]);
                    }
                }
            }
        }
        out
    }

    fn close(a: &[f32], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((*x as f64 - y).abs() <= tol * (1.0 + y.abs()), "index {i}: {x} vs {y}");
        }
    }

    /// Like [`close`], against the largest magnitude of `b`: for sums whose terms cancel (a kernel
    /// gradient summed over thousands of pixels), whose rounding is that of the terms, not of the result.
    fn close_scaled(a: &[f32], b: &[f64], tol: f64) {
        let scale = 1.0 + b.iter().fold(0f64, |m, y| m.max(y.abs()));
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((*x as f64 - y).abs() <= tol * scale, "index {i}: {x} vs {y} (scale {scale})");
        }
    }

    #[test]
    fn conv_forward_matches_naive_reference() {
        let dev = Dev::seed_from_u64(1);
        let conv = dev.build_module::<builders::Conv2d<3, 4, 3>, f32>();
        let x: Tensor<(usize, usize, usize, Const<3>), f32, Dev> = dev.sample_normal_like(&(2, 7, 6, Const));
        let y = conv.forward(x.clone());
        assert_eq!(y.shape().concrete(), [2, 5, 4, 4]);
        let want = naive_conv(&x.as_vec(), (2, 7, 6, 3), &conv.weight.as_vec(), &conv.bias.as_vec(), 3);
        close(&y.as_vec(), &want, 1e-5);
    }

    #[test]
    fn padded_conv_forward_and_gradients_match_naive_reference() {
        let dev = Dev::seed_from_u64(5);
        let conv = dev.build_module::<builders::Conv2d<2, 3, 3, 1>, f32>();
        let x: Tensor<(usize, usize, usize, Const<2>), f32, Dev> = dev.sample_normal_like(&(2, 5, 4, Const));
        let y = conv.forward(x.clone());
        assert_eq!(y.shape().concrete(), [2, 5, 4, 3], "same padding keeps the size");
        let (xv, wv, bv) = (x.as_vec(), conv.weight.as_vec(), conv.bias.as_vec());
        close(&y.as_vec(), &naive_conv_p(&xv, (2, 5, 4, 2), &wv, &bv, 3, 1), 1e-5);
        // Input gradient of sum(conv(x)) against central differences.
        let g = conv.forward(x.clone().traced(Gradients::leaky())).sum::<Rank0, _>().backward();
        let gx = g.get(&x).as_vec();
        let f = |v: &[f32]| -> f64 { naive_conv_p(v, (2, 5, 4, 2), &wv, &bv, 3, 1).iter().sum() };
        let num: Vec<f64> = (0..xv.len())
            .map(|i| {
                let (mut a, mut b) = (xv.clone(), xv.clone());
                a[i] += 1e-2;
                b[i] -= 1e-2;
                (f(&a) - f(&b)) / 2e-2
            })
            .collect();
        close(&gx, &num, 1e-3);
    }

    #[test]
    fn pool_forward_matches_naive_reference_including_odd_sizes() {
        let dev = Dev::seed_from_u64(2);
        for (h, w) in [(4, 6), (11, 11), (5, 3)] {
            let x: Tensor<(usize, usize, usize, Const<3>), f32, Dev> = dev.sample_normal_like(&(2, h, w, Const));
            let y = MaxPool2d::<2>.forward(x.clone());
            assert_eq!(y.shape().concrete(), [2, h / 2, w / 2, 3]);
            let want = naive_pool(&x.as_vec(), 2, h, w, 3, 2);
            assert_eq!(y.as_vec(), want);
        }
    }

    /// Gradients of `sum(conv(x) * r)` w.r.t. input, kernel and bias, against central differences.
    #[test]
    fn conv_gradients_match_numerical_gradients() {
        let dev = Dev::seed_from_u64(3);
        let mut conv = dev.build_module::<builders::Conv2d<2, 3, 3>, f32>();
        let shape = (2, 5, 4, Const::<2>);
        let x: Tensor<(usize, usize, usize, Const<2>), f32, Dev> = dev.sample_normal_like(&shape);
        let r: Tensor<(usize, usize, usize, Const<3>), f32, Dev> = dev.sample_normal_like(&(2, 3, 2, Const));
        // Analytical.
        let xt = x.clone().traced(Gradients::leaky());
        let loss = (conv.forward(xt) * r.clone()).sum::<Rank0, _>();
        let grads = loss.backward();
        let gx = grads.get(&x).as_vec();
        let gw = grads.get(&conv.weight).as_vec();
        let gb = grads.get(&conv.bias).as_vec();
        // Numerical (f64 reference conv, so differences are exact up to rounding of inputs).
        let f = |xv: &[f32], wv: &[f32], bv: &[f32]| -> f64 {
            naive_conv(xv, (2, 5, 4, 2), wv, bv, 3).iter().zip(r.as_vec()).map(|(a, b)| a * b as f64).sum()
        };
        let (xv, wv, bv) = (x.as_vec(), conv.weight.as_vec(), conv.bias.as_vec());
        let eps = 1e-2f32;
        let num = |which: usize, i: usize| {
            let (mut a, mut b, mut c) = (xv.clone(), wv.clone(), bv.clone());
            let (mut a2, mut b2, mut c2) = (xv.clone(), wv.clone(), bv.clone());
            match which {
                0 => {
                    a[i] += eps;
                    a2[i] -= eps;
                }
                1 => {
                    b[i] += eps;
                    b2[i] -= eps;
                }
                _ => {
                    c[i] += eps;
                    c2[i] -= eps;
                }
            }
            (f(&a, &b, &c) - f(&a2, &b2, &c2)) / (2.0 * eps as f64)
        };
        let gx_num: Vec<f64> = (0..xv.len()).map(|i| num(0, i)).collect();
        let gw_num: Vec<f64> = (0..wv.len()).map(|i| num(1, i)).collect();
        let gb_num: Vec<f64> = (0..bv.len()).map(|i| num(2, i)).collect();
        close(&gx, &gx_num, 1e-3);
        close(&gw, &gw_num, 1e-3);
        close(&gb, &gb_num, 1e-3);
        // The optimizer sees the parameters.
        let mut sgd = Sgd::new(&conv, SgdConfig { lr: 0.1, momentum: None, weight_decay: None });
        let before = conv.weight.as_vec();
        sgd.update(&mut conv, &grads).unwrap();
        assert_ne!(before, conv.weight.as_vec());
    }

    #[test]
    fn pool_gradient_goes_to_the_window_maximum() {
        let dev = Dev::seed_from_u64(4);
        let x: Tensor<(usize, usize, usize, Const<1>), f32, Dev> =
            dev.tensor_from_vec(vec![1., 5., 2., 0., 3., 4., 9., 8., 7.], (1, 3, 3, Const));
        let y = MaxPool2d::<2>.forward(x.leaky_trace());
        assert_eq!(y.as_vec(), vec![5.0]);
        let g = y.sum::<Rank0, _>().backward();
        assert_eq!(g.get(&x).as_vec(), vec![0., 1., 0., 0., 0., 0., 0., 0., 0.]);
    }

    /// The fused CPU layer against `(Conv2d, ReLU, MaxPool2d)` from dfdx ops (itself checked against the
    /// naive references above): outputs and the gradients of input, kernel and bias of `n` images;
    /// then 40 images a row and a column smaller without a tape (inference goes in chunks). Outputs
    /// within `tol` (relative, plus `tol` absolute), the input gradient within 1e-4, the kernel and bias
    /// gradients within 1e-5 of their largest value.
    fn check_fused<const IN: usize, const OUT: usize, const P: usize>(
        seed: u64,
        (h, w): (usize, usize),
        n: usize,
        tol: f64,
    ) {
        let dev = Dev::seed_from_u64(seed);
        let fused = dev.build_module::<builders::ConvReluPool<IN, OUT, 3, P, 2>, f32>();
        let conv = Conv2d::<IN, OUT, 3, P, f32, Dev> { weight: fused.weight.clone(), bias: fused.bias.clone() };
        let reference = |x| MaxPool2d::<2>.forward(conv.forward(x).relu());
        let reference_traced = |x| MaxPool2d::<2>.forward(conv.forward(x).relu());
        let f64s = |t: Vec<f32>| t.iter().map(|&v| v as f64).collect::<Vec<_>>();
        let x: Tensor<(usize, usize, usize, Const<IN>), f32, Dev> = dev.sample_normal_like(&(n, h, w, Const));
        let y = fused.forward(x.clone());
        let (ho, wo) = ((h + 2 * P - 2) / 2, (w + 2 * P - 2) / 2);
        assert_eq!(y.shape().concrete(), [n, ho, wo, OUT]);
        close(&y.as_vec(), &f64s(reference(x.clone()).as_vec()), tol);

        // The gradient of `sum(y · r)`. Where a window's two largest values (or its maximum and 0, for
        // ReLU) are within rounding of each other, which one the gradient goes to depends on the last
        // bits of the convolution: there `r` is 0, so both layers' choices give the same gradients.
        let pre = naive_conv_p(&x.as_vec(), (n, h, w, IN), &fused.weight.as_vec(), &fused.bias.as_vec(), 3, P);
        let (hc, wc) = (h + 2 * P - 2, w + 2 * P - 2);
        let mut rv: Vec<f32> = dev.sample_normal_like(&(n, ho, wo, Const::<OUT>)).as_vec();
        for (cell, r) in rv.iter_mut().enumerate() {
            let (o, j, i, b) = (cell % OUT, cell / OUT % wo, cell / OUT / wo % ho, cell / OUT / wo / ho);
            let mut window: Vec<f64> =
                (0..4).map(|k| pre[((b * hc + 2 * i + k / 2) * wc + 2 * j + k % 2) * OUT + o]).collect();
            window.sort_by(|p, q| q.total_cmp(p));
            if window[0] - window[1] < 1e-3 || window[0].abs() < 1e-3 {
                *r = 0.0;
            }
        }
        let r: Tensor<(usize, usize, usize, Const<OUT>), f32, Dev> = dev.tensor_from_vec(rv, (n, ho, wo, Const));
        let g1 = (fused.forward(x.leaky_trace()) * r.clone()).sum::<Rank0, _>().backward();
        let g2 = (reference_traced(x.leaky_trace()) * r.clone()).sum::<Rank0, _>().backward();
        close(&g1.get(&x).as_vec(), &f64s(g2.get(&x).as_vec()), 1e-4);
        close_scaled(&g1.get(&fused.weight).as_vec(), &f64s(g2.get(&fused.weight).as_vec()), 1e-5);
        close_scaled(&g1.get(&fused.bias).as_vec(), &f64s(g2.get(&fused.bias).as_vec()), 1e-5);

        let many: Tensor<(usize, usize, usize, Const<IN>), f32, Dev> =
            dev.sample_normal_like(&(40, h - 1, w - 1, Const));
        let want = f64s(reference(many.clone()).as_vec());
        close(&fused.forward(many).as_vec(), &want, tol);
    }

    /// "Same" padding with several input channels: the Winograd kernels, on odd sizes (a dropped row
    /// and column, blocks overhanging the image), and on the CNN's second layer with 21 images: groups
    /// of 16 and 5, steps of 8, 8 and 5. F(4×4, 3×3) rounds more than a direct sum (its transforms
    /// scale by up to 8 and divide by 24): about 2e-5 on values near 1 here, so the bound is 1e-4.
    #[test]
    fn fused_conv_relu_pool_matches_the_composed_layers_winograd() {
        check_fused::<3, 4, 1>(6, (7, 9), 5, 1e-4);
        check_fused::<32, 64, 1>(11, (14, 14), 21, 1e-4);
    }

    /// No padding: the im2col kernels.
    #[test]
    fn fused_conv_relu_pool_matches_the_composed_layers_im2col() {
        check_fused::<2, 3, 0>(9, (8, 9), 5, 1e-5);
    }

    /// One input channel: the direct kernels, with and without padding, on odd sizes, and on the CNN's
    /// first layer with 21 images (channels in blocks of 16 and one at a time).
    #[test]
    fn fused_conv_relu_pool_matches_the_composed_layers_direct() {
        check_fused::<1, 3, 1>(10, (7, 6), 5, 1e-5);
        check_fused::<1, 5, 0>(12, (9, 8), 3, 1e-5);
        check_fused::<1, 32, 1>(13, (28, 28), 21, 1e-5);
        check_fused::<1, 17, 1>(14, (6, 6), 2, 1e-5);
    }

    /// True when backward allocated no gradient for `t` (dfdx's `get` panics then).
    fn no_gradient<S: Shape>(g: &Gradients<f32, Dev>, t: &Tensor<S, f32, Dev>) -> bool {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.get(t))).is_err()
    }

    /// On a network's first layer the input gradient is skipped; the parameter gradients are unchanged.
    #[test]
    fn input_is_data_skips_only_the_input_gradient() {
        let dev = Dev::seed_from_u64(7);
        let mut fused = dev.build_module::<builders::ConvReluPool<1, 2, 3, 1, 2>, f32>();
        let x: Tensor<(usize, usize, usize, Const<1>), f32, Dev> = dev.sample_normal_like(&(3, 4, 4, Const));
        let g1 = fused.forward(x.leaky_trace()).sum::<Rank0, _>().backward();
        fused.input_is_data = true;
        let g2 = fused.forward(x.leaky_trace()).sum::<Rank0, _>().backward();
        assert_eq!(g1.get(&fused.weight).as_vec(), g2.get(&fused.weight).as_vec());
        assert_eq!(g1.get(&fused.bias).as_vec(), g2.get(&fused.bias).as_vec());
        assert!(g1.get(&x).as_vec().iter().any(|&v| v != 0.0));
        assert!(no_gradient(&g2, &x), "no gradient is computed for the data");
    }

    /// Our `Linear` against dfdx's (same weights): output and all gradients, with and without
    /// `input_is_data`.
    #[test]
    fn linear_matches_dfdx_linear() {
        let dev = Dev::seed_from_u64(8);
        let mut ours = dev.build_module::<builders::Linear<6, 4>, f32>();
        let mut theirs = dev.build_module::<dfdx::nn::builders::Linear<6, 4>, f32>();
        theirs.weight = ours.weight.clone();
        theirs.bias = ours.bias.clone();
        let x: Tensor<(usize, Const<6>), f32, Dev> = dev.sample_normal_like(&(5, Const));
        let r: Tensor<(usize, Const<4>), f32, Dev> = dev.sample_normal_like(&(5, Const));
        let want: Vec<f64> = theirs.forward(x.clone()).as_vec().iter().map(|&v| v as f64).collect();
        close(&ours.forward(x.clone()).as_vec(), &want, 1e-6);
        let g1 = (ours.forward(x.leaky_trace()) * r.clone()).sum::<Rank0, _>().backward();
        let g2 = (theirs.forward(x.leaky_trace()) * r.clone()).sum::<Rank0, _>().backward();
        for (a, b) in [
            (g1.get(&x).as_vec(), g2.get(&x).as_vec()),
            (g1.get(&ours.weight).as_vec(), g2.get(&theirs.weight).as_vec()),
            (g1.get(&ours.bias).as_vec(), g2.get(&theirs.bias).as_vec()),
        ] {
            close(&a, &b.iter().map(|&v| v as f64).collect::<Vec<_>>(), 1e-5);
        }
        ours.input_is_data = true;
        let g3 = (ours.forward(x.leaky_trace()) * r).sum::<Rank0, _>().backward();
        assert!(no_gradient(&g3, &x));
        assert_eq!(g3.get(&ours.weight).as_vec(), g1.get(&ours.weight).as_vec());
    }

    #[test]
    fn flatten_and_add_channel_shapes() {
        let dev = Dev::default();
        let x: Tensor<(usize, Const<28>, Const<28>), f32, Dev> = dev.zeros_like(&(3, Const, Const));
        let y = AddChannel.forward(x.clone());
        assert_eq!(y.shape().concrete(), [3, 28, 28, 1]);
        let f: Tensor<(usize, Const<784>), f32, Dev> = Flatten::<784>.forward(x);
        assert_eq!(f.shape().concrete(), [3, 784]);
    }
}
