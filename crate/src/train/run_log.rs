//! Writing a run's folder (see [`RunLog`]): events while training, the rest at the end, then one
//! rename that makes the run appear complete.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::json::{self, Value};
use crate::tensorboard::EventWriter;

use super::{EpochLog, History, RunLog};

pub(crate) struct RunWriter {
    log: RunLog,
    partial: PathBuf,
    train: EventWriter,
    validation: Option<EventWriter>,
    meta: Vec<(String, Value)>,
    batch_loss: (f64, usize),
}

impl RunWriter {
    /// Checks the name, creates the hidden temporary folder and the event files — before any training,
    /// so a folder that cannot be written fails at once.
    pub fn start(log: RunLog, meta: Vec<(String, Value)>, has_validation: bool) -> Result<RunWriter> {
        let name = &log.name;
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
            return Err(Error::InvalidArgument(format!(
                "run name {name:?}: use a plain folder name such as \"mlp-10-epochs\" (no `/`, not starting with `.`)"
            )));
        }
        std::fs::create_dir_all(&log.dir).map_err(|e| Error::io(&log.dir, e))?;
        let partial = crate::files::temp_path(&log.path());
        let train = EventWriter::create(&partial.join("train"))?;
        let validation = if has_validation { Some(EventWriter::create(&partial.join("validation"))?) } else { None };
        Ok(RunWriter { log, partial, train, validation, meta, batch_loss: (0.0, 0) })
    }

    /// The folder being written (for the weights).
    pub fn folder(&self) -> &Path {
        &self.partial
    }

    pub fn wants_weights(&self) -> bool {
        self.log.save_weights
    }

    /// Records the mean loss of one batch; every `batch_loss_every` batches writes their mean at
    /// `step`, the number of batches trained so far.
    pub fn batch(&mut self, step: usize, loss: f64) -> Result<()> {
        let every = self.log.batch_loss_every;
        if every == 0 {
            return Ok(());
        }
        self.batch_loss.0 += loss;
        self.batch_loss.1 += 1;
        if self.batch_loss.1 == every {
            let mean = self.batch_loss.0 / every as f64;
            self.batch_loss = (0.0, 0);
            self.train.scalar("batch_loss", step as i64, mean as f32)?;
        }
        Ok(())
    }

    /// The epoch's scalars, at step = epoch (1-based, as in `history.csv`).
    pub fn epoch(&mut self, e: &EpochLog) -> Result<()> {
        let step = e.epoch as i64;
        self.train.scalar("epoch_loss", step, e.loss as f32)?;
        self.train.scalar("epoch_accuracy", step, e.accuracy as f32)?;
        if let (Some(w), Some(loss), Some(acc)) = (self.validation.as_mut(), e.val_loss, e.val_accuracy) {
            w.scalar("epoch_loss", step, loss as f32)?;
            w.scalar("epoch_accuracy", step, acc as f32)?;
        }
        Ok(())
    }

    /// Writes `history.csv` and `run.json`, then renames the folder into place (replacing a run of the
    /// same name). Returns the run's folder.
    pub fn finish(mut self, history: &History) -> Result<PathBuf> {
        self.train.flush()?;
        if let Some(w) = self.validation.as_mut() {
            w.flush()?;
        }
        crate::files::write_atomic(self.partial.join("history.csv"), history.to_csv().as_bytes())?;
        let last = history.last();
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut pairs = std::mem::take(&mut self.meta);
        pairs.extend(self.log.params.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))));
        // Which keys are the run's own parameters (`RunLog::param`), for `runs::table`.
        let own: Vec<&str> = self.log.params.iter().map(|(k, _)| k.as_str()).collect();
        pairs.push(("own_params".into(), own.join(",").into()));
        pairs.extend([
            ("epochs_run".into(), history.epochs.len().into()),
            ("loss".into(), last.map(|e| e.loss).into()),
            ("accuracy".into(), last.map(|e| e.accuracy).into()),
            ("val_loss".into(), last.and_then(|e| e.val_loss).into()),
            ("val_accuracy".into(), last.and_then(|e| e.val_accuracy).into()),
            ("best_epoch".into(), history.best_epoch.into()),
            ("stopped_early".into(), history.stopped_early.into()),
            ("seconds".into(), history.epochs.iter().map(|e| e.seconds).sum::<f64>().into()),
            ("weights".into(), self.log.save_weights.into()),
            ("created".into(), created.into()),
            ("created_utc".into(), utc(created).into()),
        ]);
        crate::files::write_atomic(self.partial.join("run.json"), json::write_object(&pairs).as_bytes())?;
        let target = self.log.path();
        let old = crate::files::temp_path(&target);
        let replaced = target.exists();
        if replaced {
            std::fs::rename(&target, &old).map_err(|e| Error::io(&target, e))?;
        }
        std::fs::rename(&self.partial, &target).map_err(|e| Error::io(&target, e))?;
        if replaced {
            let _ = std::fs::remove_dir_all(&old);
        }
        Ok(target)
    }

    /// Removes the temporary folder of a run that failed.
    pub fn abandon(self) {
        let _ = std::fs::remove_dir_all(&self.partial);
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a Unix time.
pub(crate) fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(super::utc(1_795_566_645), "2026-11-25 00:30:45");
    }
}
