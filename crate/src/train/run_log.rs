//! Writing a run's folder (see [`RunLog`]): events while training (in the hidden folder `.name.running`),
//! the rest at the end, then one rename that makes the run appear complete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tensorboard::EventWriter;

use super::{EpochLog, History, RunLog};

/// What a run's `run.json` holds: how the run was set up, what it recorded itself, and how it ended.
/// Written by `fit` with a [`RunLog`]; read back by [`crate::runs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's folder name.
    #[serde(default)]
    pub name: String,
    /// The network's type, as `summary()` shows it.
    pub network: String,
    /// The model's name (`Model::named`).
    pub model: String,
    pub params_count: usize,
    /// Epochs asked for.
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: String,
    pub learning_rate: f64,
    pub seed: u64,
    /// Where the validation data came from: `validation_data`, `validation_split` or `none`.
    pub validation: String,
    pub validation_split: f64,
    pub shuffle: bool,
    pub train_images: usize,
    pub validation_images: Option<usize>,
    /// Early stopping's settings, when it was on.
    pub early_stopping: Option<String>,
    /// The optimizer's weight decay (0: none).
    #[serde(default)]
    pub weight_decay: f64,
    /// The learning-rate schedule, when there was one.
    #[serde(default)]
    pub lr_schedule: Option<String>,
    /// The augmentation of the training images, when on.
    #[serde(default)]
    pub augment: Option<String>,
    /// `FitOptions::label_smoothing` (0: off).
    #[serde(default)]
    pub label_smoothing: f64,
    /// What the run recorded itself ([`RunLog::param`]).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub epochs_run: usize,
    /// The last epoch's metrics (none when not finite).
    pub loss: Option<f64>,
    pub accuracy: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub best_epoch: Option<usize>,
    pub stopped_early: bool,
    /// The stop button ended the run during an epoch (`epochs_run` were completed).
    #[serde(default)]
    pub interrupted: bool,
    /// Seconds of training, validation excluded.
    pub seconds: f64,
    /// Whether the folder holds `model.safetensors`.
    pub weights: bool,
    /// When the run ended: milliseconds since 1970 (UTC), and as text.
    pub created_ms: u64,
    pub created_utc: String,
}

impl RunRecord {
    /// `run.json`'s text.
    pub fn to_json(&self) -> String {
        // A struct of strings, numbers and maps of strings always serializes.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Reads `run.json` (`path` names it in errors), in today's format or in the flat one of runs
    /// logged before 2026-12 (their own parameters listed in `own_params`, `created` in seconds).
    pub fn from_json(text: &str, path: &Path) -> Result<RunRecord> {
        let corrupt = |reason: String| Error::Corrupt { path: path.to_path_buf(), reason };
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
        let serde_json::Value::Object(mut fields) = value else {
            return Err(corrupt("not a JSON object".into()));
        };
        upgrade(&mut fields);
        serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| corrupt(e.to_string()))
    }
}

/// Turns the fields of an old flat `run.json` into today's.
fn upgrade(fields: &mut serde_json::Map<String, serde_json::Value>) {
    use serde_json::Value;
    if let Some(Value::String(own)) = fields.remove("own_params") {
        let params: serde_json::Map<String, Value> = own
            .split(',')
            .filter(|k| !k.is_empty())
            .filter_map(|k| {
                let v = fields.remove(k)?;
                let text = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                Some((k.to_string(), Value::String(text)))
            })
            .collect();
        fields.insert("params".into(), Value::Object(params));
    }
    if let Some(secs) = fields.remove("created").and_then(|v| v.as_f64()) {
        fields.entry("created_ms").or_insert(Value::from((secs * 1000.0) as u64));
    }
    // Old runs wrote a null name only if logged without one; `name` is the folder's.
    if fields.get("name").is_some_and(Value::is_null) {
        fields.remove("name");
    }
}

/// A run's name, held: no other fit (another kernel, `fashion train`) writes the run while this one does.
pub(crate) struct RunLock {
    log: RunLog,
    _file: std::fs::File,
}

impl RunLock {
    /// Checks the name and takes the run's lock (`dir/.name.lock`, a file lock the OS releases when the
    /// process ends) — before any training, so a folder that cannot be written fails at once.
    pub fn take(log: RunLog) -> Result<RunLock> {
        let name = &log.name;
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
            return Err(Error::InvalidArgument(format!(
                "run name {name:?}: use a plain folder name such as \"mlp-10-epochs\" (no `/`, not starting with `.`)"
            )));
        }
        std::fs::create_dir_all(&log.dir).map_err(|e| Error::io(&log.dir, e))?;
        let path = log.dir.join(format!(".{name}.lock"));
        let file = crate::files::lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { log, _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Setting {
                setting: "run",
                reason: format!(
                    "run {name:?} in {} is being written by another fit (another kernel or `fashion train`): \
                     wait for it or stop it, or choose another run name",
                    log.dir.display()
                ),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }

    /// The hidden folder a run is written in until it ends.
    fn partial(&self) -> PathBuf {
        self.log.dir.join(format!(".{}.running", self.log.name))
    }

    /// The checkpoint this run can resume from, if it keeps checkpoints: that of a fit that died (in the
    /// hidden folder), or of one ended with the stop button (logged as interrupted).
    pub fn checkpoint(&self) -> Option<PathBuf> {
        if !self.log.checkpoints {
            return None;
        }
        let died = self.partial().join(CHECKPOINT);
        if died.is_file() {
            return Some(died);
        }
        let done = self.log.path();
        let stopped = std::fs::read_to_string(done.join("run.json"))
            .ok()
            .and_then(|text| RunRecord::from_json(&text, &done).ok())
            .is_some_and(|r| r.interrupted);
        Some(done.join(CHECKPOINT)).filter(|c| stopped && c.is_file())
    }

    /// Starts writing: in a fresh hidden folder, or — `resume` — in the folder of the checkpoint found by
    /// [`checkpoint`](Self::checkpoint), with new event files beside the old ones. `record` holds the
    /// settings; `finish` fills in the results.
    pub fn start(self, record: RunRecord, has_validation: bool, resume: bool) -> Result<RunWriter> {
        let partial = self.partial();
        let stopped = self.log.path();
        let remove = |dir: &Path| match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(dir, e)),
            _ => Ok(()),
        };
        match resume {
            true if !partial.join(CHECKPOINT).is_file() => {
                remove(&partial)?;
                std::fs::rename(&stopped, &partial).map_err(|e| Error::io(&stopped, e))?;
            }
            true => {}
            // The remains of a fit that died.
            false => remove(&partial)?,
        }
        let train = EventWriter::create(&partial.join("train"))?;
        let validation = if has_validation { Some(EventWriter::create(&partial.join("validation"))?) } else { None };
        Ok(RunWriter { lock: self, partial, train, validation, record, batch_loss: (0.0, 0) })
    }
}

/// The checkpoint's file name in a run's folder.
pub(crate) const CHECKPOINT: &str = "checkpoint.safetensors";

pub(crate) struct RunWriter {
    lock: RunLock,
    partial: PathBuf,
    train: EventWriter,
    validation: Option<EventWriter>,
    record: RunRecord,
    batch_loss: (f64, usize),
}

impl RunWriter {
    /// The folder being written (for the weights and the checkpoint).
    pub fn folder(&self) -> &Path {
        &self.partial
    }

    pub fn wants_weights(&self) -> bool {
        self.lock.log.save_weights
    }

    #[cfg_attr(feature = "cuda", allow(dead_code))]
    pub fn wants_checkpoints(&self) -> bool {
        self.lock.log.checkpoints
    }

    /// The settings the run started with.
    #[cfg_attr(feature = "cuda", allow(dead_code))]
    pub fn settings(&self) -> &RunRecord {
        &self.record
    }

    /// The batch losses not yet written (sum, count): kept by checkpoints.
    #[cfg_attr(feature = "cuda", allow(dead_code))]
    pub fn pending_batch_loss(&self) -> (f64, usize) {
        self.batch_loss
    }

    pub fn restore_batch_loss(&mut self, pending: (f64, usize)) {
        self.batch_loss = pending;
    }

    /// Records the mean loss of one batch; every `batch_loss_every` batches writes their mean at
    /// `step`, the number of batches trained so far.
    pub fn batch(&mut self, step: usize, loss: f64) -> Result<()> {
        let every = self.lock.log.batch_loss_every;
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

    /// The epoch's scalars, at step = epoch (1-based, as in `history.csv`), flushed: TensorBoard shows
    /// them while the run goes on.
    pub fn epoch(&mut self, e: &EpochLog) -> Result<()> {
        let step = e.epoch as i64;
        self.train.scalar("epoch_loss", step, e.loss as f32)?;
        self.train.scalar("epoch_accuracy", step, e.accuracy as f32)?;
        if let Some(lr) = e.learning_rate {
            self.train.scalar("epoch_learning_rate", step, lr as f32)?;
        }
        self.train.flush()?;
        if let (Some(w), Some(loss), Some(acc)) = (self.validation.as_mut(), e.val_loss, e.val_accuracy) {
            w.scalar("epoch_loss", step, loss as f32)?;
            w.scalar("epoch_accuracy", step, acc as f32)?;
            w.flush()?;
        }
        Ok(())
    }

    /// Writes `history.csv` and `run.json`, then renames the folder into place (replacing a run of the
    /// same name). A completed run drops its checkpoint; an interrupted one keeps it, to be resumed.
    /// Returns the run's folder.
    pub fn finish(mut self, history: &History) -> Result<PathBuf> {
        self.train.flush()?;
        if let Some(w) = self.validation.as_mut() {
            w.flush()?;
        }
        crate::files::write_atomic(self.partial.join("history.csv"), history.to_csv().as_bytes())?;
        let last = history.last();
        let created_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let finite = |v: Option<f64>| v.filter(|x| x.is_finite());
        let record = RunRecord {
            params: self.lock.log.params.iter().cloned().collect(),
            epochs_run: history.epochs.len(),
            loss: finite(last.map(|e| e.loss)),
            accuracy: finite(last.map(|e| e.accuracy)),
            val_loss: finite(last.and_then(|e| e.val_loss)),
            val_accuracy: finite(last.and_then(|e| e.val_accuracy)),
            best_epoch: history.best_epoch,
            stopped_early: history.stopped_early,
            interrupted: history.interrupted,
            seconds: history.epochs.iter().map(|e| e.seconds).sum(),
            weights: self.lock.log.save_weights,
            created_ms,
            created_utc: utc(created_ms / 1000),
            ..self.record.clone()
        };
        crate::files::write_atomic(self.partial.join("run.json"), record.to_json().as_bytes())?;
        if !history.interrupted {
            let checkpoint = self.partial.join(CHECKPOINT);
            if checkpoint.exists() {
                std::fs::remove_file(&checkpoint).map_err(|e| Error::io(&checkpoint, e))?;
            }
        }
        let target = self.lock.log.path();
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

    /// Removes the folder of a run that failed.
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
    use super::*;

    /// `run.json` as the flat writer before serde wrote it (`json::write_object` of 2026-11), for the
    /// run `fit` logged in notebook 05.
    const OLD: &str = r#"{
  "name": "mlp-10-epochs",
  "network": "(Flatten<784>, Linear<784, 128>, ReLU, Linear<128, 10>)",
  "model": "sequential",
  "params_count": 101770,
  "epochs": 10,
  "batch_size": 32,
  "optimizer": "adam",
  "learning_rate": 0.001,
  "seed": 42,
  "validation": "validation_split",
  "validation_split": 0.1,
  "shuffle": true,
  "train_images": 54000,
  "validation_images": 6000,
  "early_stopping": null,
  "train_subset": "60000",
  "own_params": "train_subset",
  "epochs_run": 10,
  "loss": 0.2381467213,
  "accuracy": 0.9111666666666667,
  "val_loss": 0.3212,
  "val_accuracy": 0.8848333333333334,
  "best_epoch": null,
  "stopped_early": false,
  "seconds": 4.712,
  "weights": false,
  "created": 1795566645,
  "created_utc": "2026-11-25 00:30:45"
}
"#;

    #[test]
    fn an_old_flat_run_json_still_reads() {
        let r = RunRecord::from_json(OLD, Path::new("run.json")).unwrap();
        assert_eq!(
            (r.name.as_str(), r.params_count, r.validation_images, r.early_stopping.as_deref()),
            ("mlp-10-epochs", 101_770, Some(6000), None)
        );
        assert_eq!(r.params.iter().collect::<Vec<_>>(), [(&"train_subset".to_string(), &"60000".to_string())]);
        assert_eq!((r.created_ms, r.val_accuracy, r.best_epoch), (1_795_566_645_000, Some(0.8848333333333334), None));
        // Written again, it reads back the same in today's format.
        assert_eq!(RunRecord::from_json(&r.to_json(), Path::new("run.json")).unwrap(), r);
        assert!(r.to_json().contains("\"params\": {\n    \"train_subset\": \"60000\"\n  }"), "{}", r.to_json());
    }

    #[test]
    fn a_damaged_run_json_names_the_file_and_the_fix() {
        for bad in ["", "{", "[1]", "{\"name\": 3}", &OLD[..OLD.len() / 2]] {
            let e = RunRecord::from_json(bad, Path::new("runs/x/run.json")).unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{bad}: {e}");
            assert!(
                e.to_string().contains("runs/x/run.json") && e.to_string().contains("delete the run's folder"),
                "{e}"
            );
        }
    }

    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(super::utc(1_795_566_645), "2026-11-25 00:30:45");
    }
}
