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
//! | `options.rs` | [`FitOptions`], [`EarlyStopping`], [`RunLog`] |
//! | `run_log.rs` | writing a run's folder (parameters, history, TensorBoard events, weights) |
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
mod options;
mod progress;
mod run_log;
pub mod step;

use std::fmt;
use std::time::Instant;

use dfdx::prelude::*;
use ndarray::{Array1, Array2, Array3, ArrayView2, ArrayView3, Axis};
#[cfg(not(feature = "cuda"))]
use rayon::prelude::*;

use crate::data::{BatchOrder, Batches, LastBatch, NUM_CLASSES};
use crate::error::{Error, Result};
use crate::model::{self, Dev, Images, Layer, Logits, Network, Summary};

pub use history::{EpochLog, History};
pub use options::{EarlyStopping, FitOptions, Monitor, RunLog};
pub use optimizer::{Adam, Optimizer, Sgd};
pub use step::argmax;

use crate::json;
use optimizer::OptState;
use run_log::RunWriter;
use progress::Progress;
use step::{dev_err, Batch, PIXELS};

#[cfg(not(feature = "cuda"))]
use crate::kernels::on_pool;

/// With the `cuda` feature the work runs on the GPU: `f` runs here.
#[cfg(feature = "cuda")]
fn on_pool<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Images per forward pass in `evaluate` / `predict` (batches run on all cores at once). 128 rather than
/// 1000: the CNN's activations of two 1000-image batches in flight took peak memory from 320 to 670 MB,
/// and smaller batches stay in cache (CNN prediction of 10,000 images 0.31 s → 0.25 s; MLP unchanged).
const INFERENCE_BATCH: usize = 128;

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
        model::summarize::<N>(&net, "sequential")?;
        let mut model = Model::<N> { name: "sequential".into(), seed, dev, net, opt: None, epochs_done: 0, verbosity: Verbosity::Progress };
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

    /// How messages name this model: its name, or its type while it has the default name.
    fn label(&self) -> String {
        match self.name.as_str() {
            "sequential" => model::short_type_name::<N>(),
            name => name.to_string(),
        }
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

    /// Keras' `model.summary()`: every layer with its output shape and parameter count, read from the
    /// network's type and weights.
    pub fn summary(&self) -> Summary {
        // `new` checked that the layers fit the images, so describing them cannot fail here.
        model::summarize::<N>(&self.net, &self.name).unwrap_or_else(|_| Summary {
            name: self.name.clone(),
            type_name: model::short_type_name::<N>(),
            layers: Vec::new(),
            total_params: self.count_params(),
        })
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
    /// printing Keras-style progress, scoring the validation data after each epoch, stopping early and
    /// logging the run when `options` say so.
    ///
    /// Stops with [`Error::NonFiniteLoss`] (naming epoch and batch) if the loss becomes NaN or infinite;
    /// a run log of a failed fit is removed.
    pub fn fit(&mut self, x: &Array3<f32>, y: &Array1<u8>, options: FitOptions) -> Result<History> {
        let Some(optimizer) = self.optimizer() else {
            return Err(Error::InvalidArgument("call model.compile(optimizer) before fit()".into()));
        };
        optimizer.check()?;
        if options.epochs == 0 {
            return Err(Error::InvalidArgument("epochs must be at least 1".into()));
        }
        let data = step::FitData::new(x, y, &options)?;
        let summary = model::summarize::<N>(&self.net, &self.name)?;
        step::check_memory(&summary, options.batch_size.min(data.len()), step::available_memory())?;
        if let Some(stop) = options.early_stopping.filter(|s| s.monitor.needs_validation() && data.validation().is_none()) {
            return Err(Error::InvalidArgument(format!(
                "early stopping on {} needs validation data: set validation_split (e.g. 0.1) or validation_data",
                stop.monitor.name()
            )));
        }
        let mut run = match options.run.clone() {
            Some(log) => Some(RunWriter::start(log, self.run_meta(&options, &data), data.validation().is_some())?),
            None => None,
        };
        let trained = self.train_epochs(&data, &options, run.as_mut());
        let Some(run) = run else { return trained };
        let finished = trained.and_then(|history| {
            if run.wants_weights() {
                self.save(run.folder().join("model.safetensors"))?;
            }
            Ok(history)
        });
        match finished {
            Ok(history) => {
                let dir = run.finish(&history)?;
                if options.verbose == Verbosity::Progress {
                    println!("Run logged in {}", dir.display());
                }
                Ok(history)
            }
            Err(e) => {
                run.abandon();
                Err(e)
            }
        }
    }

    /// The epochs of `fit`.
    fn train_epochs(&mut self, data: &step::FitData, options: &FitOptions, mut run: Option<&mut RunWriter>) -> Result<History> {
        let opt = self.opt.as_mut().ok_or_else(|| Error::InvalidArgument("call model.compile(optimizer) before fit()".into()))?;
        evcxr_ids::advance_ids_past(&self.net, &self.dev)?;
        let mut grads = self.net.try_alloc_grads().map_err(dev_err)?;
        let mut history = History::default();
        let mut stopper = options.early_stopping.map(Stopper::new);
        let mut step_count = 0;
        for epoch in 1..=options.epochs {
            let order = match options.shuffle {
                true => BatchOrder::Shuffled { seed: step::mix(self.seed, self.epochs_done as u64) },
                false => BatchOrder::Sequential,
            };
            let batches = Batches::new(data.len(), options.batch_size, order, LastBatch::Keep)?;
            let mut progress = Progress::new(options.verbose, epoch, options.epochs, batches.num_batches());
            let start = Instant::now();
            // The batches run on a thread of the kernels' pool, where handing half a product to the
            // other core is cheap.
            let (net, dev, run) = (&mut self.net, &self.dev, &mut run);
            let (total, g) = on_pool(|| -> Result<_> {
                let (mut total, mut grads) = (step::StepStats::default(), grads);
                for (b, idx) in batches.enumerate() {
                    let batch = Batch::gather(dev, data.images(), data.labels(), &idx)?;
                    let (stats, g) = step::train_step(net, opt, batch, grads, (epoch, b + 1))?;
                    grads = g;
                    total.add(stats);
                    step_count += 1;
                    if let Some(w) = run.as_deref_mut() {
                        w.batch(step_count, stats.mean_loss())?;
                    }
                    progress.batch(b + 1, total.mean_loss(), total.accuracy());
                }
                Ok((total, grads))
            })?;
            grads = g;
            let seconds = start.elapsed().as_secs_f64();
            self.epochs_done += 1;
            let val = match data.validation() {
                Some((vx, vy)) => Some(step::score(&infer(&self.net, &self.dev, vx)?, vy)),
                None => None,
            };
            progress.finish(total.mean_loss(), total.accuracy(), val, seconds);
            let log = EpochLog {
                epoch,
                loss: total.mean_loss(),
                accuracy: total.accuracy(),
                val_loss: val.map(|v| v.loss),
                val_accuracy: val.map(|v| v.accuracy),
                seconds,
            };
            if let Some(w) = run.as_deref_mut() {
                w.epoch(&log)?;
            }
            history.epochs.push(log);
            if let Some(s) = stopper.as_mut() {
                if s.improved(&log) {
                    history.best_epoch = Some(epoch);
                    if s.config.restore_best_weights {
                        s.best_net = Some(self.net.clone());
                    }
                } else if s.should_stop() {
                    history.stopped_early = true;
                    let best = history.best_epoch.unwrap_or(epoch);
                    let restore = s.best_net.take();
                    if options.verbose == Verbosity::Progress {
                        let restoring = if restore.is_some() { format!("; restoring the weights of epoch {best}") } else { String::new() };
                        println!("Epoch {epoch}: early stopping ({} best at epoch {best}){restoring}", s.config.monitor.name());
                    }
                    if let Some(net) = restore {
                        self.net = net;
                    }
                    break;
                }
            }
        }
        Ok(history)
    }

    /// What a run log records about this fit.
    fn run_meta(&self, options: &FitOptions, data: &step::FitData) -> Vec<(String, json::Value)> {
        let opt = self.optimizer().unwrap_or_default();
        let validation = match (options.validation_data.is_some(), options.validation_split > 0.0) {
            (true, _) => "validation_data",
            (false, true) => "validation_split",
            _ => "none",
        };
        let stopping = options.early_stopping.map(|s| {
            format!("{}, patience {}, min_delta {}{}", s.monitor.name(), s.patience, s.min_delta, if s.restore_best_weights { ", restore best weights" } else { "" })
        });
        vec![
            ("name".into(), options.run.as_ref().map(|r| r.name.clone()).into()),
            ("network".into(), model::short_type_name::<N>().into()),
            ("model".into(), self.name.clone().into()),
            ("params_count".into(), self.count_params().into()),
            ("epochs".into(), options.epochs.into()),
            ("batch_size".into(), options.batch_size.into()),
            ("optimizer".into(), opt.name().into()),
            ("learning_rate".into(), opt.learning_rate().into()),
            ("seed".into(), self.seed.into()),
            ("validation".into(), validation.into()),
            ("validation_split".into(), options.validation_split.into()),
            ("shuffle".into(), options.shuffle.into()),
            ("train_images".into(), data.len().into()),
            ("validation_images".into(), data.validation().map(|(_, y)| y.len()).into()),
            ("early_stopping".into(), stopping.into()),
        ]
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

    /// The raw model outputs `(n, 10)` for `(n, 28, 28)` normalized images, in batches of 128 spread
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

/// The logits of `x` through `net`, in batches of [`INFERENCE_BATCH`] (on the CPU: on all cores at once).
fn infer<M: Module<Images, Output = Logits, Error = <Dev as HasErr>::Err> + model::Threads>(net: &M, dev: &Dev, x: ArrayView3<f32>) -> Result<Array2<f32>> {
    let xs = step::check_images(x)?;
    let n = x.len_of(Axis(0));
    let starts: Vec<usize> = (0..n).step_by(INFERENCE_BATCH).collect();
    let batch = |&start: &usize| -> Result<Vec<f32>> {
        let stop = (start + INFERENCE_BATCH).min(n);
        let batch = step::images(dev, xs[start * PIXELS..stop * PIXELS].to_vec())?;
        Ok(step::host_logits(&net.try_forward(batch).map_err(dev_err)?))
    };
    #[cfg(not(feature = "cuda"))]
    let parts = starts.par_iter().map(batch).collect::<Result<Vec<_>>>()?;
    #[cfg(feature = "cuda")]
    let parts = starts.iter().map(batch).collect::<Result<Vec<_>>>()?;
    Array2::from_shape_vec((n, NUM_CLASSES), parts.concat()).map_err(|e| Error::InvalidArgument(e.to_string()))
}

/// Early stopping's state through the epochs.
struct Stopper<M> {
    config: EarlyStopping,
    best: Option<f64>,
    wait: usize,
    best_net: Option<M>,
}

impl<M> Stopper<M> {
    fn new(config: EarlyStopping) -> Self {
        Stopper { config, best: None, wait: 0, best_net: None }
    }

    /// Records the epoch; true when its monitored value is the best so far (by more than `min_delta`).
    fn improved(&mut self, e: &EpochLog) -> bool {
        let m = self.config.monitor;
        let value = match m {
            Monitor::ValLoss => e.val_loss,
            Monitor::ValAccuracy => e.val_accuracy,
            Monitor::Loss => Some(e.loss),
            Monitor::Accuracy => Some(e.accuracy),
        };
        let Some(v) = value else { return false };
        let better = match self.best {
            None => true,
            Some(b) if m.lower_is_better() => v < b - self.config.min_delta,
            Some(b) => v > b + self.config.min_delta,
        };
        if better {
            self.best = Some(v);
            self.wait = 0;
        } else {
            self.wait += 1;
        }
        better
    }

    /// After an epoch without improvement: has patience run out?
    fn should_stop(&self) -> bool {
        self.wait >= self.config.patience
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CnnArch, DeepMlpArch, DropoutOneIn, Flatten, Linear, LinearArch, MlpArch, ReLU};
    use ndarray::{s, Array};

    /// A network defined outside the crate's list, as in a notebook cell.
    type Cell = (Flatten<784>, Linear<784, 48>, ReLU, DropoutOneIn<5>, Linear<48, 10>);

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

    fn quiet<N: Network>(seed: u64) -> Model<N> {
        let mut m = Model::<N>::new(seed).unwrap();
        m.verbosity = Verbosity::Silent;
        m.compile(Adam { learning_rate: 1e-3 });
        m
    }

    fn opts(epochs: usize, batch_size: usize) -> FitOptions<'static> {
        FitOptions { epochs, batch_size, verbose: Verbosity::Silent, ..Default::default() }
    }

    fn learns<N: Network>() {
        let (x, y) = toy(400, 1);
        let (vx, vy) = toy(100, 2);
        let mut m = quiet::<N>(3);
        let before = m.evaluate(&vx, &vy).unwrap();
        let h = m.fit(&x, &y, FitOptions { validation_data: Some((&vx, &vy)), ..opts(3, 32) }).unwrap();
        let after = m.evaluate(&vx, &vy).unwrap();
        let name = model::short_type_name::<N>();
        assert_eq!(h.epochs.len(), 3);
        assert!(after.loss < before.loss, "{name}: {before:?} -> {after:?}");
        assert!(after.accuracy > 0.6, "{name}: {after:?}");
        assert_eq!(h.last().unwrap().val_accuracy, Some(after.accuracy));
    }

    #[test]
    fn every_network_learns_the_toy_problem() {
        learns::<LinearArch>();
        learns::<MlpArch>();
        learns::<DeepMlpArch>();
        learns::<CnnArch>();
        learns::<Cell>();
    }

    #[test]
    fn same_seed_same_history_and_weights() {
        let (x, y) = toy(200, 4);
        let run = |seed| {
            let mut m = quiet::<Cell>(seed);
            let h = m.fit(&x, &y, opts(2, 16)).unwrap();
            (h.epochs.iter().map(|e| (e.loss, e.accuracy)).collect::<Vec<_>>(), m.logits(x.view()).unwrap())
        };
        let (a, b, c) = (run(5), run(5), run(6));
        assert_eq!(a, b);
        assert_ne!(a.0, c.0);
    }

    /// Keras' `validation_split`: the last images, before shuffling, are held out and scored.
    #[test]
    fn validation_split_holds_out_the_last_images() {
        let (x, y) = toy(100, 5);
        let mut a = quiet::<LinearArch>(0);
        let h = a.fit(&x, &y, FitOptions { validation_split: 0.2, ..opts(1, 16) }).unwrap();
        let (tx, ty) = (x.slice(s![..80, .., ..]).to_owned(), y.slice(s![..80]).to_owned());
        let (vx, vy) = (x.slice(s![80.., .., ..]).to_owned(), y.slice(s![80..]).to_owned());
        let mut b = quiet::<LinearArch>(0);
        let h2 = b.fit(&tx, &ty, FitOptions { validation_data: Some((&vx, &vy)), ..opts(1, 16) }).unwrap();
        assert_eq!(h, { let mut h2 = h2; h2.epochs[0].seconds = h.epochs[0].seconds; h2 });
        let both = FitOptions { validation_split: 0.2, validation_data: Some((&vx, &vy)), ..opts(1, 16) };
        assert!(a.fit(&x, &y, both).unwrap_err().to_string().contains("not both"));
        assert!(a.fit(&x, &y, FitOptions { validation_split: 1.0, ..opts(1, 16) }).is_err());
    }

    #[test]
    fn without_shuffle_batches_go_in_order_and_history_is_keras_shaped() {
        let (x, y) = toy(64, 5);
        let mut m = quiet::<LinearArch>(0);
        let a = m.fit(&x, &y, FitOptions { shuffle: false, ..opts(1, 32) }).unwrap();
        let mut m2 = quiet::<LinearArch>(0);
        let b = m2.fit(&x, &y, FitOptions { shuffle: false, ..opts(1, 32) }).unwrap();
        assert_eq!(a.epochs[0].loss, b.epochs[0].loss);
        let lines: Vec<String> = a.to_csv().lines().map(String::from).collect();
        assert_eq!(lines[0], "epoch,loss,accuracy,val_loss,val_accuracy,seconds");
        assert!(lines[1].starts_with("1,") && lines[1].contains(",,"), "{lines:?}");
    }

    #[test]
    fn diverging_loss_stops_fit_naming_epoch_and_batch() {
        let (x, y) = toy(256, 6);
        let mut m = quiet::<LinearArch>(0);
        m.compile(Sgd { learning_rate: 1e38, momentum: 0.0 });
        let before = m.logits(x.view()).unwrap();
        let e = m.fit(&x, &y, opts(2, 32)).unwrap_err();
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
        let mut m = quiet::<MlpArch>(0);
        let e = m.fit(&x, &y, opts(1, 32)).unwrap_err().to_string();
        assert!(e.contains("image 50"), "{e}");
    }

    #[test]
    fn a_network_that_does_not_fit_the_images_is_refused_by_new() {
        type Wrong = (Flatten<100>, Linear<100, 10>);
        let e = Model::<Wrong>::new(0).unwrap_err();
        assert!(matches!(e, Error::Network { .. }) && e.to_string().contains("write Flatten<784>"), "{e}");
    }

    #[test]
    fn settings_that_cannot_work_are_errors_naming_the_fix() {
        let (x, y) = toy(40, 7);
        let mut m = quiet::<LinearArch>(0);
        for (opt, want) in [
            (Optimizer::Adam(Adam { learning_rate: -1.0 }), "positive number"),
            (Optimizer::Adam(Adam { learning_rate: f64::NAN }), "positive number"),
            (Optimizer::Sgd(Sgd { learning_rate: 0.1, momentum: 1.5 }), "momentum"),
        ] {
            m.compile(opt);
            let e = m.fit(&x, &y, opts(1, 8)).unwrap_err().to_string();
            assert!(e.contains(want), "{opt:?}: {e}");
        }
        m.compile(Adam::default());
        assert!(m.fit(&x, &y, opts(0, 8)).unwrap_err().to_string().contains("epochs must be at least 1"));
    }

    /// Weights with a NaN (from a run that diverged) are refused when loaded.
    #[test]
    fn weights_holding_nan_are_refused() {
        use ::safetensors::tensor::{Dtype, TensorView};
        let dir = tempfile::tempdir().unwrap();
        let mut w = vec![0f32; 10 * 784];
        w[5] = f32::NAN;
        let (wb, bb): (Vec<u8>, Vec<u8>) = (w.iter().flat_map(|v| v.to_le_bytes()).collect(), vec![0u8; 40]);
        let tensors = vec![
            ("1.weight", TensorView::new(Dtype::F32, vec![10, 784], &wb).unwrap()),
            ("1.bias", TensorView::new(Dtype::F32, vec![10], &bb).unwrap()),
        ];
        let path = dir.path().join("nan.safetensors");
        std::fs::write(&path, ::safetensors::serialize(tensors, &None).unwrap()).unwrap();
        let e = Model::<LinearArch>::load(&path).unwrap_err().to_string();
        assert!(e.contains("`1.weight` holds a NaN") && e.contains("element 5"), "{e}");
    }

    /// A batch whose activations would not fit in memory is refused before training, naming the largest
    /// that fits; the estimate is within the measured 0.8 MB per CNN image.
    #[test]
    fn batches_too_large_for_memory_are_refused_naming_one_that_fits() {
        let cnn = Model::<CnnArch>::new(0).unwrap().summary();
        let per = step::bytes_per_image(&cnn);
        assert!((800_000..1_200_000).contains(&per), "{per}");
        let e = step::check_memory(&cnn, 100_000, Some(24_000_000_000)).unwrap_err().to_string();
        assert!(e.contains("batch_size 100000") && e.contains(&format!("the largest batch that fits is {}", 12_000_000_000 / per)), "{e}");
        assert!(step::check_memory(&cnn, 64, Some(24_000_000_000)).is_ok());
        assert!(step::check_memory(&cnn, 100_000, None).is_ok(), "unknown memory: no check");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let (x, y) = toy(10, 7);
        let mut m = Model::<LinearArch>::new(0).unwrap();
        assert!(m.fit(&x, &y, opts(1, 4)).unwrap_err().to_string().contains("compile"));
        m.compile(Sgd { learning_rate: 0.1, momentum: 0.9 });
        assert!(m.fit(&x, &y, opts(1, 0)).is_err());
        let y9 = y.slice(s![..9]).to_owned();
        assert!(m.fit(&x, &y9, opts(1, 4)).is_err());
        let mut y10 = y.clone();
        y10[0] = 10;
        assert!(m.fit(&x, &y10, opts(1, 4)).is_err());
        let wrong = Array3::<f32>::zeros((2, 27, 28));
        assert!(m.predict(&wrong).unwrap_err().to_string().contains("batch of one"));
        m.fit(&x, &y, opts(1, 4)).unwrap();
    }

    #[test]
    fn predict_gives_probabilities_and_classes_agree() {
        let (x, _) = toy(30, 8);
        let m = quiet::<CnnArch>(1);
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

    fn round_trip<N: Network>(dir: &std::path::Path, name: &str) {
        let (x, y) = toy(64, 9);
        let mut m = quiet::<N>(2);
        m.fit(&x, &y, opts(1, 32)).unwrap();
        let path = dir.join(format!("{name}.safetensors"));
        m.save(&path).unwrap();
        let loaded = Model::<N>::load(&path).unwrap();
        assert_eq!(loaded.predict(&x).unwrap(), m.predict(&x).unwrap(), "{name}");
    }

    #[test]
    fn save_load_round_trip_and_wrong_network() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        round_trip::<LinearArch>(d, "linear");
        round_trip::<MlpArch>(d, "mlp");
        round_trip::<CnnArch>(d, "cnn");
        round_trip::<Cell>(d, "cell");
        let e = Model::<MlpArch>::load(d.join("cnn.safetensors")).unwrap_err();
        assert!(matches!(e, Error::WeightsMismatch { .. }), "{e}");
        let e = Model::<MlpArch>::load(d.join("cell.safetensors")).unwrap_err().to_string();
        assert!(e.contains(r#"the file has tensors ["1.bias", "1.weight", "4.bias", "4.weight"]"#), "{e}");
        let e = Model::<crate::model::WideArch>::load(d.join("mlp.safetensors")).unwrap_err();
        assert!(e.to_string().contains("`1.weight` has shape [128, 784], expected [256, 784]"), "{e}");
        // A failed load leaves the model unchanged.
        let (x, _) = toy(8, 1);
        let mut linear = Model::<LinearArch>::load(d.join("linear.safetensors")).unwrap();
        let before = linear.predict(&x).unwrap();
        assert!(linear.load_weights(d.join("mlp.safetensors")).is_err());
        assert_eq!(linear.predict(&x).unwrap(), before);
        std::fs::write(d.join("junk.safetensors"), b"not weights").unwrap();
        assert!(matches!(Model::<LinearArch>::load(d.join("junk.safetensors")).unwrap_err(), Error::Weights { .. }));
        assert!(matches!(Model::<LinearArch>::load(d.join("none")).unwrap_err(), Error::Io { .. }));
        // Larger than the network's tensors (here: the CNN's weights into the linear model), or not a
        // file at all: refused before reading.
        let e = Model::<LinearArch>::load(d.join("cnn.safetensors")).unwrap_err().to_string();
        assert!(e.contains("this network's weights take 31400"), "{e}");
        let e = Model::<LinearArch>::load("/dev/zero").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    /// Dropout is active in `fit` only: inference gives the same output twice, training steps differ
    /// from the same network without dropout.
    #[test]
    fn dropout_acts_while_training_only() {
        type NoDrop = (Flatten<784>, Linear<784, 48>, ReLU, Linear<48, 10>);
        let (x, y) = toy(64, 3);
        let m = quiet::<Cell>(4);
        assert_eq!(m.logits(x.view()).unwrap(), m.logits(x.view()).unwrap());
        let (mut a, mut b) = (quiet::<Cell>(4), quiet::<NoDrop>(4));
        assert_eq!(a.logits(x.view()).unwrap(), b.logits(x.view()).unwrap(), "same weights");
        let ha = a.fit(&x, &y, opts(1, 64)).unwrap();
        let hb = b.fit(&x, &y, opts(1, 64)).unwrap();
        assert_ne!(ha.epochs[0].loss, hb.epochs[0].loss);
    }

    /// The Adam and SGD kernels against dfdx's own optimizers on the same network and batches.
    #[test]
    fn optimizers_match_dfdx() {
        use dfdx::optim::Optimizer as _;
        let (x, y) = toy(64, 11);
        for config in [Optimizer::Adam(Adam { learning_rate: 1e-2 }), Optimizer::Sgd(Sgd { learning_rate: 0.1, momentum: 0.9 })] {
            let mut ours = quiet::<MlpArch>(1);
            ours.compile(config);
            ours.fit(&x, &y, FitOptions { shuffle: false, ..opts(1, 16) }).unwrap();

            let reference = Model::<MlpArch>::new(1).unwrap();
            let dev = reference.device().clone();
            let mut net = reference.network().clone();
            let mut adam = dfdx::optim::Adam::new(&net, AdamConfig { lr: 1e-2, betas: [0.9, 0.999], eps: 1e-7, weight_decay: None });
            let mut sgd = dfdx::optim::Sgd::new(&net, SgdConfig { lr: 0.1, momentum: Some(Momentum::Classic(0.9)), weight_decay: None });
            let mut grads = net.alloc_grads();
            for start in (0..64).step_by(16) {
                let idx: Vec<usize> = (start..start + 16).collect();
                let batch = Batch::gather(&dev, x.as_slice().unwrap(), y.as_slice().unwrap(), &idx).unwrap();
                let logits = net.forward_mut(batch.images.traced(grads));
                grads = cross_entropy_with_logits_loss(logits, batch.targets).backward();
                match config {
                    Optimizer::Adam(_) => adam.update(&mut net, &grads).unwrap(),
                    Optimizer::Sgd(_) => sgd.update(&mut net, &grads).unwrap(),
                }
                net.zero_grads(&mut grads);
            }
            let (a, b) = (ours.network().1.weight.as_vec(), net.1.weight.as_vec());
            let diff = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-5, "{config:?}: max difference {diff}");
        }
    }

    /// Keras' `EarlyStopping`: an impossible `min_delta` makes every epoch after the first a
    /// non-improvement, so patience decides when training stops.
    #[test]
    fn early_stopping_stops_after_patience_and_restores_the_best_weights() {
        let (x, y) = toy(200, 12);
        let never = |patience, restore| EarlyStopping { monitor: Monitor::Accuracy, patience, min_delta: 1.0, restore_best_weights: restore };
        let mut m = quiet::<MlpArch>(1);
        let h = m.fit(&x, &y, FitOptions { early_stopping: Some(never(0, false)), ..opts(10, 32) }).unwrap();
        assert_eq!((h.epochs.len(), h.best_epoch, h.stopped_early), (2, Some(1), true));
        let mut m = quiet::<MlpArch>(1);
        let h = m.fit(&x, &y, FitOptions { early_stopping: Some(never(2, true)), ..opts(10, 32) }).unwrap();
        assert_eq!((h.epochs.len(), h.best_epoch, h.stopped_early), (3, Some(1), true));
        let mut one = quiet::<MlpArch>(1);
        one.fit(&x, &y, opts(1, 32)).unwrap();
        assert_eq!(m.logits(x.view()).unwrap(), one.logits(x.view()).unwrap(), "the weights after epoch 1 are back");
        // Improving all along: no stop.
        let mut m = quiet::<MlpArch>(1);
        let keep = EarlyStopping { monitor: Monitor::Loss, patience: 0, ..Default::default() };
        let h = m.fit(&x, &y, FitOptions { early_stopping: Some(keep), ..opts(3, 32) }).unwrap();
        assert_eq!((h.epochs.len(), h.best_epoch, h.stopped_early), (3, Some(3), false));
        // Monitoring validation loss needs validation data.
        let e = m.fit(&x, &y, FitOptions { early_stopping: Some(EarlyStopping::default()), ..opts(3, 32) }).unwrap_err();
        assert!(e.to_string().contains("validation_split"), "{e}");
    }

    #[test]
    fn a_run_log_is_written_whole_and_read_back() {
        let (x, y) = toy(300, 13);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("runs");
        let mut m = quiet::<Cell>(2);
        let log = RunLog { batch_loss_every: 2, ..RunLog::new(&root, "cell-a").with_weights().param("train_subset", 300) };
        let h = m.fit(&x, &y, FitOptions { validation_split: 0.2, run: Some(log), ..opts(2, 32) }).unwrap();
        let folder = root.join("cell-a");
        for f in ["run.json", "history.csv", "model.safetensors"] {
            assert!(folder.join(f).is_file(), "{f}");
        }
        for sub in ["train", "validation"] {
            let files: Vec<_> = std::fs::read_dir(folder.join(sub)).unwrap().collect();
            assert_eq!(files.len(), 1, "one event file in {sub}");
        }
        let run = crate::runs::load(&folder).unwrap();
        assert_eq!(run.history.epochs.len(), 2);
        assert!((run.history.epochs[1].val_loss.unwrap() - h.epochs[1].val_loss.unwrap()).abs() < 1e-6);
        assert_eq!(run.get("network").unwrap().text(), "(Flatten<784>, Linear<784, 48>, ReLU, DropoutOneIn<5>, Linear<48, 10>)");
        assert_eq!(run.get("train_images").unwrap().as_f64(), Some(240.0));
        assert_eq!(run.get("train_subset").unwrap().text(), "300");
        let back = Model::<Cell>::load(folder.join("model.safetensors")).unwrap();
        assert_eq!(back.logits(x.view()).unwrap(), m.logits(x.view()).unwrap());

        // A second run is listed first; one of the same name replaces the old one.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let mut m2 = quiet::<LinearArch>(3);
        m2.fit(&x, &y, FitOptions { run: Some(RunLog::new(&root, "linear-b")), ..opts(1, 32) }).unwrap();
        let table = crate::runs::table(&root).unwrap();
        assert_eq!(table.height(), 2);
        let names: Vec<Option<&str>> = table.column("name").unwrap().str().unwrap().iter().collect();
        assert_eq!(names, [Some("linear-b"), Some("cell-a")]);
        assert_eq!(table.column("train_subset").unwrap().str().unwrap().get(1), Some("300"));
        m2.fit(&x, &y, FitOptions { run: Some(RunLog::new(&root, "linear-b")), ..opts(3, 32) }).unwrap();
        assert_eq!(crate::runs::load(root.join("linear-b")).unwrap().history.epochs.len(), 3);

        // A fit that fails leaves no run behind, not even a hidden one.
        let mut bad = quiet::<LinearArch>(0);
        bad.compile(Sgd { learning_rate: 1e38, momentum: 0.0 });
        assert!(bad.fit(&x, &y, FitOptions { run: Some(RunLog::new(&root, "diverged")), ..opts(2, 32) }).is_err());
        let left: Vec<String> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(bad.fit(&x, &y, FitOptions { run: Some(RunLog::new(&root, "../x")), ..opts(1, 32) }).unwrap_err().to_string().contains("plain folder name"));
    }
}
