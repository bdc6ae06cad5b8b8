//! Keras' `EarlyStopping` callback: its settings, and its state through the epochs of a fit.

use super::EpochLog;

/// The value early stopping watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Monitor {
    /// Validation loss (lower is better): Keras' default.
    #[default]
    ValLoss,
    /// Validation accuracy (higher is better).
    ValAccuracy,
    /// Training loss.
    Loss,
    /// Training accuracy.
    Accuracy,
}

impl Monitor {
    /// Keras' name: `val_loss`, `val_accuracy`, `loss`, `accuracy`.
    pub fn name(self) -> &'static str {
        match self {
            Monitor::ValLoss => "val_loss",
            Monitor::ValAccuracy => "val_accuracy",
            Monitor::Loss => "loss",
            Monitor::Accuracy => "accuracy",
        }
    }

    /// The monitored value of an epoch (none without validation data).
    pub(crate) fn value(self, e: &EpochLog) -> Option<f64> {
        match self {
            Monitor::ValLoss => e.val_loss,
            Monitor::ValAccuracy => e.val_accuracy,
            Monitor::Loss => Some(e.loss),
            Monitor::Accuracy => Some(e.accuracy),
        }
    }

    pub(crate) fn needs_validation(self) -> bool {
        matches!(self, Monitor::ValLoss | Monitor::ValAccuracy)
    }

    /// Lower is better for losses, higher for accuracies.
    pub(crate) fn lower_is_better(self) -> bool {
        matches!(self, Monitor::ValLoss | Monitor::Loss)
    }
}

/// Keras' `EarlyStopping`: stop training once `monitor` has not improved by more than `min_delta` for
/// `patience` epochs; with `restore_best_weights`, go back to the weights of the best epoch when
/// stopping. Defaults as in Keras (`val_loss`, patience 0, min_delta 0, no restoring).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EarlyStopping {
    pub monitor: Monitor,
    pub patience: usize,
    pub min_delta: f64,
    pub restore_best_weights: bool,
}

/// Early stopping's state through the epochs.
pub(super) struct Stopper<M> {
    pub config: EarlyStopping,
    best: Option<f64>,
    wait: usize,
    pub best_net: Option<M>,
}

impl<M> Stopper<M> {
    pub fn new(config: EarlyStopping) -> Self {
        Stopper { config, best: None, wait: 0, best_net: None }
    }

    /// Records the epoch; true when its monitored value is the best so far (by more than `min_delta`).
    pub fn improved(&mut self, e: &EpochLog) -> bool {
        let m = self.config.monitor;
        let Some(v) = m.value(e) else { return false };
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
    /// The best value so far and the epochs waited since (kept by checkpoints).
    #[cfg_attr(feature = "cuda", allow(dead_code))]
    pub fn progress(&self) -> (Option<f64>, usize) {
        (self.best, self.wait)
    }

    /// Puts back what [`progress`](Self::progress) returned, and the best weights if kept.
    pub fn restore(&mut self, best: Option<f64>, wait: usize, best_net: Option<M>) {
        (self.best, self.wait, self.best_net) = (best, wait, best_net);
    }

    pub fn should_stop(&self) -> bool {
        self.wait >= self.config.patience
    }
}
