//! The layers' CPU operations as dfdx operations. Each takes flat (`(usize,)`-shaped) `f32` tensors, runs
//! its kernel from the `fashion_kernels` crate and returns the output plus, when training, the backward step to
//! record on the tape. The gradients are keyed by tensor id, and a contiguous reshape keeps the id, so the
//! typed layers reshape to flat tensors and back for free.
//!
//! Why this layer of plumbing: none of these functions is generic, so they are compiled — optimised —
//! in this crate. A network type written in a notebook cell instantiates the layers' generic code in the
//! cell's own (unoptimised) crate; that code only reshapes and calls these functions, so the cell trains
//! at the speed of the same network built into the crate.

use dfdx::prelude::*;

use fashion_kernels::conv::{conv_relu_pool_backward, conv_relu_pool_forward, ConvGeom, ConvGrads};
use fashion_kernels::elementwise;
use fashion_kernels::matmul::{add_column_sums, matmul, Mat, Split, Store};
use fashion_kernels::Pass;

/// A tensor's values, whatever its shape.
pub(crate) type Flat = Tensor<(usize,), f32, Cpu>;
/// A backward step for the tape: adds this operation's input and parameter gradients.
pub(crate) type Backward = Box<dyn FnOnce(&mut Gradients<f32, Cpu>) -> Result<(), CpuError>>;

/// `t` as a flat tensor with the same id and data (free when `t` is contiguous, as every tensor our
/// layers make is).
pub(crate) fn flat<S: Shape>(t: Tensor<S, f32, Cpu>) -> Flat {
    let n = t.shape().num_elements();
    t.reshape_like(&(n,))
}

/// The values of a tensor: one memcpy (dfdx's `as_vec` walks it element by element).
pub(crate) fn host(t: &Flat) -> Vec<f32> {
    let mut v = vec![0f32; t.shape().0];
    t.copy_into(&mut v);
    v
}

/// Takes the gradient of `t` out of `grads` (allocating zeros if it has none) to work on it without
/// holding `grads`; [`put`] returns it.
fn take(grads: &mut Gradients<f32, Cpu>, t: &Flat) -> Result<Vec<f32>, CpuError> {
    Ok(std::mem::take(&mut **grads.get_or_alloc_mut(t)?))
}

fn put(grads: &mut Gradients<f32, Cpu>, t: &Flat, g: Vec<f32>) -> Result<(), CpuError> {
    **grads.get_or_alloc_mut(t)? = g;
    Ok(())
}

/// Which gradients a layer's backward step computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grads {
    /// None: inference, no tape.
    None,
    /// The parameters' only: the layer's input is the data (a network's first layer).
    Params,
    /// The parameters' and the input's.
    All,
}

impl Grads {
    /// What a layer computes for a tape that records (`train`) or not, taking `input_is_data` images.
    pub(crate) fn of(train: bool, input_is_data: bool) -> Grads {
        match (train, input_is_data) {
            (false, _) => Grads::None,
            (true, true) => Grads::Params,
            (true, false) => Grads::All,
        }
    }
}

/// `y = x·Wᵀ + b` for `(n, i, o)`: `n` rows of `i` values; `weight` is `(o, i)`.
pub(crate) fn linear(
    x: Flat,
    (n, i, o): (usize, usize, usize),
    weight: Flat,
    bias: Flat,
    grads: Grads,
) -> Result<(Flat, Option<Backward>), CpuError> {
    let (xs, w) = (host(&x), host(&weight));
    let mut y = host(&bias).repeat(n);
    matmul(Split::Columns, (n, i, o), Mat::Plain(&xs), Mat::Transposed(&w), &mut y, Store::Accumulate);
    let out = x.device().try_tensor_from_vec(y, (n * o,))?;
    let backward = (grads != Grads::None).then(|| {
        let out = out.clone();
        Box::new(move |gs: &mut Gradients<f32, Cpu>| {
            let g = take(gs, &out)?;
            let gw = gs.get_or_alloc_mut(&weight)?;
            matmul(Split::Rows, (o, n, i), Mat::Transposed(&g), Mat::Plain(&xs), gw, Store::Accumulate);
            add_column_sums(&g, gs.get_or_alloc_mut(&bias)?);
            if grads == Grads::All {
                let gx = gs.get_or_alloc_mut(&x)?;
                matmul(Split::Columns, (n, o, i), Mat::Plain(&g), Mat::Plain(&w), gx, Store::Accumulate);
            }
            put(gs, &out, g)
        }) as Backward
    });
    Ok((out, backward))
}

/// Convolution + ReLU + max-pool of `n` NHWC images of geometry `g`; `weight` is `(K, K, IN, OUT)`.
pub(crate) fn conv_relu_pool(
    x: Flat,
    (g, n): (ConvGeom, usize),
    weight: Flat,
    bias: Flat,
    grads: Grads,
) -> Result<(Flat, Option<Backward>), CpuError> {
    let (kernel, bias_host) = (host(&weight), host(&bias));
    let pass = if grads == Grads::None { Pass::Infer } else { Pass::Train };
    let (y, saved) = conv_relu_pool_forward(&g, n, &host(&x), (&kernel, &bias_host), pass);
    let out = x.device().try_tensor_from_vec(y, (n * g.out_len(),))?;
    let backward = saved.map(|saved| {
        let out = out.clone();
        Box::new(move |gs: &mut Gradients<f32, Cpu>| {
            let gout = take(gs, &out)?;
            let mut gk = take(gs, &weight)?;
            let mut gb = take(gs, &bias)?;
            let input = if grads == Grads::All { Some(&mut gs.get_or_alloc_mut(&x)?[..]) } else { None };
            conv_relu_pool_backward(
                &g,
                &saved,
                &gout,
                (&kernel, &bias_host),
                ConvGrads { kernel: &mut gk, bias: &mut gb, input },
            );
            put(gs, &weight, gk)?;
            put(gs, &bias, gb)?;
            put(gs, &out, gout)
        }) as Backward
    });
    Ok((out, backward))
}

/// `max(x, 0)`.
pub(crate) fn relu(x: Flat, train: bool) -> Result<(Flat, Option<Backward>), CpuError> {
    let mut y = host(&x);
    elementwise::relu(&mut y);
    let n = y.len();
    // Backward needs the output; without a tape the values move into the tensor uncopied.
    let values = if train { y.clone() } else { std::mem::take(&mut y) };
    let out = x.device().try_tensor_from_vec(values, (n,))?;
    let backward = train.then(|| {
        let out = out.clone();
        Box::new(move |grads: &mut Gradients<f32, Cpu>| {
            let g = take(grads, &out)?;
            elementwise::relu_backward(&y, &g, grads.get_or_alloc_mut(&x)?);
            put(grads, &out, g)
        }) as Backward
    });
    Ok((out, backward))
}

/// Inverted dropout while training: each value is zeroed with probability `p` (drawn from `seed`), the
/// others scaled by `1 / (1 - p)`, so nothing changes at inference.
pub(crate) fn dropout(x: Flat, p: f64, seed: u64) -> Result<(Flat, Backward), CpuError> {
    let mut y = host(&x);
    let mask = elementwise::dropout_mask(y.len(), p, seed);
    elementwise::mul_into(&mut y, &mask);
    let out = x.device().try_tensor_from_vec(y, (mask.len(),))?;
    let o = out.clone();
    let backward = Box::new(move |grads: &mut Gradients<f32, Cpu>| {
        let g = take(grads, &o)?;
        elementwise::mul_add(&g, &mask, grads.get_or_alloc_mut(&x)?);
        put(grads, &o, g)
    }) as Backward;
    Ok((out, backward))
}
