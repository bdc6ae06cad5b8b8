//! `Model::fit`: the checks before training, the epoch loop, and the run log around it.

use std::time::Instant;

use dfdx::prelude::*;
use ndarray::{Array1, Array3};

use crate::data::{BatchOrder, Batches, LastBatch};
use crate::error::{Error, Result};
use crate::model::{self, Dev, Network};

use super::optimizer::OptState;
use super::progress::Progress;
use super::run_log::{RunRecord, RunWriter};
use super::step::{self, dev_err, Batch, FitData};
use super::stopping::Stopper;
use super::{evcxr_ids, EpochLog, FitOptions, History, Model, Verbosity};

#[cfg(not(feature = "cuda"))]
use fashion_kernels::on_pool;

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
        let mut run = match options.run.clone() {
            Some(log) => Some(RunWriter::start(log, self.run_record(&options, &data), data.validation().is_some())?),
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
                if self.verbosity == Verbosity::Progress {
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
    fn train_epochs(
        &mut self,
        data: &FitData,
        options: &FitOptions,
        mut run: Option<&mut RunWriter>,
    ) -> Result<History> {
        let Model { net, dev, opt, seed, epochs_done, verbosity, .. } = self;
        let opt: &mut OptState<N::Net> = opt.as_mut().ok_or(Error::NotCompiled)?;
        let dev: &Dev = dev;
        evcxr_ids::advance_ids_past(net, dev)?;
        let mut grads = net.try_alloc_grads().map_err(dev_err)?;
        let mut history = History::default();
        let mut stopper = options.early_stopping.map(Stopper::new);
        let mut step_count = 0;
        for epoch in 1..=options.epochs {
            let order = match options.shuffle {
                true => BatchOrder::Shuffled { seed: fashion_kernels::rng::mix(*seed, *epochs_done as u64) },
                false => BatchOrder::Sequential,
            };
            let batches = Batches::new(data.len(), options.batch_size, order, LastBatch::Keep)?;
            let mut progress = Progress::new(*verbosity, epoch, options.epochs, batches.num_batches());
            let start = Instant::now();
            // The batches run on a thread of the kernels' pool, where handing half a product to the
            // other core is cheap.
            let (net_ref, run) = (&mut *net, &mut run);
            let (total, g) = on_pool(|| -> Result<_> {
                let (mut total, mut grads) = (step::StepStats::default(), grads);
                for (b, idx) in batches.enumerate() {
                    let batch = Batch::gather(dev, data.images(), data.labels(), &idx)?;
                    let (stats, g) = step::train_step(net_ref, opt, batch, grads, (epoch, b + 1))?;
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
            };
            if let Some(w) = run.as_deref_mut() {
                w.epoch(&log)?;
            }
            history.epochs.push(log);
            let Some(s) = stopper.as_mut() else { continue };
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
        Ok(history)
    }

    /// What the run log records about this fit before it starts (the results come at the end).
    fn run_record(&self, options: &FitOptions, data: &FitData) -> RunRecord {
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
            params: Default::default(),
            epochs_run: 0,
            loss: None,
            accuracy: None,
            val_loss: None,
            val_accuracy: None,
            best_epoch: None,
            stopped_early: false,
            seconds: 0.0,
            weights: false,
            created_ms: 0,
            created_utc: String::new(),
        }
    }
}
