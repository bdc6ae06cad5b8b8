//! One training step, readable the way dfdx's `examples/06-mnist.rs` writes it — forward, loss,
//! backward, update — and the non-generic helpers around it.
//!
//! [`train_step`] is generic over the network, so for a network type defined in a notebook cell it is
//! compiled in the cell, without optimisation. It only calls the network's layers (whose work runs in
//! the optimised operations of `model::ops`) and the functions below, which are not generic and so are
//! compiled, optimised, in this crate: assembling a batch, the loss and backward pass, the optimizer's
//! kernels.

use std::borrow::Cow;

use dfdx::prelude::*;
use ndarray::{s, Array1, Array2, Array3, ArrayView1, ArrayView3, Axis};

use crate::data::NUM_CLASSES;
use crate::error::{Error, Result};
use crate::model::{Dev, Images, Logits, Summary};

use super::optimizer::OptState;
use super::{Evaluation, FitOptions};

/// Values per image.
pub(crate) const PIXELS: usize = 28 * 28;

/// Loss and correct predictions of one batch.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StepStats {
    pub loss: f64,
    pub correct: usize,
    pub n: usize,
}

impl StepStats {
    pub fn add(&mut self, other: StepStats) {
        self.loss += other.loss;
        self.correct += other.correct;
        self.n += other.n;
    }

    /// Mean loss per image.
    pub fn mean_loss(&self) -> f64 {
        self.loss / self.n.max(1) as f64
    }

    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.n.max(1) as f64
    }
}

/// The checked inputs of `fit`: training images as one slice, labels, and the validation set (given,
/// or split off the end of the training data).
pub(crate) struct FitData<'a> {
    xs: Cow<'a, [f32]>,
    ys: Vec<u8>,
    validation: Option<(ArrayView3<'a, f32>, ArrayView1<'a, u8>)>,
}

impl<'a> FitData<'a> {
    pub fn new(x: &'a Array3<f32>, y: &'a Array1<u8>, options: &FitOptions<'a>) -> Result<FitData<'a>> {
        check_inputs(x.view(), y)?;
        let split = options.validation_split;
        let setting = |setting, reason: String| Error::Setting { setting, reason };
        let n = y.len();
        let n_train = training_part(n, split)?;
        if split > 0.0 && options.validation_data.is_some() {
            return Err(setting(
                "validation_split",
                "give either validation_data or validation_split, not both".into(),
            ));
        }
        if options.batch_size == 0 {
            return Err(setting("batch_size", "must be at least 1".into()));
        }
        let validation = match options.validation_data {
            Some((vx, vy)) => {
                check_inputs(vx.view(), vy)?;
                Some((vx.view(), vy.view()))
            }
            None if n_train < n => Some((x.slice(s![n_train.., .., ..]), y.slice(s![n_train..]))),
            None => None,
        };
        let xs = check_images(x.slice(s![..n_train, .., ..]))?;
        Ok(FitData { xs, ys: y.iter().take(n_train).copied().collect(), validation })
    }

    /// Training images.
    pub fn len(&self) -> usize {
        self.ys.len()
    }

    pub fn images(&self) -> &[f32] {
        &self.xs
    }

    pub fn labels(&self) -> &[u8] {
        &self.ys
    }

    pub fn validation(&self) -> Option<(ArrayView3<'a, f32>, ArrayView1<'a, u8>)> {
        self.validation
    }
}

/// How many of `n` images `validation_split: split` leaves for training: all but the last
/// `round(split · n)`.
fn training_part(n: usize, split: f64) -> Result<usize> {
    let setting = |reason: String| Error::Setting { setting: "validation_split", reason };
    if !(0.0..1.0).contains(&split) {
        return Err(setting(format!("must be in [0, 1), got {split}")));
    }
    let n_train = n - (n as f64 * split).round() as usize;
    if n_train == 0 {
        return Err(setting(format!("{split} leaves no training images of {n}: use a smaller one")));
    }
    Ok(n_train)
}

/// The images and labels `fit` holds out for validation with `validation_split: split` — the last
/// `round(split · n)` of them, in order — to score a model on exactly the images it was chosen on
/// (`Model::predict`, test-time augmentation). Checked as `fit` checks them.
pub fn validation_split(x: &Array3<f32>, y: &Array1<u8>, split: f64) -> Result<(Array3<f32>, Array1<u8>)> {
    check_inputs(x.view(), y)?;
    let n_train = training_part(y.len(), split)?;
    Ok((x.slice(s![n_train.., .., ..]).to_owned(), y.slice(s![n_train..]).to_owned()))
}

/// A batch ready for the network: images and one-hot targets on the device, labels on the host.
pub(crate) struct Batch {
    pub images: Images,
    pub targets: Logits,
    pub labels: Vec<u8>,
}

/// One step of mini-batch training on `batch`; returns the batch's loss and accuracy and the (zeroed)
/// gradients for the next step.
pub(crate) fn train_step<M>(
    net: &mut M,
    opt: &mut OptState<M>,
    batch: Batch,
    grads: Gradients<f32, Dev>,
    at: (usize, usize),
) -> Result<(StepStats, Gradients<f32, Dev>)>
where
    M: TensorCollection<f32, Dev>
        + ModuleMut<Images<OwnedTape<f32, Dev>>, Output = Logits<OwnedTape<f32, Dev>>, Error = <Dev as HasErr>::Err>,
{
    // 1. forward: the images carry the gradient tape through the network
    let logits = net.try_forward_mut(batch.images.traced(grads)).map_err(dev_err)?;
    // 2. loss (cross-entropy of the softmax) and 3. backward: the gradient of every parameter
    let (stats, mut grads) = loss_and_backward(logits, batch.targets, &batch.labels, at)?;
    // 4. update: the optimizer moves every parameter against its gradient
    opt.update(net, &mut grads)?;
    Ok((stats, grads))
}

/// Sparse categorical cross-entropy of the logits (Keras' `from_logits=True`), then backward.
/// `at` is (epoch, batch), for the error if the loss is not finite.
fn loss_and_backward(
    logits: Logits<OwnedTape<f32, Dev>>,
    targets: Logits,
    labels: &[u8],
    at: (usize, usize),
) -> Result<(StepStats, Gradients<f32, Dev>)> {
    let (logits, tape) = logits.split_tape();
    let host = logits.as_vec();
    let loss = cross_entropy_with_logits_loss(logits.put_tape(tape), targets);
    let value = loss.array();
    if !value.is_finite() {
        return Err(Error::NonFiniteLoss { epoch: at.0, batch: at.1, loss: value });
    }
    let grads = loss.try_backward().map_err(dev_err)?;
    let correct = host.chunks_exact(NUM_CLASSES).zip(labels).filter(|(row, &l)| argmax(row) == l as usize).count();
    Ok((StepStats { loss: value as f64 * labels.len() as f64, correct, n: labels.len() }, grads))
}

impl Batch {
    /// Gathers the images and labels at `idx` from `xs` (row-major pixels) and `ys`.
    #[cfg(test)]
    pub fn gather(dev: &Dev, xs: &[f32], ys: &[u8], idx: &[usize]) -> Result<Batch> {
        Batch::gather_augmented(dev, xs, ys, idx, None, 0.0)
    }

    /// Gathers the images and labels at `idx` from `xs` (row-major pixels) and `ys`, then augments the
    /// images with `(augment, seed)` when given. The targets are one-hot, or with `smoothing` ε
    /// `1 - ε + ε/10` for the label and `ε/10` for the other classes (label smoothing).
    pub fn gather_augmented(
        dev: &Dev,
        xs: &[f32],
        ys: &[u8],
        idx: &[usize],
        augment: Option<(fashion_kernels::augment::Augment, u64)>,
        smoothing: f32,
    ) -> Result<Batch> {
        let n = idx.len();
        let mut pixels = Vec::with_capacity(n * PIXELS);
        let other = smoothing / NUM_CLASSES as f32;
        let mut onehot = vec![other; n * NUM_CLASSES];
        let mut labels = Vec::with_capacity(n);
        for (row, &i) in idx.iter().enumerate() {
            pixels.extend_from_slice(&xs[i * PIXELS..(i + 1) * PIXELS]);
            onehot[row * NUM_CLASSES + ys[i] as usize] = 1.0 - smoothing + other;
            labels.push(ys[i]);
        }
        if let Some((a, seed)) = augment {
            fashion_kernels::augment::augment(&mut pixels, (28, 28), &a, seed);
        }
        Ok(Batch {
            images: images(dev, pixels)?,
            targets: dev.try_tensor_from_vec(onehot, (n, Const)).map_err(dev_err)?,
            labels,
        })
    }
}

/// Row-major pixels of `pixels.len() / 784` images as a tensor.
pub(crate) fn images(dev: &Dev, pixels: Vec<f32>) -> Result<Images> {
    let n = pixels.len() / PIXELS;
    dev.try_tensor_from_vec(pixels, (n, Const, Const)).map_err(dev_err)
}

/// The logits' values, row-major.
pub(crate) fn host_logits(logits: &Logits) -> Vec<f32> {
    logits.as_vec()
}

/// Softmax of each row.
pub(crate) fn softmax_rows(mut p: Array2<f32>) -> Array2<f32> {
    for mut row in p.outer_iter_mut() {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        row.mapv_inplace(|v| (v - m).exp());
        let s: f32 = row.sum();
        row.mapv_inplace(|v| v / s);
    }
    p
}

/// The class of the largest score (logit or probability) of each row.
pub fn classes(scores: &Array2<f32>) -> Array1<u8> {
    scores.outer_iter().map(|r| argmax(r.as_slice().unwrap_or(&r.to_vec())) as u8).collect()
}

/// Loss and accuracy of `logits` `(n, 10)` against `labels`.
pub(crate) fn score(logits: &Array2<f32>, labels: ArrayView1<u8>) -> Evaluation {
    let (mut loss, mut correct) = (0f64, 0usize);
    for (row, &label) in logits.outer_iter().zip(labels.iter()) {
        let (lse, arg) = log_sum_exp_argmax(row.as_slice().unwrap_or(&row.to_vec()));
        loss += lse - row[label as usize] as f64;
        correct += (arg == label as usize) as usize;
    }
    let n = labels.len().max(1) as f64;
    Evaluation { loss: loss / n, accuracy: correct as f64 / n }
}

/// Checks `(n, 28, 28)` finite images and `n` labels in `0..=9`; returns the images as one contiguous
/// slice.
pub(crate) fn check_inputs<'a>(x: ArrayView3<'a, f32>, y: &Array1<u8>) -> Result<Cow<'a, [f32]>> {
    let xs = check_images(x)?;
    if x.len_of(Axis(0)) != y.len() {
        return Err(Error::InvalidArgument(format!("{} images but {} labels", x.len_of(Axis(0)), y.len())));
    }
    crate::data::check_labels(y)?;
    if let Some(pos) = xs.iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "image {} has a non-finite pixel (NaN or infinity); normalize with `normalize(&images)`",
            pos / PIXELS
        )));
    }
    Ok(xs)
}

/// Checks the `(n, 28, 28)` shape; returns the images as one contiguous slice.
pub(crate) fn check_images(x: ArrayView3<'_, f32>) -> Result<Cow<'_, [f32]>> {
    if x.shape()[1..] != [28, 28] {
        return Err(Error::InvalidArgument(format!(
            "images must be (n, 28, 28), got {:?}; a single image must become a batch of one: \
             image.insert_axis(Axis(0))",
            x.shape()
        )));
    }
    Ok(match x.to_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(x.iter().cloned().collect()),
    })
}

/// Bytes of activations per image while training, estimated from the layers' output sizes: each value
/// is written in forward, kept for backward, and has a gradient (plus scratch such as im2col rows) —
/// 12 bytes per value. Measured for the CNN: about 0.8 MB per image; this gives 1.06 MB.
pub(crate) fn bytes_per_image(summary: &Summary) -> u64 {
    summary.layers.iter().map(|l| l.output.iter().product::<usize>() as u64).sum::<u64>() * 12
}

/// Refuses a batch whose activations would take more than half of `available` bytes (when known),
/// naming the largest batch that fits.
pub(crate) fn check_memory(summary: &Summary, batch: usize, available: Option<u64>) -> Result<()> {
    let (Some(available), per) = (available, bytes_per_image(summary)) else { return Ok(()) };
    let budget = available / 2;
    let need = per * batch as u64;
    if need > budget {
        let gb = |b: u64| b as f64 / 1e9;
        return Err(Error::Setting {
            setting: "batch_size",
            reason: format!(
                "{batch} needs about {:.1} GB for this network's activations, more than half the {:.1} GB \
             of memory available; the largest batch that fits is {}",
                gb(need),
                gb(available),
                (budget / per.max(1)).max(1)
            ),
        });
    }
    Ok(())
}

/// `MemAvailable` of `/proc/meminfo` in bytes (None where there is no such file).
pub(crate) fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info.lines().find(|l| l.starts_with("MemAvailable:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// [`Error::Device`] holding the device's own error (dfdx's CUDA error is no `std::error::Error`, so it
/// goes in a wrapper that is one).
pub(crate) fn dev_err<E: std::fmt::Debug + std::fmt::Display + Send + Sync + 'static>(e: E) -> Error {
    #[derive(Debug)]
    struct DeviceError<E>(E);
    impl<E: std::fmt::Display> std::fmt::Display for DeviceError<E> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.fmt(f)
        }
    }
    impl<E: std::fmt::Debug + std::fmt::Display> std::error::Error for DeviceError<E> {}
    Error::Device { source: Box::new(DeviceError(e)) }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// `(log Σ exp v, argmax v)` in f64, stable for large logits.
fn log_sum_exp_argmax(v: &[f32]) -> (f64, usize) {
    let arg = argmax(v);
    let m = v[arg] as f64;
    let s: f64 = v.iter().map(|&x| (x as f64 - m).exp()).sum();
    (m + s.ln(), arg)
}
