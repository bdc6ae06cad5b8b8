//! Steps 5–8 of the guide — **compile, fit, evaluate, predict** — named as Keras names them, for any
//! network type.
//!
//! ```no_run
//! use fashion::prelude::*;
//! let data = load_data()?;
//! let (x, y) = (data.train.normalized(), &data.train.labels);
//! type Wide = (Flatten<784>, Linear<784, 256>, ReLU, DropoutOneIn<5>, Linear<256, 10>);
//! let mut model = Model::<Wide>::new(42)?;                                // build
//! model.compile(Adam { learning_rate: 1e-3 });                            // compile
//! let history = model.fit(&x, y, FitOptions { epochs: 10, ..Default::default() })?; // fit
//! let test = model.evaluate(&data.test.normalized(), &data.test.labels)?;
//! println!("Test accuracy: {:.4}", test.accuracy);
//! # Ok::<(), fashion::Error>(())
//! ```
//!
//! | file | what |
//! |---|---|
//! | this one | [`Model`]: build, compile, fit, evaluate, predict |
//! | [`step`] | one training step: forward → loss → backward → update |
//! | [`optimizer`] | [`Adam`], [`Sgd`] and their state |
//! | `history.rs` | [`History`], what `fit` returns |
//! | `progress.rs` | Keras-style progress lines |
//! | `checkpoint.rs` | save and load weights |
//! | `evcxr_ids.rs` | why and how a model survives being used across notebook cells |
//!
//! `Model<N>` is generic, so for a network type written in a notebook cell its methods are compiled in
//! the cell (without optimisation); they only loop over batches and call the layers and the non-generic
//! functions of [`step`] and of the kernels, so the cell trains at the speed of the same type built into
//! this crate (measured: README, "Your own network").

mod checkpoint;
mod evcxr_ids;
mod history;
pub mod optimizer;
mod progress;
pub mod step;

use std::fmt;
use std::time::Instant;

use dfdx::prelude::*;
use ndarray::{Array1, Array2, Array3, ArrayView2, ArrayView3, Axis};
use rayon::prelude::*;

use crate::data::{BatchOrder, Batches, LastBatch, NUM_CLASSES};
use crate::error::{Error, Result};
use crate::model::{self, Dev, Images, Layer, Logits, Network, Rows, Summary};

pub use history::{EpochLog, History};
pub use optimizer::{Adam, Optimizer, Sgd};
pub use step::argmax;

use optimizer::OptState;
use progress::Progress;
use step::{dev_err, Batch, PIXELS};

/// Images per forward pass in `evaluate` / `predict` (batches run on all cores at once).
const INFERENCE_BATCH: usize = 1000;

/// How much `fit` and `evaluate` print (Keras' `verbose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// Nothing (`verbose=0`).
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

/// What `fit` does besides the data: Keras' keyword arguments, with Keras' defaults.
///
/// ```no_run
/// # use fashion::prelude::*;
/// # fn f(model: &mut Model<MlpArch>, x: &Array3<f32>, y: &Array1<u8>) -> Result<()> {
/// model.fit(x, y, FitOptions { epochs: 10, validation_split: 0.1, ..Default::default() })?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FitOptions<'a> {
    /// Passes over the training images (Keras' default: 1).
    pub epochs: usize,
    /// Images per gradient step (32).
    pub batch_size: usize,
    /// Images and labels scored after every epoch (`val_loss`, `val_accuracy`); never trained on.
    pub validation_data: Option<(&'a Array3<f32>, &'a Array1<u8>)>,
    /// Hold out this fraction of the training images — the last ones, before shuffling, as Keras
    /// does — as validation data (0.0: none). Not together with `validation_data`.
    pub validation_split: f64,
    /// Shuffle the training images before each epoch (true); without, batches go in order.
    pub shuffle: bool,
    /// What to print.
    pub verbose: Verbosity,
}

impl Default for FitOptions<'_> {
    fn default() -> Self {
        FitOptions { epochs: 1, batch_size: 32, validation_data: None, validation_split: 0.0, shuffle: true, verbose: Verbosity::Progress }
    }
}

/// A network of type `N` (any tuple of this crate's layers from images to logits), its weights, and —
/// after `compile` — its optimizer with its state.
pub struct Model<N: Network> {
    name: String,
    seed: u64,
    dev: Dev,
    net: N::Net,
    opt: Option<OptState<N::Net>>,
    /// Epochs trained so far (shuffling differs from one epoch to the next, across `fit` calls too).
    epochs_done: usize,
    /// What `evaluate` prints.
    pub verbosity: Verbosity,
}

impl<N: Network> Model<N> {
    /// Builds the network with weights drawn from `seed` (same seed → same weights), initialised as
    /// Keras does (Glorot-uniform weights, zero biases). A shape the compiler cannot check — the `N` of
    /// `Flatten<N>` — is checked here: [`Error::Network`].
    pub fn new(seed: u64) -> Result<Model<N>> {
        let dev = Dev::seed_from_u64(seed);
        #[cfg(not(feature = "cuda"))]
        dfdx::flush_denormals_to_zero();
        #[allow(unused_mut)]
        let mut net = dev.try_build_module::<N, f32>().map_err(dev_err)?;
        #[cfg(feature = "cuda")]
        model::glorot_init(&mut net).map_err(dev_err)?;
        let mut model = Model::<N> { name: "sequential".into(), seed, dev, net, opt: None, epochs_done: 0, verbosity: Verbosity::Progress };
        model.describe()?;
        // The first layer's input is the images: nothing needs its gradient.
        Layer::input_is_data(&mut model.net);
        Ok(model)
    }

    /// The same model under another name (Keras' `name=`), shown by `summary` and in errors.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device tensors live on.
    pub fn device(&self) -> &Dev {
        &self.dev
    }

    /// The built network: its layers and weights, as dfdx modules (`model.network().1.weight`).
    pub fn network(&self) -> &N::Net {
        &self.net
    }

    /// Number of trainable parameters, counted from the tensors.
    pub fn count_params(&self) -> usize {
        self.net.num_trainable_params()
    }

    fn describe(&self) -> Result<Rows> {
        let mut rows = Rows::default();
        self.net
            .describe(&[28, 28], &mut rows)
            .map_err(|reason| Error::Network { network: model::short_type_name::<N>(), reason })?;
        Ok(rows)
    }

    /// Keras' `model.summary()`: every layer with its output shape and parameter count, read from the
    /// network's type and weights.
    pub fn summary(&self) -> Summary {
        Summary {
            name: self.name.clone(),
            type_name: model::short_type_name::<N>(),
            layers: self.describe().map(|r| r.rows).unwrap_or_default(),
            total_params: self.count_params(),
        }
    }

    /// Chooses the optimizer: `Adam { learning_rate: 1e-3 }` or `Sgd { .. }`. The loss is the sparse
    /// categorical cross-entropy of the logits and the metric the accuracy (the guide's only choices).
    /// Compiling again resets the optimizer's state, as in Keras.
    pub fn compile(&mut self, optimizer: impl Into<Optimizer>) {
        self.opt = Some(OptState::new(optimizer.into(), &self.net));
    }

    /// The optimizer given to `compile`, if any.
    pub fn optimizer(&self) -> Option<Optimizer> {
        self.opt.as_ref().map(|o| o.config)
    }

    /// Trains on `(x, y)` — `(n, 28, 28)` normalized images and their `n` labels — in mini-batches,
    /// printing Keras-style progress, and scores the validation data after each epoch.
    ///
    /// Stops with [`Error::NonFiniteLoss`] (naming epoch and batch) if the loss becomes NaN or infinite.
    pub fn fit(&mut self, x: &Array3<f32>, y: &Array1<u8>, options: FitOptions) -> Result<History> {
        let opt = self.opt.as_mut().ok_or_else(|| Error::InvalidArgument("call model.compile(optimizer) before fit()".into()))?;
        let data = step::FitData::new(x, y, &options)?;
        evcxr_ids::advance_ids_past(&self.net, &self.dev)?;
        let mut grads = self.net.try_alloc_grads().map_err(dev_err)?;
        let mut history = History::default();
        for epoch in 1..=options.epochs {
            let order = match options.shuffle {
                true => BatchOrder::Shuffled { seed: step::mix(self.seed, self.epochs_done as u64) },
                false => BatchOrder::Sequential,
            };
            let batches = Batches::new(data.len(), options.batch_size, order, LastBatch::Keep)?;
            let mut progress = Progress::new(options.verbose, epoch, options.epochs, batches.num_batches());
            let start = Instant::now();
            let mut total = step::StepStats::default();
            for (b, idx) in batches.enumerate() {
                let batch = Batch::gather(&self.dev, data.images(), data.labels(), &idx)?;
                let (stats, g) = step::train_step(&mut self.net, opt, batch, grads, (epoch, b + 1))?;
                grads = g;
                total.add(stats);
                progress.batch(b + 1, total.mean_loss(), total.accuracy());
            }
            let seconds = start.elapsed().as_secs_f64();
            self.epochs_done += 1;
            let val = match data.validation() {
                Some((vx, vy)) => Some(step::score(&infer(&self.net, &self.dev, vx)?, vy)),
                None => None,
            };
            progress.finish(total.mean_loss(), total.accuracy(), val, seconds);
            history.epochs.push(EpochLog {
                epoch,
                loss: total.mean_loss(),
                accuracy: total.accuracy(),
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
        step::check_inputs(x.view(), y)?;
        if y.is_empty() {
            return Err(Error::InvalidArgument("cannot evaluate on an empty set".into()));
        }
        let ev = step::score(&self.logits(x.view())?, y.view());
        if self.verbosity == Verbosity::Progress {
            let batches = y.len().div_ceil(32);
            println!("{batches}/{batches} - {:.0}s - {ev}", start.elapsed().as_secs_f64());
        }
        Ok(ev)
    }

    /// The raw model outputs `(n, 10)` for `(n, 28, 28)` normalized images, in batches of 1000 spread
    /// over all cores.
    pub fn logits(&self, x: ArrayView3<f32>) -> Result<Array2<f32>> {
        infer(&self.net, &self.dev, x)
    }

    /// Class probabilities `(n, 10)` (softmax of the logits), like Keras' `probability_model.predict`.
    pub fn predict(&self, x: &Array3<f32>) -> Result<Array2<f32>> {
        Ok(step::softmax_rows(self.logits(x.view())?))
    }

    /// Predicts one image `(28, 28)`: it becomes a batch of one, as the guide explains.
    pub fn predict_one(&self, image: ArrayView2<f32>) -> Result<Array1<f32>> {
        let batch = image.insert_axis(Axis(0)).to_owned();
        Ok(self.predict(&batch)?.row(0).to_owned())
    }

    /// The most probable class of each image.
    pub fn predict_classes(&self, x: &Array3<f32>) -> Result<Array1<u8>> {
        Ok(step::classes(&self.logits(x.view())?))
    }
}

/// The logits of `x` through `net`, in batches of [`INFERENCE_BATCH`] on all cores at once.
fn infer<M: Module<Images, Output = Logits, Error = <Dev as HasErr>::Err> + Sync>(net: &M, dev: &Dev, x: ArrayView3<f32>) -> Result<Array2<f32>> {
    let xs = step::check_images(x)?;
    let n = x.len_of(Axis(0));
    let starts: Vec<usize> = (0..n).step_by(INFERENCE_BATCH).collect();
    let parts = starts
        .par_iter()
        .map(|&start| -> Result<Vec<f32>> {
            let stop = (start + INFERENCE_BATCH).min(n);
            let batch = step::images(dev, xs[start * PIXELS..stop * PIXELS].to_vec())?;
            Ok(step::host_logits(&net.try_forward(batch).map_err(dev_err)?))
        })
        .collect::<Result<Vec<_>>>()?;
    Array2::from_shape_vec((n, NUM_CLASSES), parts.concat()).map_err(|e| Error::InvalidArgument(e.to_string()))
}

impl<N: Network> fmt::Debug for Model<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("type", &model::short_type_name::<N>())
            .field("params", &self.count_params())
            .field("optimizer", &self.optimizer())
            .field("epochs_trained", &self.epochs_done)
            .finish()
    }
}
