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

use fashion_kernels::activation::{self, Activation};
use fashion_kernels::conv::{conv_forward, conv_relu_pool_backward, conv_relu_pool_forward, ConvGeom, ConvGrads};
use fashion_kernels::elementwise;
use fashion_kernels::matmul::{add_column_sums, matmul, Mat, Split, Store};
use fashion_kernels::norm;
use fashion_kernels::pool2d::{self, PoolGeom};
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

/// The values of a tensor: one memcpy (dfdx's `as_vec` walks it element by element), into a recycled
/// buffer when there is one (no zeroing first).
pub(crate) fn host(t: &Flat) -> Vec<f32> {
    let mut v = fashion_kernels::dirty_vec(t.shape().0);
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

/// The end of an operation's backward step: the gradient of its output `g` (from [`take`]) has been
/// passed on to its inputs, and no later step reads it (the steps run in reverse order, and every
/// consumer of the output ran before its producer), so its buffer goes to the next batch's outputs.
/// The output's entry in `grads` stays empty.
fn done(g: Vec<f32>) -> Result<(), CpuError> {
    fashion_kernels::recycle(g);
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
            fashion_kernels::recycle(xs);
            done(g)
        }) as Backward
    });
    Ok((out, backward))
}

/// Convolution + ReLU + max-pool of `n` NHWC images of geometry `g` (`fused`), or the convolution
/// alone plus its bias (`g.pool` 1); `weight` is `(K, K, IN, OUT)`.
pub(crate) fn conv(
    x: Flat,
    (g, n, fused): (ConvGeom, usize, bool),
    weight: Flat,
    bias: Flat,
    grads: Grads,
) -> Result<(Flat, Option<Backward>), CpuError> {
    let (kernel, bias_host) = (host(&weight), host(&bias));
    let pass = if grads == Grads::None { Pass::Infer } else { Pass::Train };
    let forward = if fused { conv_relu_pool_forward } else { conv_forward };
    let xs = host(&x);
    let (y, saved) = forward(&g, n, &xs, (&kernel, &bias_host), pass);
    fashion_kernels::recycle(xs);
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
            done(gout)
        }) as Backward
    });
    Ok((out, backward))
}

/// `max(x, 0)`. Training keeps one byte per value (positive or not) for backward, a quarter of a copy
/// of the output.
pub(crate) fn relu(x: Flat, train: bool) -> Result<(Flat, Option<Backward>), CpuError> {
    let mut y = host(&x);
    let n = y.len();
    let mask = if train {
        let mut mask = vec![0u8; n];
        elementwise::relu_with_mask(&mut y, &mut mask);
        Some(mask)
    } else {
        elementwise::relu(&mut y);
        None
    };
    let out = x.device().try_tensor_from_vec(y, (n,))?;
    let backward = mask.map(|mask| {
        let out = out.clone();
        Box::new(move |grads: &mut Gradients<f32, Cpu>| {
            let g = take(grads, &out)?;
            elementwise::relu_backward_mask(&mask, &g, grads.get_or_alloc_mut(&x)?);
            done(g)
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
        done(g)
    }) as Backward;
    Ok((out, backward))
}

/// An activation `act` of every value.
pub(crate) fn activation(x: Flat, act: Activation, train: bool) -> Result<(Flat, Option<Backward>), CpuError> {
    let xs = host(&x);
    let mut y = xs.clone();
    activation::forward(act, &mut y);
    let n = y.len();
    let saved = if act.backward_reads_output() { y.clone() } else { xs };
    let out = x.device().try_tensor_from_vec(y, (n,))?;
    let backward = train.then(|| {
        let out = out.clone();
        Box::new(move |grads: &mut Gradients<f32, Cpu>| {
            let g = take(grads, &out)?;
            activation::backward(act, &saved, &g, grads.get_or_alloc_mut(&x)?);
            done(g)
        }) as Backward
    });
    Ok((out, backward))
}

/// `a + b` (same length): a residual connection.
pub(crate) fn add(a: Flat, b: Flat, train: bool) -> Result<(Flat, Option<Backward>), CpuError> {
    let mut y = host(&a);
    activation::add_into(&mut y, &host(&b));
    let n = y.len();
    let out = a.device().try_tensor_from_vec(y, (n,))?;
    let backward = train.then(|| {
        let out = out.clone();
        Box::new(move |grads: &mut Gradients<f32, Cpu>| {
            let g = take(grads, &out)?;
            activation::add_into(grads.get_or_alloc_mut(&a)?, &g);
            activation::add_into(grads.get_or_alloc_mut(&b)?, &g);
            done(g)
        }) as Backward
    });
    Ok((out, backward))
}

/// Which pooling [`pool`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pooling {
    Max,
    Average,
}

/// Max- or average-pooling of NHWC images of geometry `g`.
pub(crate) fn pool(x: Flat, g: PoolGeom, kind: Pooling, train: bool) -> Result<(Flat, Option<Backward>), CpuError> {
    let xs = host(&x);
    let (y, arg) = match kind {
        Pooling::Max => {
            let (y, arg) = pool2d::max_pool_forward(&g, &xs);
            (y, Some(arg))
        }
        Pooling::Average => (pool2d::avg_pool_forward(&g, &xs), None),
    };
    fashion_kernels::recycle(xs);
    let n = y.len();
    let out = x.device().try_tensor_from_vec(y, (n,))?;
    let backward = train.then(|| {
        let out = out.clone();
        Box::new(move |grads: &mut Gradients<f32, Cpu>| {
            let go = take(grads, &out)?;
            let gx = grads.get_or_alloc_mut(&x)?;
            match &arg {
                Some(arg) => pool2d::max_pool_backward(&g, arg, &go, gx),
                None => pool2d::avg_pool_backward(&g, &go, gx),
            }
            done(go)
        }) as Backward
    });
    Ok((out, backward))
}

/// The mean of each channel over the `pixels` of each image: `(B, pixels, C)` → `(B, C)`.
pub(crate) fn global_avg_pool(
    x: Flat,
    (pixels, c): (usize, usize),
    train: bool,
) -> Result<(Flat, Option<Backward>), CpuError> {
    let y = pool2d::global_avg_forward(pixels, c, &host(&x));
    let n = y.len();
    let out = x.device().try_tensor_from_vec(y, (n,))?;
    let backward = train.then(|| {
        let out = out.clone();
        Box::new(move |grads: &mut Gradients<f32, Cpu>| {
            let go = take(grads, &out)?;
            pool2d::global_avg_backward(pixels, c, &go, grads.get_or_alloc_mut(&x)?);
            done(go)
        }) as Backward
    });
    Ok((out, backward))
}

/// A batch's per-channel mean and (biased) variance.
pub(crate) type Moments = (Vec<f32>, Vec<f32>);

/// Batch normalization of `(rows, c)` values while training, with the batch's statistics: the output,
/// the batch's mean and variance (for the running statistics), and the backward step.
pub(crate) fn batch_norm_train(
    x: Flat,
    c: usize,
    (gamma, beta): (Flat, Flat),
    eps: f32,
    input_grad: bool,
) -> Result<(Flat, Moments, Backward), CpuError> {
    let gamma_host = host(&gamma);
    let (y, stats) = norm::batch_norm_train(c, host(&x), &gamma_host, &host(&beta), eps);
    let n = y.len();
    let out = x.device().try_tensor_from_vec(y, (n,))?;
    let moments = (stats.mean.clone(), stats.var.clone());
    let o = out.clone();
    let backward = Box::new(move |grads: &mut Gradients<f32, Cpu>| {
        let go = take(grads, &o)?;
        let mut gg = take(grads, &gamma)?;
        let mut gb = take(grads, &beta)?;
        let gx = if input_grad { Some(&mut grads.get_or_alloc_mut(&x)?[..]) } else { None };
        norm::batch_norm_backward(c, &stats, &gamma_host, &go, (&mut gg, &mut gb), gx);
        put(grads, &gamma, gg)?;
        put(grads, &beta, gb)?;
        fashion_kernels::recycle(stats.x);
        done(go)
    }) as Backward;
    Ok((out, moments, backward))
}

/// Batch normalization at inference, with the running statistics `(mean, var)`.
pub(crate) fn batch_norm_infer(
    x: Flat,
    c: usize,
    (gamma, beta): (&Flat, &Flat),
    (mean, var): (&Flat, &Flat),
    eps: f32,
) -> Result<Flat, CpuError> {
    let y = norm::batch_norm_infer(c, &host(&x), (&host(gamma), &host(beta)), (&host(mean), &host(var)), eps);
    let n = y.len();
    x.device().try_tensor_from_vec(y, (n,))
}
