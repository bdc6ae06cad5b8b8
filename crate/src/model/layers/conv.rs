//! Convolutions: `Conv2d` (any kernel size, padding and stride) and `ConvReluPool`, convolution +
//! ReLU + max-pool as one layer, both on their own CPU kernels; the reference convolution built from
//! dfdx operations (gather, matmul) serves the `cuda` feature and the tests.

#[cfg(not(feature = "cuda"))]
use super::super::ops::{self, flat};
use dfdx::prelude::*;
use num_traits::Float;
use rand_distr::uniform::SampleUniform;

#[cfg(feature = "cuda")]
use super::MaxPool2d;
use super::{builders, keras_init};

/// A 2-d convolution with `IN` input channels, `OUT` filters of size `K×K`, `P` pixels of zero padding
/// on each side and stride `S`, plus a bias per filter (Keras' `Conv2D(OUT, K, strides=S)`).
///
/// The kernel is stored as `(K, K, IN, OUT)` — Keras' layout — so that it *is* the `(K·K·IN, OUT)`
/// matrix of the "im2col" formulation: each output pixel gathers its `K·K·IN` input values into one row
/// and the whole layer is a single matrix multiply. On the CPU it runs on the kernels of
/// `ConvReluPool` (Winograd for 3×3 "same" stride-1 convolutions over several channels, im2col and one
/// product otherwise), without the ReLU and pooling.
#[derive(Debug, Clone)]
pub struct Conv2d<
    const IN: usize,
    const OUT: usize,
    const K: usize,
    const P: usize,
    const S: usize,
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

impl<const IN: usize, const OUT: usize, const K: usize, const P: usize, const S: usize, E: Dtype, D: Device<E>>
    BuildOnDevice<D, E> for builders::Conv2d<IN, OUT, K, P, S>
where
    Conv2d<IN, OUT, K, P, S, E, D>: BuildModule<D, E>,
{
    type Built = Conv2d<IN, OUT, K, P, S, E, D>;
}

impl<const IN: usize, const OUT: usize, const K: usize, const P: usize, const S: usize, E: Dtype, D: Storage<E>>
    NonMutableModule for Conv2d<IN, OUT, K, P, S, E, D>
{
}

impl<const IN: usize, const OUT: usize, const K: usize, const P: usize, const S: usize, E, D> TensorCollection<E, D>
    for Conv2d<IN, OUT, K, P, S, E, D>
where
    E: Dtype + Float + SampleUniform,
    D: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = Conv2d<IN, OUT, K, P, S, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor("weight", |s| &s.weight, |s| &mut s.weight, keras_init()),
                Self::tensor("bias", |s| &s.bias, |s| &mut s.bias, keras_init()),
            ),
            |(weight, bias)| Conv2d { weight, bias, input_is_data: false },
        )
    }
}

/// Output size of a `k`-wide window every `s` pixels over `n + 2p` pixels (0 when it does not fit).
pub(crate) fn out_size(n: usize, k: usize, p: usize, s: usize) -> usize {
    if n + 2 * p < k || s == 0 {
        0
    } else {
        (n + 2 * p - k) / s + 1
    }
}

#[cfg(any(test, feature = "cuda"))]
/// Row indices that turn the `(B·H·W, C)` rows of an image batch into `(B·H'·W'·K·K, C)` patch rows
/// (im2col), for `p` pixels of zero padding and stride `s`: a position in the padding points at row
/// `B·H·W`, which the caller appends as a row of zeros.
pub(crate) fn im2col_indices(b: usize, (h, w): (usize, usize), k: usize, p: usize, s: usize) -> Vec<usize> {
    let (ho, wo) = (out_size(h, k, p, s), out_size(w, k, p, s));
    let zero = b * h * w;
    let mut idx = Vec::with_capacity(b * ho * wo * k * k);
    for n in 0..b {
        for i in 0..ho {
            for j in 0..wo {
                for di in 0..k {
                    for dj in 0..k {
                        let (r, c) = ((i * s + di).wrapping_sub(p), (j * s + dj).wrapping_sub(p));
                        idx.push(if r < h && c < w { (n * h + r) * w + c } else { zero });
                    }
                }
            }
        }
    }
    idx
}

#[cfg(any(test, feature = "cuda"))]
/// The convolution from dfdx operations — gather the patches, one matrix product, add the bias — for
/// any device: the `cuda` feature's `Conv2d`, and the reference the CPU kernels are tested against.
/// `(B, H, W, IN)` → `(B, H', W', OUT)`; inputs smaller than the kernel give an empty output.
#[allow(clippy::type_complexity)] // dfdx shapes, spelled out
pub(crate) fn reference_conv2d<const IN: usize, const OUT: usize, B: Dim, H: Dim, W: Dim, E, D, T>(
    x: Tensor<(B, H, W, Const<IN>), E, D, T>,
    (weight, bias): (&Tensor<(usize, Const<OUT>), E, D>, &Tensor<Rank1<OUT>, E, D>),
    (k, p, s): (usize, usize, usize),
) -> Result<Tensor<(B, usize, usize, Const<OUT>), E, D, T>, D::Err>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
{
    let (b, h, w, _) = *x.shape();
    let (nb, nh, nw) = (b.size(), h.size(), w.size());
    let (ho, wo) = (out_size(nh, k, p, s), out_size(nw, k, p, s));
    let pixels = nb * ho * wo;
    let idx = if pixels == 0 { Vec::new() } else { im2col_indices(nb, (nh, nw), k, p, s) };
    let idx = x.device().try_tensor_from_vec(idx, (pixels * k * k,))?;
    // (B, H, W, IN) → rows (B·H·W [+ a zero row], IN) → patch rows (B·H'·W'·K·K, IN)
    // → patches (B·H'·W', K·K·IN)
    let rows = x.try_reshape_like(&(nb * nh * nw, Const::<IN>))?;
    let zero: Tensor<(usize, Const<IN>), E, D> = rows.device().try_zeros_like(&(1, Const))?;
    let rows = (rows, zero).try_concat_along(Axis::<0>)?;
    let patches: Tensor<(usize, Const<IN>), E, D, T> = rows.try_gather(idx)?;
    let patches = patches.try_reshape_like(&(pixels, k * k * IN))?;
    let kernel = weight.retaped::<T>().try_reshape_like(&(k * k * IN, Const::<OUT>))?;
    let y = patches.try_matmul(kernel)?;
    let y = y.try_add(bias.retaped::<T>().try_broadcast_like(&(pixels, Const::<OUT>))?)?;
    y.try_reshape_like(&(b, ho, wo, Const::<OUT>))
}

#[cfg(any(test, feature = "cuda"))]
impl<const IN: usize, const OUT: usize, const K: usize, const P: usize, const S: usize, E: Dtype, D: Device<E>>
    Conv2d<IN, OUT, K, P, S, E, D>
{
    /// [`reference_conv2d`] with this layer's weights.
    #[allow(clippy::type_complexity)] // dfdx shapes, spelled out
    pub(crate) fn reference_forward<B: Dim, H: Dim, W: Dim, T: Tape<E, D>>(
        &self,
        x: Tensor<(B, H, W, Const<IN>), E, D, T>,
    ) -> Result<Tensor<(B, usize, usize, Const<OUT>), E, D, T>, D::Err> {
        let kernel = self.weight.clone().try_reshape_like(&(K * K * IN, Const::<OUT>))?;
        reference_conv2d(x, (&kernel, &self.bias), (K, P, S))
    }
}

#[cfg(not(feature = "cuda"))]
impl<const IN: usize, const OUT: usize, const K: usize, const P: usize, const S: usize, B: Dim, H: Dim, W: Dim, T>
    Module<Tensor<(B, H, W, Const<IN>), f32, Cpu, T>> for Conv2d<IN, OUT, K, P, S, f32, Cpu>
where
    T: Tape<f32, Cpu>,
{
    type Output = Tensor<(B, usize, usize, Const<OUT>), f32, Cpu, T>;
    type Error = CpuError;

    /// # Shapes
    /// `(B, H, W, IN)` → `(B, (H+2P-K)/S+1, (W+2P-K)/S+1, OUT)`. Inputs smaller than the kernel give an
    /// empty output.
    fn try_forward(&self, x: Tensor<(B, H, W, Const<IN>), f32, Cpu, T>) -> Result<Self::Output, CpuError> {
        use fashion_kernels::conv::ConvGeom;
        let (x, mut tape) = x.split_tape();
        let (b, h, w, _) = *x.shape();
        let g = ConvGeom { h: h.size(), w: w.size(), cin: IN, cout: OUT, k: K, p: P, s: S, pool: 1 };
        let (ho, wo) = g.conv_hw();
        let (kernel, bias) = (flat(self.weight.clone()), flat(self.bias.clone()));
        let grads = ops::Grads::of(T::OWNS_TAPE, self.input_is_data);
        let (y, backward) = ops::conv(flat(x), (g, b.size(), false), kernel, bias, grads)?;
        if let Some(backward) = backward {
            tape.add_backward_op(backward);
        }
        Ok(y.try_reshape_like(&(b, ho, wo, Const::<OUT>))?.put_tape(tape))
    }
}

#[cfg(feature = "cuda")]
impl<
        const IN: usize,
        const OUT: usize,
        const K: usize,
        const P: usize,
        const S: usize,
        B: Dim,
        H: Dim,
        W: Dim,
        E,
        D,
        T,
    > Module<Tensor<(B, H, W, Const<IN>), E, D, T>> for Conv2d<IN, OUT, K, P, S, E, D>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
{
    type Output = Tensor<(B, usize, usize, Const<OUT>), E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(B, H, W, Const<IN>), E, D, T>) -> Result<Self::Output, D::Err> {
        self.reference_forward(x)
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
        let g = ConvGeom { h: h.size(), w: w.size(), cin: IN, cout: OUT, k: K, p: P, s: 1, pool: POOL };
        let (hp, wp) = g.out_hw();
        let (kernel, bias) = (flat(self.weight.clone()), flat(self.bias.clone()));
        let (y, backward) =
            ops::conv(flat(x), (g, b.size(), true), kernel, bias, ops::Grads::of(T::OWNS_TAPE, self.input_is_data))?;
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
        let kernel = self.weight.clone().try_reshape_like(&(K * K * IN, Const::<OUT>))?;
        let y = reference_conv2d(x, (&kernel, &self.bias), (K, P, 1))?.try_relu()?;
        MaxPool2d::<POOL, POOL>.try_forward(y)
    }
}
