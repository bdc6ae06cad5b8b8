//! What `fit` takes besides the data: Keras' keyword arguments with Keras' defaults, and where to log
//! the run.

use std::fmt::Display;
use std::path::PathBuf;

use ndarray::{Array1, Array3};

use super::EarlyStopping;

/// What `fit` does besides the data: Keras' keyword arguments, with Keras' defaults.
///
/// ```no_run
/// # use fashion::prelude::*;
/// # fn f(model: &mut Model<MlpArch>, x: &Array3<f32>, y: &Array1<u8>) -> Result<()> {
/// let stop = EarlyStopping { patience: 2, restore_best_weights: true, ..Default::default() };
/// model.fit(x, y, FitOptions { epochs: 20, validation_split: 0.1, early_stopping: Some(stop), ..Default::default() })?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
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
    /// Stop when a monitored value stops improving (Keras' `EarlyStopping` callback).
    pub early_stopping: Option<EarlyStopping>,
    /// Change the learning rate while training (Keras' schedules and `ReduceLROnPlateau`): see
    /// [`Schedule`](super::Schedule). Each epoch's rate goes to the history, the run log and TensorBoard.
    pub lr_schedule: Option<super::Schedule>,
    /// Randomly flip, move and erase the training images of every batch (off by default; never on
    /// validation or test images). Each image draws from the model's seed, the epoch and its place in
    /// the batch: the same seed gives the same run on any number of threads.
    pub augment: super::Augment,
    /// Train against targets of `1 - ε + ε/10` for the true class and `ε/10` for the others instead of
    /// one-hot ones (Keras' `CategoricalCrossentropy(label_smoothing=ε)`, PyTorch's
    /// `CrossEntropyLoss(label_smoothing=ε)`; 0.0: off, 0.1 a usual value): the network is no longer
    /// pushed towards ever larger logits. The training loss is the smoothed one; validation loss and
    /// `evaluate` stay plain cross-entropy, comparable with runs without it.
    pub label_smoothing: f64,
    /// Write the run to a folder that outlives the kernel: parameters, history, TensorBoard events and
    /// (if asked) the weights. See [`RunLog`].
    pub run: Option<RunLog>,
}

impl Default for FitOptions<'_> {
    fn default() -> Self {
        FitOptions {
            epochs: 1,
            batch_size: 32,
            validation_data: None,
            validation_split: 0.0,
            shuffle: true,
            early_stopping: None,
            lr_schedule: None,
            augment: super::Augment::default(),
            label_smoothing: 0.0,
            run: None,
        }
    }
}

/// Where and what `fit` logs: the folder `dir/name/` with `run.json` (the parameters and the final
/// metrics), `history.csv`, TensorBoard event files (`train/`, `validation/`: `epoch_loss`,
/// `epoch_accuracy`, and `batch_loss` every `batch_loss_every` batches) and, with
/// [`with_weights`](RunLog::with_weights), `model.safetensors`.
///
/// The folder is written under a hidden temporary name and renamed when the run ends, so a run that
/// was killed never appears as complete; a run of the same name is replaced. [`crate::runs::table`]
/// lists the runs of `dir`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunLog {
    pub dir: PathBuf,
    pub name: String,
    pub save_weights: bool,
    /// Anything else worth recording (the data subset, a note), as text.
    pub params: Vec<(String, String)>,
    /// Log the mean training loss of every this many batches to TensorBoard (0: epochs only).
    pub batch_loss_every: usize,
    /// Keep a checkpoint after every epoch, and resume from it. See [`with_checkpoints`](RunLog::with_checkpoints).
    pub checkpoints: bool,
}

impl RunLog {
    /// The run `name` in the folder `dir` (e.g. `RunLog::new("../runs", "mlp-10-epochs")`).
    pub fn new(dir: impl Into<PathBuf>, name: impl Into<String>) -> RunLog {
        RunLog {
            dir: dir.into(),
            name: name.into(),
            save_weights: false,
            params: Vec::new(),
            batch_loss_every: 100,
            checkpoints: false,
        }
    }

    /// Also save the final weights (`model.safetensors`).
    pub fn with_weights(mut self) -> RunLog {
        self.save_weights = true;
        self
    }

    /// Keeps a checkpoint after every epoch (weights, optimizer state, epoch, random streams, history: the
    /// run's `checkpoint.safetensors`, written atomically), as Keras' `BackupAndRestore` does. When the
    /// kernel dies, a fit with the same network, settings and run name **resumes** the run from its last
    /// checkpoint and ends exactly as the run would have ended uninterrupted (same weights, same history);
    /// the same holds for a run ended with the stop button. A completed run drops its checkpoint.
    pub fn with_checkpoints(mut self) -> RunLog {
        self.checkpoints = true;
        self
    }

    /// Records one more parameter (`.param("train_subset", 12000)`).
    pub fn param(mut self, key: impl Into<String>, value: impl Display) -> RunLog {
        self.params.push((key.into(), value.to_string()));
        self
    }

    /// The run's folder.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}
