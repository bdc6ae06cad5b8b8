//! `Model::fit`: the checks before training, the epoch loop, and the run log around it.

use std::time::Instant;

use dfdx::prelude::*;
use ndarray::{Array1, Array3};

use crate::data::{BatchOrder, Batches, LastBatch};
use crate::error::{Error, Result};
use crate::model::{self, Dev, Network};

use super::interrupt::StopOnInterrupt;
use super::optimizer::OptState;
use super::progress::Progress;
use super::run_log::{RunLock, RunRecord, RunWriter};
use super::schedule::PlateauState;
use super::step::{self, dev_err, Batch, FitData};
use super::stopping::Stopper;
use super::{evcxr_ids, EpochLog, FitOptions, History, Model, Schedule, Verbosity};

use super::checkpoint;
#[cfg(not(feature = "cuda"))]
use crate::model::layers::take_dropout_draws as take_draws;
#[cfg(not(feature = "cuda"))]
use fashion_kernels::on_pool;
use fashion_kernels::rng::mix;

/// With the `cuda` feature a fit keeps no checkpoints.
#[cfg(feature = "cuda")]
fn no_gpu_checkpoints() -> Error {
    Error::Setting {
        setting: "checkpoints",
        reason: "need the CPU build (the GPU optimizers' state is dfdx's own): leave `with_checkpoints()` out".into(),
    }
}

/// With the `cuda` feature dfdx's dropout draws its masks itself.
#[cfg(feature = "cuda")]
fn take_draws() -> u64 {
    0
}

/// What an epoch's batches leave: their statistics, the (zeroed) gradients, how many ran (fewer than the
/// epoch's when stopped) and the dropout masks they drew.
struct Trained {
    total: step::StepStats,
    grads: Gradients<f32, Dev>,
    batches: usize,
    draws: u64,
}

/// A checkpoint's state, read by `Model::resume` for the epoch loop.
struct Resumed<M> {
    #[cfg_attr(feature = "cuda", allow(dead_code))]
    state: checkpoint::State,
    best: Option<M>,
}

/// With the `cuda` feature the work runs on the GPU: `f` runs here.
#[cfg(feature = "cuda")]
fn on_pool<R>(f: impl FnOnce() -> R) -> R {
    f()
}

impl<N: Network> Model<N> {
    /// Trains on `(x, y)` — `(n, 28, 28)` normalized images and their `n` labels — in mini-batches,
    /// printing Keras-style progress (see [`Model::verbosity`]), scoring the validation data after each
    /// epoch, stopping early and logging the run when `options` say so.
    ///
    /// Stops with [`Error::NonFiniteLoss`] (naming epoch and batch) if the loss becomes NaN or infinite;
    /// a run log of a failed fit is removed.
    pub fn fit(&mut self, x: &Array3<f32>, y: &Array1<u8>, options: FitOptions) -> Result<History> {
        let optimizer = self.optimizer().ok_or(Error::NotCompiled)?;
        optimizer.check()?;
        if options.epochs == 0 {
            return Err(Error::Setting { setting: "epochs", reason: "must be at least 1".into() });
        }
        let data = FitData::new(x, y, &options)?;
        let summary = model::summarize::<N>(&self.net, &self.name)?;
        step::check_memory(&summary, options.batch_size.min(data.len()), step::available_memory())?;
        let aug = options.augment;
        if !(0.0..=1.0).contains(&aug.erase) || aug.shift >= 14 {
            return Err(Error::Setting {
                setting: "augment",
                reason: format!(
                    "erase is a probability in [0, 1] and shift a few pixels (under 14), got erase {} and shift {}; \
                     Augment {{ flip: true, shift: 2, erase: 0.0 }} is a usual start",
                    aug.erase, aug.shift
                ),
            });
        }
        if !(0.0..1.0).contains(&options.label_smoothing) {
            return Err(Error::Setting {
                setting: "label_smoothing",
                reason: format!(
                    "is the share of each target spread over the classes, in [0, 1), got {}; 0.1 is usual",
                    options.label_smoothing
                ),
            });
        }
        if let Some(schedule) = options.lr_schedule {
            schedule.check(|m| m.needs_validation() && data.validation().is_none())?;
        }
        if let Some(stop) =
            options.early_stopping.filter(|s| s.monitor.needs_validation() && data.validation().is_none())
        {
            return Err(Error::Setting {
                setting: "early_stopping",
                reason: format!(
                    "monitoring {} needs validation data: set validation_split (e.g. 0.1) or validation_data",
                    stop.monitor.name()
                ),
            });
        }
        #[cfg(feature = "cuda")]
        if options.run.as_ref().is_some_and(|r| r.checkpoints) {
            return Err(no_gpu_checkpoints());
        }
        let mut resumed = None;
        let mut run = match options.run.clone() {
            Some(log) => {
                let lock = RunLock::take(log)?;
                let record = self.run_record(&options, &data);
                if let Some(path) = lock.checkpoint() {
                    resumed = Some(self.resume(&path, &record)?);
                }
                Some(lock.start(record, data.validation().is_some(), resumed.is_some())?)
            }
            None => None,
        };
        if let (Some(w), Some(r)) = (run.as_mut(), resumed.as_ref()) {
            w.restore_batch_loss(r.state.batch_loss);
        }
        let trained = self.train_epochs(&data, &options, run.as_mut(), resumed);
        if let Some(opt) = self.opt.as_mut() {
            opt.set_learning_rate(optimizer.learning_rate()); // the schedule held for this fit only
        }
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
                if self.verbosity == Verbosity::Progress {
                    let stopped = if history.interrupted { " (as interrupted: the same fit resumes it)" } else { "" };
                    println!("Run logged in {}{stopped}", dir.display());
                }
                Ok(history)
            }
            Err(e) => {
                run.abandon();
                Err(e)
            }
        }
    }

    /// Puts the model where the checkpoint at `path` says the run stood: a fresh build from the seed (so
    /// the device's generator starts where the run's did, then skips the dropout masks it drew), the
    /// checkpoint's weights and optimizer state.
    #[cfg(not(feature = "cuda"))]
    fn resume(&mut self, path: &std::path::Path, settings: &RunRecord) -> Result<Resumed<N::Net>> {
        let mut fresh = Model::<N>::new(self.seed)?;
        let loaded = checkpoint::load(path, &mut fresh.net, settings)?;
        {
            use dfdx::tensor::RandomU64;
            for _ in 0..loaded.state.dropout_draws {
                fresh.dev.random_u64();
            }
        }
        let config = self.optimizer().ok_or(Error::NotCompiled)?;
        let mut opt = OptState::new(config, &fresh.net);
        opt.restore(loaded.state.optimizer_step, loaded.optimizer);
        self.dev = fresh.dev;
        self.net = fresh.net;
        self.opt = Some(opt);
        self.epochs_done = loaded.state.model_epochs;
        self.dropout_draws = loaded.state.dropout_draws;
        if self.verbosity == Verbosity::Progress {
            println!(
                "Resuming run {:?} from its checkpoint after epoch {}/{} ({})",
                settings.name,
                loaded.state.epochs_completed,
                settings.epochs,
                path.display()
            );
        }
        Ok(Resumed { state: loaded.state, best: loaded.best })
    }

    #[cfg(feature = "cuda")]
    fn resume(&mut self, _: &std::path::Path, _: &RunRecord) -> Result<Resumed<N::Net>> {
        Err(no_gpu_checkpoints())
    }

    /// The epochs of `fit`, from the first or from a checkpoint's.
    fn train_epochs(
        &mut self,
        data: &FitData,
        options: &FitOptions,
        mut run: Option<&mut RunWriter>,
        resumed: Option<Resumed<N::Net>>,
    ) -> Result<History> {
        let Model { net, dev, opt, seed, epochs_done, verbosity, dropout_draws, .. } = self;
        let opt: &mut OptState<N::Net> = opt.as_mut().ok_or(Error::NotCompiled)?;
        let dev: &Dev = dev;
        evcxr_ids::advance_ids_past(net, dev)?;
        let mut grads = net.try_alloc_grads().map_err(dev_err)?;
        let mut history = History::default();
        let mut stopper = options.early_stopping.map(Stopper::new);
        let (mut first, mut step_count) = (1, 0);
        let base_lr = opt.config.learning_rate();
        let mut plateau = match options.lr_schedule {
            Some(Schedule::ReduceOnPlateau(_)) => Some(PlateauState::new(base_lr)),
            _ => None,
        };
        if let Some(r) = resumed {
            first = r.state.epochs_completed + 1;
            step_count = r.state.steps;
            plateau = r.state.plateau.or(plateau);
            history.epochs = r.state.history;
            history.best_epoch = r.state.best_epoch;
            if let (Some(s), Some((best, wait))) = (stopper.as_mut(), r.state.stopper) {
                s.restore(best, wait, r.best);
            }
        }
        let stop = StopOnInterrupt::install();
        for epoch in first..=options.epochs {
            let order = match options.shuffle {
                true => BatchOrder::Shuffled { seed: mix(*seed, *epochs_done as u64) },
                false => BatchOrder::Sequential,
            };
            let batches = Batches::new(data.len(), options.batch_size, order, LastBatch::Keep)?;
            let num_batches = batches.num_batches();
            let mut progress = Progress::new(*verbosity, epoch, options.epochs, num_batches);
            let start = Instant::now();
            // The batches run on a thread of the kernels' pool, where handing half a product to the
            // other core is cheap.
            let (net_ref, run, stop, plateau_now) = (&mut *net, &mut run, &stop, plateau.as_ref());
            let mut last_lr = base_lr;
            let trained = on_pool(|| -> Result<_> {
                let mut t = Trained { total: step::StepStats::default(), grads, batches: 0, draws: 0 };
                take_draws();
                for (b, idx) in batches.enumerate() {
                    if let Some(s) = options.lr_schedule {
                        last_lr = s.rate(base_lr, step_count, epoch, plateau_now);
                        opt.set_learning_rate(last_lr);
                    }
                    let augment = options
                        .augment
                        .any()
                        .then(|| (options.augment, mix(mix(*seed, *epochs_done as u64), b as u64)));
                    let smoothing = options.label_smoothing as f32;
                    let batch = Batch::gather_augmented(dev, data.images(), data.labels(), &idx, augment, smoothing)?;
                    let (stats, g) = step::train_step(net_ref, opt, batch, t.grads, (epoch, b + 1))?;
                    t.grads = g;
                    t.total.add(stats);
                    t.batches += 1;
                    step_count += 1;
                    if let Some(w) = run.as_deref_mut() {
                        w.batch(step_count, stats.mean_loss())?;
                    }
                    progress.batch(b + 1, t.total.mean_loss(), t.total.accuracy());
                    if stop.requested() {
                        break;
                    }
                }
                t.draws = take_draws();
                Ok(t)
            })?;
            let Trained { total, grads: g, batches: done, draws } = trained;
            grads = g;
            *dropout_draws += draws;
            let seconds = start.elapsed().as_secs_f64();
            if done < num_batches {
                history.interrupted = true;
                if *verbosity == Verbosity::Progress {
                    println!(
                        "Stopped in epoch {epoch}/{} after batch {done}/{num_batches}: the model keeps the weights \
                         of that batch; the history holds the {} epochs completed",
                        options.epochs,
                        history.epochs.len()
                    );
                }
                break;
            }
            *epochs_done += 1;
            let val = match data.validation() {
                Some((vx, vy)) => Some(step::score(&super::inference::infer(&*net, dev, vx)?, vy)),
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
                learning_rate: options.lr_schedule.map(|_| last_lr),
            };
            if let (Some(Schedule::ReduceOnPlateau(p)), Some(state)) = (options.lr_schedule, plateau.as_mut()) {
                if let Some(lr) = state.epoch_end(&p, &log) {
                    if *verbosity == Verbosity::Progress {
                        println!("Epoch {epoch}: ReduceLROnPlateau reducing learning rate to {lr:e}.");
                    }
                }
            }
            if let Some(w) = run.as_deref_mut() {
                w.epoch(&log)?;
            }
            history.epochs.push(log);
            if let Some(s) = stopper.as_mut() {
                if s.improved(&log) {
                    history.best_epoch = Some(epoch);
                    if s.config.restore_best_weights {
                        s.best_net = Some(net.clone());
                    }
                } else if s.should_stop() {
                    history.stopped_early = true;
                    let best = history.best_epoch.unwrap_or(epoch);
                    let restore = s.best_net.take();
                    if *verbosity == Verbosity::Progress {
                        let restoring = if restore.is_some() {
                            format!("; restoring the weights of epoch {best}")
                        } else {
                            String::new()
                        };
                        println!(
                            "Epoch {epoch}: early stopping ({} best at epoch {best}){restoring}",
                            s.config.monitor.name()
                        );
                    }
                    if let Some(best_net) = restore {
                        *net = best_net;
                    }
                    break;
                }
            }
            #[cfg(not(feature = "cuda"))]
            if let Some(w) = run.as_deref_mut().filter(|w| w.wants_checkpoints()) {
                let state = checkpoint::State {
                    format: checkpoint::FORMAT,
                    settings: w.settings().clone(),
                    epochs_completed: epoch,
                    model_epochs: *epochs_done,
                    steps: step_count,
                    batch_loss: w.pending_batch_loss(),
                    dropout_draws: *dropout_draws,
                    optimizer_step: opt.state().0,
                    history: history.epochs.clone(),
                    best_epoch: history.best_epoch,
                    stopper: stopper.as_ref().map(|s| s.progress()),
                    best_weights: stopper.as_ref().is_some_and(|s| s.best_net.is_some()),
                    plateau,
                };
                let best = stopper.as_ref().and_then(|s| s.best_net.as_ref());
                checkpoint::save(&w.folder().join(super::run_log::CHECKPOINT), &*net, opt.state().1, best, &state)?;
            }
        }
        Ok(history)
    }

    /// What the run log records about this fit before it starts (the results come at the end).
    pub(super) fn run_record(&self, options: &FitOptions, data: &FitData) -> RunRecord {
        let opt = self.optimizer().unwrap_or_default();
        let validation = match (options.validation_data.is_some(), options.validation_split > 0.0) {
            (true, _) => "validation_data",
            (false, true) => "validation_split",
            _ => "none",
        };
        let stopping = options.early_stopping.map(|s| {
            let restore = if s.restore_best_weights { ", restore best weights" } else { "" };
            format!("{}, patience {}, min_delta {}{restore}", s.monitor.name(), s.patience, s.min_delta)
        });
        RunRecord {
            name: options.run.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
            network: model::short_type_name::<N>(),
            model: self.name.clone(),
            params_count: self.count_params(),
            epochs: options.epochs,
            batch_size: options.batch_size,
            optimizer: opt.name().into(),
            learning_rate: opt.learning_rate(),
            seed: self.seed,
            validation: validation.into(),
            validation_split: options.validation_split,
            shuffle: options.shuffle,
            train_images: data.len(),
            validation_images: data.validation().map(|(_, y)| y.len()),
            early_stopping: stopping,
            weight_decay: opt.weight_decay(),
            lr_schedule: options.lr_schedule.map(|s| format!("{s:?}")),
            augment: options.augment.any().then(|| format!("{:?}", options.augment)),
            label_smoothing: options.label_smoothing,
            params: Default::default(),
            epochs_run: 0,
            loss: None,
            accuracy: None,
            val_loss: None,
            val_accuracy: None,
            best_epoch: None,
            stopped_early: false,
            interrupted: false,
            seconds: 0.0,
            weights: false,
            created_ms: 0,
            created_utc: String::new(),
        }
    }
}
