//! Steps 5–8 of the guide — **compile, fit, evaluate, predict** — named as Keras names them.
//!
//! ```no_run
//! use fashion::prelude::*;
//! let data = load_data()?;
//! let (x, y) = (data.train.normalized(), &data.train.labels);
//! let mut model = Model::new(Arch::Mlp, 42)?;            // build
//! model.compile(Optimizer::Adam { learning_rate: 1e-3 }); // compile
//! let history = model.fit(&x, y, 10, 32, None)?;          // fit: 10 epochs, batch 32
//! let test = model.evaluate(&data.test.normalized(), &data.test.labels)?;
//! println!("Test accuracy: {:.4}", test.accuracy);
//! # Ok::<(), fashion::Error>(())
//! ```
//!
//! [`Model`] is one concrete type for the four architectures: every method is compiled (and optimised)
//! inside this crate, so a notebook cell that calls `fit` runs at full speed even when the cell itself
//! is compiled without optimisation.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use dfdx::optim::{Adam, Optimizer as _, Sgd};
use dfdx::prelude::*;
use ndarray::{Array1, Array2, Array3, ArrayView3, Axis};
use rayon::prelude::*;

use crate::data::{BatchOrder, Batches, LastBatch, NUM_CLASSES};
use crate::error::{Error, Result};
use crate::model::{self, Arch, Built, CnnArch, DeepMlpArch, Dev, Images, LinearArch, Logits, MlpArch, Summary};

const PIXELS: usize = 28 * 28;
/// Samples per forward pass in `evaluate` / `predict`.
const INFERENCE_BATCH: usize = 1000;

/// The optimizer chosen at `compile`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// Adam (β₁ = 0.9, β₂ = 0.999, ε = 1e-7, Keras' defaults); Keras' default learning rate is 1e-3.
    Adam { learning_rate: f64 },
    /// Plain stochastic gradient descent, with optional momentum.
    Sgd { learning_rate: f64, momentum: Option<f64> },
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer::Adam { learning_rate: 1e-3 }
    }
}

/// The loss chosen at `compile`. Models output logits, so the loss applies the softmax itself
/// (Keras: `SparseCategoricalCrossentropy(from_logits=True)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Loss {
    #[default]
    SparseCategoricalCrossentropy,
}

/// Metrics reported by `fit` and `evaluate` (besides the loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metric {
    #[default]
    Accuracy,
}

/// How much `fit` and `evaluate` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// Nothing.
    Silent,
    /// Keras style: a live bar on a terminal, one line per epoch elsewhere (notebooks, logs).
    #[default]
    Progress,
}

/// Loss and accuracy over a whole set (Keras' `model.evaluate`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loss: {:.4} - accuracy: {:.4}", self.loss, self.accuracy)
    }
}

/// One row of [`History`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochLog {
    /// 1-based, as Keras prints it.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches (weighted by batch size).
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    /// Wall-clock seconds of the epoch's training (validation excluded).
    pub seconds: f64,
}

/// What `fit` returns: one row per epoch (Keras' `history.history`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    pub epochs: Vec<EpochLog>,
}

impl History {
    /// Column names, in order.
    pub const COLUMNS: [&'static str; 6] = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"];

    /// The last epoch's row.
    pub fn last(&self) -> Option<&EpochLog> {
        self.epochs.last()
    }

    /// The history as CSV text (empty cells where there was no validation set).
    pub fn to_csv(&self) -> String {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
        let mut s = Self::COLUMNS.join(",");
        s.push('\n');
        for e in &self.epochs {
            s.push_str(&format!(
                "{},{:.6},{:.6},{},{},{:.3}\n",
                e.epoch,
                e.loss,
                e.accuracy,
                opt(e.val_loss),
                opt(e.val_accuracy),
                e.seconds
            ));
        }
        s
    }

    /// Writes [`History::to_csv`] to `path`.
    pub fn write_csv(&self, path: impl AsRef<Path>) -> Result<()> {
        std::fs::write(path.as_ref(), self.to_csv()).map_err(|e| Error::io(path.as_ref(), e))
    }
}

/// A model: an architecture, its weights, and — after `compile` — its optimizer state.
pub struct Model {
    arch: Arch,
    seed: u64,
    dev: Dev,
    net: Net,
    compiled: Option<Optimizer>,
    /// Epochs trained so far (shuffling differs from one epoch to the next, across `fit` calls too).
    epochs_done: usize,
    /// What `fit`/`evaluate` print.
    pub verbosity: Verbosity,
}

/// The four concrete networks with their optimizers; every generic instance lives in this crate.
enum Net {
    Linear(Trainer<Built<LinearArch>>),
    Mlp(Trainer<Built<MlpArch>>),
    Deep(Trainer<Built<DeepMlpArch>>),
    Cnn(Trainer<Built<CnnArch>>),
}

macro_rules! with_net {
    ($net:expr, $t:ident => $body:expr) => {
        match $net {
            Net::Linear($t) => $body,
            Net::Mlp($t) => $body,
            Net::Deep($t) => $body,
            Net::Cnn($t) => $body,
        }
    };
}

struct Trainer<M> {
    model: M,
    opt: Option<Opt<M>>,
}

enum Opt<M> {
    Adam(Adam<M, f32, Dev>),
    Sgd(Sgd<M, f32, Dev>),
}

/// What the generic training code needs of a network.
trait Network:
    TensorCollection<f32, Dev, To<f32, Dev> = Self>
    + Module<Images, Output = Logits, Error = <Dev as HasErr>::Err>
    + ModuleMut<Images<OwnedTape<f32, Dev>>, Output = Logits<OwnedTape<f32, Dev>>, Error = <Dev as HasErr>::Err>
{
}

impl<M> Network for M where
    M: TensorCollection<f32, Dev, To<f32, Dev> = M>
        + Module<Images, Output = Logits, Error = <Dev as HasErr>::Err>
        + ModuleMut<Images<OwnedTape<f32, Dev>>, Output = Logits<OwnedTape<f32, Dev>>, Error = <Dev as HasErr>::Err>
{
}

fn dev_err<E: fmt::Debug>(e: E) -> Error {
    Error::Device(format!("{e:?}"))
}

impl Model {
    /// Builds `arch` with weights drawn from `seed` (same seed → same weights), initialised as Keras
    /// does (Glorot-uniform weights, zero biases).
    pub fn new(arch: Arch, seed: u64) -> Result<Model> {
        let dev = Dev::seed_from_u64(seed);
        #[cfg(not(feature = "cuda"))]
        dfdx::flush_denormals_to_zero();
        fn build<A: BuildOnDevice<Dev, f32>>(dev: &Dev) -> Result<Trainer<Built<A>>> {
            let mut model = dev.try_build_module::<A, f32>().map_err(dev_err)?;
            model::glorot_init(&mut model).map_err(dev_err)?;
            Ok(Trainer { model, opt: None })
        }
        let mut net = match arch {
            Arch::Linear => Net::Linear(build::<LinearArch>(&dev)?),
            Arch::Mlp => Net::Mlp(build::<MlpArch>(&dev)?),
            Arch::DeepMlp => Net::Deep(build::<DeepMlpArch>(&dev)?),
            Arch::Cnn => Net::Cnn(build::<CnnArch>(&dev)?),
        };
        // The first layer's input is the images: nothing needs its gradient.
        #[cfg(not(feature = "cuda"))]
        match &mut net {
            Net::Linear(t) => t.model.1.input_is_data = true,
            Net::Mlp(t) => t.model.1.input_is_data = true,
            Net::Deep(t) => t.model.1 .0.input_is_data = true,
            Net::Cnn(t) => t.model.1.input_is_data = true,
        }
        Ok(Model {
            arch,
            seed,
            dev,
            net,
            compiled: None,
            epochs_done: 0,
            verbosity: Verbosity::Progress,
        })
    }

    /// Which architecture this is.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The device tensors live on.
    pub fn device(&self) -> &Dev {
        &self.dev
    }

    /// Number of trainable parameters, counted from the tensors.
    pub fn count_params(&self) -> usize {
        with_net!(&self.net, t => t.model.num_trainable_params())
    }

    /// Keras' `model.summary()`.
    pub fn summary(&self) -> Summary {
        Summary {
            arch: self.arch,
            layers: self.arch.layers(),
            total_params: self.count_params(),
        }
    }

    /// Chooses the optimizer (loss: sparse categorical cross-entropy on logits; metric: accuracy).
    /// Compiling again resets the optimizer's state, as in Keras.
    pub fn compile(&mut self, optimizer: Optimizer) {
        fn make<M: Network>(t: &mut Trainer<M>, o: Optimizer) {
            t.opt = Some(match o {
                Optimizer::Adam { learning_rate } => Opt::Adam(Adam::new(
                    &t.model,
                    AdamConfig {
                        lr: learning_rate,
                        betas: [0.9, 0.999],
                        eps: 1e-7,
                        weight_decay: None,
                    },
                )),
                Optimizer::Sgd { learning_rate, momentum } => Opt::Sgd(Sgd::new(
                    &t.model,
                    SgdConfig {
                        lr: learning_rate,
                        momentum: momentum.map(Momentum::Classic),
                        weight_decay: None,
                    },
                )),
            });
        }
        with_net!(&mut self.net, t => make(t, optimizer));
        self.compiled = Some(optimizer);
    }

    /// The optimizer given to `compile`, if any.
    pub fn optimizer(&self) -> Option<Optimizer> {
        self.compiled
    }

    /// Trains for `epochs` passes over `(x, y)` in shuffled mini-batches of `batch_size` (the last batch may
    /// be smaller), printing Keras-style progress, and evaluates on `validation` after each epoch.
    ///
    /// `x` is `(n, 28, 28)` normalized images, `y` the `n` labels. Stops with
    /// [`Error::NonFiniteLoss`] (naming epoch and batch) if the loss becomes NaN or infinite.
    pub fn fit(
        &mut self,
        x: &Array3<f32>,
        y: &Array1<u8>,
        epochs: usize,
        batch_size: usize,
        validation: Option<(&Array3<f32>, &Array1<u8>)>,
    ) -> Result<History> {
        if self.compiled.is_none() {
            return Err(Error::InvalidArgument("call model.compile(optimizer) before fit()".into()));
        }
        let xs = check_inputs(x.view(), y)?;
        if let Some((vx, vy)) = validation {
            check_inputs(vx.view(), vy)?;
        }
        let ys = y.as_slice().map(|s| s.to_vec()).unwrap_or_else(|| y.to_vec());
        let n = ys.len();
        if n == 0 {
            return Err(Error::InvalidArgument("cannot fit on an empty training set".into()));
        }
        let mut history = History::default();
        for e in 0..epochs {
            let epoch = e + 1;
            let seed = mix(self.seed, self.epochs_done as u64);
            let batches = Batches::new(n, batch_size, BatchOrder::Shuffled { seed }, LastBatch::Keep)?;
            let mut progress = Progress::new(self.verbosity, epoch, epochs, batches.num_batches());
            let start = Instant::now();
            let dev = self.dev.clone();
            let (loss, accuracy) = with_net!(&mut self.net,
                t => train_epoch(t, &dev, &xs, &ys, batches, epoch, &mut progress))?;
            let seconds = start.elapsed().as_secs_f64();
            self.epochs_done += 1;
            let val = match validation {
                Some((vx, vy)) => Some(self.evaluate_quiet(vx, vy)?),
                None => None,
            };
            progress.finish(loss, accuracy, val, seconds);
            history.epochs.push(EpochLog {
                epoch,
                loss,
                accuracy,
                val_loss: val.map(|v| v.loss),
                val_accuracy: val.map(|v| v.accuracy),
                seconds,
            });
        }
        Ok(history)
    }

    /// Loss and accuracy on `(x, y)` (Keras' `model.evaluate`), printed as Keras prints it.
    pub fn evaluate(&self, x: &Array3<f32>, y: &Array1<u8>) -> Result<Evaluation> {
        let start = Instant::now();
        let ev = self.evaluate_quiet(x, y)?;
        if self.verbosity == Verbosity::Progress {
            let batches = y.len().div_ceil(32);
            println!("{batches}/{batches} - {:.0}s - {ev}", start.elapsed().as_secs_f64());
        }
        Ok(ev)
    }

    fn evaluate_quiet(&self, x: &Array3<f32>, y: &Array1<u8>) -> Result<Evaluation> {
        check_inputs(x.view(), y)?;
        if y.is_empty() {
            return Err(Error::InvalidArgument("cannot evaluate on an empty set".into()));
        }
        let logits = self.logits(x.view())?;
        let (mut loss, mut correct) = (0f64, 0usize);
        for (row, &label) in logits.outer_iter().zip(y) {
            let (lse, arg) = log_sum_exp_argmax(row.as_slice().unwrap_or(&row.to_vec()));
            loss += lse - row[label as usize] as f64;
            correct += (arg == label as usize) as usize;
        }
        let n = y.len() as f64;
        Ok(Evaluation {
            loss: loss / n,
            accuracy: correct as f64 / n,
        })
    }

    /// The raw model outputs `(n, 10)` for `(n, 28, 28)` normalized images.
    pub fn logits(&self, x: ArrayView3<f32>) -> Result<Array2<f32>> {
        check_images(x)?;
        let n = x.len_of(Axis(0));
        let xs = x.as_standard_layout();
        let xs = xs.as_slice().unwrap_or(&[]);
        let out = with_net!(&self.net, t => infer(&t.model, &self.dev, xs, n))?;
        Array2::from_shape_vec((n, NUM_CLASSES), out).map_err(|e| Error::InvalidArgument(e.to_string()))
    }

    /// Class probabilities `(n, 10)` (softmax of the logits), like Keras' `probability_model.predict`.
    pub fn predict(&self, x: &Array3<f32>) -> Result<Array2<f32>> {
        let mut p = self.logits(x.view())?;
        for mut row in p.outer_iter_mut() {
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            row.mapv_inplace(|v| (v - m).exp());
            let s: f32 = row.sum();
            row.mapv_inplace(|v| v / s);
        }
        Ok(p)
    }

    /// Predicts one image `(28, 28)`: it becomes a batch of one, as the guide explains.
    pub fn predict_one(&self, image: ndarray::ArrayView2<f32>) -> Result<Array1<f32>> {
        let batch = image.insert_axis(Axis(0)).to_owned();
        Ok(self.predict(&batch)?.row(0).to_owned())
    }

    /// The most probable class of each image.
    pub fn predict_classes(&self, x: &Array3<f32>) -> Result<Array1<u8>> {
        let logits = self.logits(x.view())?;
        Ok(logits
            .outer_iter()
            .map(|r| argmax(r.as_slice().unwrap_or(&r.to_vec())) as u8)
            .collect())
    }

    /// Saves the weights as safetensors (the optimizer state is not saved).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        with_net!(&self.net, t => t.model.save_safetensors(path)).map_err(|e| Error::Weights {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Builds `arch` and loads weights saved by [`Model::save`].
    pub fn load(arch: Arch, path: impl AsRef<Path>) -> Result<Model> {
        let mut m = Model::new(arch, 0)?;
        m.load_weights(path)?;
        Ok(m)
    }

    /// Replaces this model's weights by those in `path`, after checking that every tensor's name, shape
    /// and dtype fit this architecture (a mismatch is an error and leaves the model unchanged).
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let mismatch = |reason: String| Error::WeightsMismatch {
            path: path.to_path_buf(),
            model: self.arch.name().to_string(),
            reason,
        };
        let file = ::safetensors::tensor::SafeTensors::deserialize(&bytes).map_err(|e| Error::Weights {
            path: path.to_path_buf(),
            reason: format!("not a safetensors file ({e:?})"),
        })?;
        let expected = with_net!(&self.net, t => model::tensor_infos(&t.model));
        let mut found: Vec<String> = file.names().into_iter().cloned().collect();
        found.sort();
        let mut want: Vec<String> = expected.iter().map(|t| t.name.clone()).collect();
        want.sort();
        if found != want {
            return Err(mismatch(format!("the file has tensors {found:?}, this model has {want:?}")));
        }
        for model::TensorInfo { name, shape, .. } in &expected {
            let t = file.tensor(name).map_err(|e| mismatch(format!("{e:?}")))?;
            if t.shape() != shape.as_slice() {
                return Err(mismatch(format!("`{name}` has shape {:?}, expected {shape:?}", t.shape())));
            }
            if t.dtype() != ::safetensors::tensor::Dtype::F32 {
                return Err(mismatch(format!("`{name}` is {:?}, expected F32", t.dtype())));
            }
        }
        // Everything checked: load into a copy, then swap it in.
        fn load_into<M: Network + Clone>(t: &mut Trainer<M>, path: &Path) -> std::result::Result<(), String> {
            let mut copy = t.model.clone();
            copy.load_safetensors(path).map_err(|e| format!("{e:?}"))?;
            t.model = copy;
            Ok(())
        }
        with_net!(&mut self.net, t => load_into(t, path)).map_err(mismatch)?;
        // Optimizer moments belong to the old weights.
        if let Some(o) = self.compiled {
            self.compile(o);
        }
        Ok(())
    }
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("arch", &self.arch)
            .field("params", &self.count_params())
            .field("optimizer", &self.compiled)
            .field("epochs_trained", &self.epochs_done)
            .finish()
    }
}

/// Checks `(n, 28, 28)` images and `n` labels in `0..=9`; returns the images as one contiguous slice.
fn check_inputs<'a>(x: ArrayView3<'a, f32>, y: &Array1<u8>) -> Result<std::borrow::Cow<'a, [f32]>> {
    check_images(x)?;
    if x.len_of(Axis(0)) != y.len() {
        return Err(Error::InvalidArgument(format!(
            "{} images but {} labels",
            x.len_of(Axis(0)),
            y.len()
        )));
    }
    if let Some((i, l)) = y.iter().enumerate().find(|(_, &l)| l as usize >= NUM_CLASSES) {
        return Err(Error::InvalidArgument(format!("label {l} at index {i} is not a class (0..=9)")));
    }
    if let Some(pos) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "image {} has a non-finite pixel (NaN or infinity); normalize with `normalize(&images)`",
            pos / PIXELS
        )));
    }
    Ok(match x.to_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(x.iter().cloned().collect()),
    })
}

fn check_images(x: ArrayView3<f32>) -> Result<()> {
    if x.shape()[1..] != [28, 28] {
        return Err(Error::InvalidArgument(format!(
            "images must be (n, 28, 28), got {:?}; a single image must become a batch of one: \
             image.insert_axis(Axis(0))",
            x.shape()
        )));
    }
    Ok(())
}

/// evcxr compiles every notebook cell into its own shared library, each with its own copy of dfdx and
/// so its own tensor-id counter, starting at 0. A model built in one cell and trained in another would
/// give its batch tensors ids that collide with its parameters' ids, mixing up their gradients. Before
/// training, advance this copy's counter past every parameter id (a no-op outside notebooks).
fn advance_ids_past<M: TensorCollection<f32, Dev>>(model: &M, dev: &Dev) -> Result<()> {
    let max = model::tensor_infos(model).iter().filter_map(|t| t.id).max().unwrap_or(0);
    loop {
        let probe: Tensor<Rank0, f32, Dev> = dev.try_zeros().map_err(dev_err)?;
        match model::tensor_id(&probe) {
            Some(id) if id <= max => continue,
            _ => return Ok(()),
        }
    }
}

/// The logits of `n` images `xs` (row-major pixels), in batches of `INFERENCE_BATCH` spread over both
/// cores: the copies, activations and small products between the big matrix products then run in
/// parallel too (the CPU kernels pick their own threads inside).
fn infer<M: Network + Sync>(model: &M, dev: &Dev, xs: &[f32], n: usize) -> Result<Vec<f32>> {
    let starts: Vec<usize> = (0..n).step_by(INFERENCE_BATCH).collect();
    let parts = starts
        .par_iter()
        .map(|&start| -> Result<Vec<f32>> {
            let stop = (start + INFERENCE_BATCH).min(n);
            let batch: Images = dev
                .try_tensor_from_vec(xs[start * PIXELS..stop * PIXELS].to_vec(), (stop - start, Const, Const))
                .map_err(dev_err)?;
            let y: Logits = model.try_forward(batch).map_err(dev_err)?;
            Ok(y.as_vec())
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(parts.concat())
}

/// One epoch of mini-batch training; returns mean loss and accuracy.
fn train_epoch<M: Network>(
    t: &mut Trainer<M>,
    dev: &Dev,
    xs: &[f32],
    ys: &[u8],
    batches: Batches,
    epoch: usize,
    progress: &mut Progress,
) -> Result<(f64, f64)> {
    let opt = t
        .opt
        .as_mut()
        .ok_or_else(|| Error::InvalidArgument("call model.compile(optimizer) before fit()".into()))?;
    advance_ids_past(&t.model, dev)?;
    let mut grads = t.model.try_alloc_grads().map_err(dev_err)?;
    let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
    for (b, idx) in batches.enumerate() {
        let n = idx.len();
        let mut pixels = Vec::with_capacity(n * PIXELS);
        let mut onehot = vec![0f32; n * NUM_CLASSES];
        for (row, &i) in idx.iter().enumerate() {
            pixels.extend_from_slice(&xs[i * PIXELS..(i + 1) * PIXELS]);
            onehot[row * NUM_CLASSES + ys[i] as usize] = 1.0;
        }
        let x: Images = dev.try_tensor_from_vec(pixels, (n, Const, Const)).map_err(dev_err)?;
        let target: Logits = dev.try_tensor_from_vec(onehot, (n, Const)).map_err(dev_err)?;
        let logits = t.model.try_forward_mut(x.traced(grads)).map_err(dev_err)?;
        let (logits, tape) = logits.split_tape();
        let host = logits.as_vec();
        let loss = cross_entropy_with_logits_loss(logits.put_tape(tape), target);
        let value = loss.array();
        if !value.is_finite() {
            return Err(Error::NonFiniteLoss {
                epoch,
                batch: b + 1,
                loss: value,
            });
        }
        grads = loss.try_backward().map_err(dev_err)?;
        match opt {
            Opt::Adam(o) => o.update(&mut t.model, &grads),
            Opt::Sgd(o) => o.update(&mut t.model, &grads),
        }
        .map_err(dev_err)?;
        t.model.try_zero_grads(&mut grads).map_err(dev_err)?;
        for (row, &i) in idx.iter().enumerate() {
            correct += (argmax(&host[row * NUM_CLASSES..(row + 1) * NUM_CLASSES]) == ys[i] as usize) as usize;
        }
        loss_sum += value as f64 * n as f64;
        seen += n;
        progress.batch(b + 1, loss_sum / seen as f64, correct as f64 / seen as f64);
    }
    Ok((loss_sum / seen.max(1) as f64, correct as f64 / seen.max(1) as f64))
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

/// A per-epoch seed from the model seed (SplitMix64 finaliser).
fn mix(seed: u64, epoch: u64) -> u64 {
    let mut z = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Keras-style progress: `Epoch 3/10` then
/// `1875/1875 [==============================] - 3s - loss: 0.3145 - accuracy: 0.8851`.
struct Progress {
    on: bool,
    tty: bool,
    total: usize,
    start: Instant,
    last_draw: Instant,
}

impl Progress {
    fn new(v: Verbosity, epoch: usize, epochs: usize, total: usize) -> Self {
        let on = v == Verbosity::Progress;
        if on {
            println!("Epoch {epoch}/{epochs}");
        }
        Progress {
            on,
            tty: std::io::stdout().is_terminal(),
            total,
            start: Instant::now(),
            last_draw: Instant::now(),
        }
    }

    fn bar(&self, done: usize) -> String {
        let width = 30;
        let filled = (done * width) / self.total.max(1);
        let mut bar = "=".repeat(filled);
        if filled < width {
            bar.push('>');
            bar.push_str(&" ".repeat(width - filled - 1));
        }
        let w = self.total.to_string().len();
        format!("{done:>w$}/{} [{bar}]", self.total)
    }

    fn batch(&mut self, done: usize, loss: f64, accuracy: f64) {
        if self.on && self.tty && self.last_draw.elapsed().as_millis() >= 100 {
            self.last_draw = Instant::now();
            print!(
                "\r{} - {:.0}s - loss: {loss:.4} - accuracy: {accuracy:.4}",
                self.bar(done),
                self.start.elapsed().as_secs_f64()
            );
            let _ = std::io::stdout().flush();
        }
    }

    fn finish(&self, loss: f64, accuracy: f64, val: Option<Evaluation>, seconds: f64) {
        if !self.on {
            return;
        }
        let val = val
            .map(|v| format!(" - val_loss: {:.4} - val_accuracy: {:.4}", v.loss, v.accuracy))
            .unwrap_or_default();
        println!(
            "{}{} - {:.1}s - loss: {loss:.4} - accuracy: {accuracy:.4}{val}",
            if self.tty { "\r" } else { "" },
            self.bar(self.total),
            seconds
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    /// A learnable toy problem: class c has a bright 4×4 square at a class-specific place, plus noise.
    pub(crate) fn toy(n: usize, seed: u64) -> (Array3<f32>, Array1<u8>) {
        let mut rng = crate::data::batch_rng(seed);
        let y: Array1<u8> = (0..n).map(|_| (rng.next_u64() % 10) as u8).collect();
        let mut x = Array::zeros((n, 28, 28));
        for (i, &c) in y.iter().enumerate() {
            let (r0, c0) = (2 + (c as usize / 5) * 12, 2 + (c as usize % 5) * 5);
            for r in 0..28 {
                for col in 0..28 {
                    let noise = (rng.next_u64() % 100) as f32 / 500.0;
                    let on = (r0..r0 + 4).contains(&r) && (c0..c0 + 4).contains(&col);
                    x[[i, r, col]] = if on { 0.8 + noise } else { noise };
                }
            }
        }
        (x, y)
    }

    fn quiet(arch: Arch, seed: u64) -> Model {
        let mut m = Model::new(arch, seed).unwrap();
        m.verbosity = Verbosity::Silent;
        m.compile(Optimizer::Adam { learning_rate: 1e-3 });
        m
    }

    #[test]
    fn every_architecture_learns_the_toy_problem() {
        let (x, y) = toy(400, 1);
        let (vx, vy) = toy(100, 2);
        for arch in Arch::ALL {
            let mut m = quiet(arch, 3);
            let before = m.evaluate_quiet(&vx, &vy).unwrap();
            let h = m.fit(&x, &y, 3, 32, Some((&vx, &vy))).unwrap();
            let after = m.evaluate_quiet(&vx, &vy).unwrap();
            assert_eq!(h.epochs.len(), 3);
            assert!(after.loss < before.loss, "{arch}: {before:?} -> {after:?}");
            assert!(after.accuracy > 0.6, "{arch}: {after:?}");
            assert_eq!(h.last().unwrap().val_accuracy, Some(after.accuracy));
        }
    }

    #[test]
    fn same_seed_same_history_and_weights() {
        let (x, y) = toy(200, 4);
        let run = |seed| {
            let mut m = quiet(Arch::Mlp, seed);
            let h = m.fit(&x, &y, 2, 16, None).unwrap();
            (h.epochs.iter().map(|e| (e.loss, e.accuracy)).collect::<Vec<_>>(), m.logits(x.view()).unwrap())
        };
        let (a, b, c) = (run(5), run(5), run(6));
        assert_eq!(a, b);
        assert_ne!(a.0, c.0);
    }

    #[test]
    fn history_has_keras_columns_and_csv() {
        let (x, y) = toy(64, 5);
        let mut m = quiet(Arch::Linear, 0);
        let h = m.fit(&x, &y, 2, 32, Some((&x, &y))).unwrap();
        let csv = h.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "epoch,loss,accuracy,val_loss,val_accuracy,seconds");
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("1,"));
        assert_eq!(lines[2].split(',').count(), 6);
        let no_val = m.fit(&x, &y, 1, 32, None).unwrap().to_csv();
        assert!(no_val.lines().nth(1).unwrap().contains(",,"), "{no_val}");
    }

    #[test]
    fn diverging_loss_stops_fit_naming_epoch_and_batch() {
        let (x, y) = toy(256, 6);
        let mut m = quiet(Arch::Linear, 0);
        m.compile(Optimizer::Sgd { learning_rate: 1e38, momentum: None });
        let before = m.logits(x.view()).unwrap();
        let e = m.fit(&x, &y, 2, 32, None).unwrap_err();
        assert!(matches!(e, Error::NonFiniteLoss { epoch: 1, .. }), "{e}");
        assert!(e.to_string().contains("lower the learning rate"), "{e}");
        assert!(e.to_string().contains("batch"), "{e}");
        assert_ne!(m.logits(x.view()).unwrap(), before, "it did train before diverging");
    }

    #[test]
    fn non_finite_pixels_are_rejected_before_training() {
        // A NaN pixel would be silently absorbed by ReLU and poison the weights: refuse it up front.
        let (mut x, y) = toy(96, 6);
        x[[50, 3, 3]] = f32::NAN;
        let mut m = quiet(Arch::Mlp, 0);
        let e = m.fit(&x, &y, 1, 32, None).unwrap_err().to_string();
        assert!(e.contains("image 50"), "{e}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let (x, y) = toy(10, 7);
        let mut m = Model::new(Arch::Linear, 0).unwrap();
        m.verbosity = Verbosity::Silent;
        assert!(m.fit(&x, &y, 1, 4, None).unwrap_err().to_string().contains("compile"));
        m.compile(Optimizer::Sgd { learning_rate: 0.1, momentum: Some(0.9) });
        assert!(m.fit(&x, &y, 1, 0, None).is_err());
        let y9 = y.slice(ndarray::s![..9]).to_owned();
        assert!(m.fit(&x, &y9, 1, 4, None).is_err());
        let mut y10 = y.clone();
        y10[0] = 10;
        assert!(m.fit(&x, &y10, 1, 4, None).is_err());
        let wrong = Array3::<f32>::zeros((2, 27, 28));
        assert!(m.predict(&wrong).unwrap_err().to_string().contains("batch of one"));
        m.fit(&x, &y, 1, 4, None).unwrap();
    }

    #[test]
    fn predict_gives_probabilities_and_classes_agree() {
        let (x, _) = toy(30, 8);
        let m = quiet(Arch::Cnn, 1);
        let p = m.predict(&x).unwrap();
        assert_eq!(p.shape(), &[30, 10]);
        for row in p.outer_iter() {
            assert!((row.sum() - 1.0).abs() < 1e-5);
        }
        let c = m.predict_classes(&x).unwrap();
        for (row, &k) in p.outer_iter().zip(&c) {
            assert_eq!(argmax(row.as_slice().unwrap()), k as usize);
        }
        let one = m.predict_one(x.index_axis(Axis(0), 4)).unwrap();
        assert!(one.iter().zip(p.row(4)).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    #[test]
    fn save_load_round_trip_and_wrong_architecture() {
        let (x, y) = toy(64, 9);
        let dir = tempfile::tempdir().unwrap();
        for arch in Arch::ALL {
            let mut m = quiet(arch, 2);
            m.fit(&x, &y, 1, 32, None).unwrap();
            let path = dir.path().join(format!("{arch}.safetensors"));
            m.save(&path).unwrap();
            let loaded = Model::load(arch, &path).unwrap();
            assert_eq!(loaded.predict(&x).unwrap(), m.predict(&x).unwrap(), "{arch}");
        }
        let e = Model::load(Arch::Mlp, dir.path().join("cnn.safetensors")).unwrap_err();
        assert!(matches!(e, Error::WeightsMismatch { .. }), "{e}");
        let e = Model::load(Arch::Mlp, dir.path().join("deep.safetensors")).unwrap_err();
        assert!(e.to_string().contains("--model"), "{e}");
        // Same names, other shapes: a hand-made file with `1.weight` of the wrong size.
        let mut linear = Model::load(Arch::Linear, dir.path().join("linear.safetensors")).unwrap();
        let before = linear.predict(&x).unwrap();
        assert!(linear.load_weights(dir.path().join("mlp.safetensors")).is_err());
        assert_eq!(linear.predict(&x).unwrap(), before, "a failed load leaves the model unchanged");
        std::fs::write(dir.path().join("junk.safetensors"), b"not weights").unwrap();
        assert!(matches!(
            Model::load(Arch::Linear, dir.path().join("junk.safetensors")).unwrap_err(),
            Error::Weights { .. }
        ));
        assert!(matches!(Model::load(Arch::Linear, dir.path().join("none")).unwrap_err(), Error::Io { .. }));
    }

    #[test]
    fn tensor_ids_are_read_and_the_counter_advances_past_the_parameters() {
        let dev = Dev::seed_from_u64(0);
        let a: Tensor<Rank1<3>, f32, Dev> = dev.zeros();
        let b: Tensor<Rank1<3>, f32, Dev> = dev.zeros();
        let (ia, ib) = (model::tensor_id(&a).unwrap(), model::tensor_id(&b).unwrap());
        assert!(ib > ia, "{ia} {ib}");
        let m = Model::new(Arch::Linear, 0).unwrap();
        let Net::Linear(t) = &m.net else { unreachable!() };
        let w = model::tensor_id(&t.model.1.weight).unwrap();
        advance_ids_past(&t.model, &dev).unwrap();
        let probe: Tensor<Rank0, f32, Dev> = dev.zeros();
        assert!(model::tensor_id(&probe).unwrap() > w);
    }

    #[test]
    fn summary_matches_keras() {
        let m = Model::new(Arch::Mlp, 0).unwrap();
        let s = m.summary().to_string();
        assert!(s.contains("Total params: 101,770"), "{s}");
        assert!(s.contains("dense (Dense)"));
        assert!(s.contains("(None, 128)"));
    }
}
