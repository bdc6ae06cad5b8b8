//! The layers' CPU operations as dfdx operations. Each takes flat (`(usize,)`-shaped) `f32` tensors, runs
//! its kernel from [`crate::kernels`] and returns the output plus, when training, the backward step to
//! record on the tape. The gradients are keyed by tensor id, and a contiguous reshape keeps the id, so the
//! typed layers reshape to flat tensors and back for free.
//!
//! Why this layer of plumbing: none of these functions is generic, so they are compiled — optimised —
//! in this crate. A network type written in a notebook cell instantiates the layers' generic code in the
//! cell's own (unoptimised) crate; that code only reshapes and calls these functions, so the cell trains
//! at the speed of the same network built into the crate.

use dfdx::prelude::*;

use crate::kernels::conv::{conv_relu_pool_backward, conv_relu_pool_forward, ConvGeom};
use crate::kernels::elementwise;
use crate::kernels::matmul::{add_column_sums, matmul, Split};

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

/// `y = x·Wᵀ + b` for `n` rows of `i` values; `weight` is `(o, i)`. Without `input_grad` backward skips
/// the gradient of `x` (a network's first layer: its input is the data).
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear(x: Flat, n: usize, i: usize, o: usize, weight: Flat, bias: Flat, train: bool, input_grad: bool) -> Result<(Flat, Option<Backward>), CpuError> {
    let (xs, w) = (host(&x), host(&weight));
    let mut y = host(&bias).repeat(n);
    matmul(Split::Columns, n, i, o, &xs, false, &w, true, &mut y, true);
    let out = x.device().try_tensor_from_vec(y, (n * o,))?;
    let backward = train.then(|| {
        let out = out.clone();
        Box::new(move |grads: &mut Gradients<f32, Cpu>| {
            let g = take(grads, &out)?;
            matmul(Split::Rows, o, n, i, &g, true, &xs, false, grads.get_or_alloc_mut(&weight)?, true);
            add_column_sums(&g, grads.get_or_alloc_mut(&bias)?);
            if input_grad {
                matmul(Split::Columns, n, o, i, &g, false, &w, false, grads.get_or_alloc_mut(&x)?, true);
            }
            put(grads, &out, g)
        }) as Backward
    });
    Ok((out, backward))
}

/// Convolution + ReLU + max-pool of `n` NHWC images of geometry `g`; `weight` is `(K, K, IN, OUT)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_relu_pool(x: Flat, g: ConvGeom, n: usize, weight: Flat, bias: Flat, train: bool, input_grad: bool) -> Result<(Flat, Option<Backward>), CpuError> {
    let (kernel, bias_host) = (host(&weight), host(&bias));
    let (y, saved) = conv_relu_pool_forward(&g, n, &host(&x), &kernel, &bias_host, train);
    let out = x.device().try_tensor_from_vec(y, (n * g.out_len(),))?;
    let backward = saved.map(|saved| {
        let out = out.clone();
        Box::new(move |grads: &mut Gradients<f32, Cpu>| {
            let gout = take(grads, &out)?;
            let mut gk = take(grads, &weight)?;
            let mut gb = take(grads, &bias)?;
            let gx = if input_grad { Some(&mut grads.get_or_alloc_mut(&x)?[..]) } else { None };
            conv_relu_pool_backward(&g, &saved, &gout, &kernel, &bias_host, &mut gk, &mut gb, gx);
            put(grads, &weight, gk)?;
            put(grads, &bias, gb)?;
            put(grads, &out, gout)
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
