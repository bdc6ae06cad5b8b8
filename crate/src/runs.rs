//! The runs logged by `fit` (see [`RunLog`](crate::train::RunLog)), read back from disk: one [`Run`]
//! per folder, and [`table`], every run of a folder as one DataFrame, newest first.
//!
//! ```no_run
//! # use fashion::prelude::*;
//! let all: Vec<Run> = runs::load_all("runs")?;
//! let table: DataFrame = runs::table("runs")?;
//! let figure = plot::training_curves(&runs::curves(&all))?;
//! # Ok::<(), fashion::Error>(())
//! ```

use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::train::{History, RunRecord};

/// One logged run: its folder, its settings and final metrics (`run.json`), its history.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub name: String,
    pub dir: PathBuf,
    pub record: RunRecord,
    pub history: History,
}

impl Run {
    /// Every field of `run.json` by name — the run's own parameters ([`RunLog::param`]) among them, in
    /// place of `params` — in the record's order.
    ///
    /// [`RunLog::param`]: crate::train::RunLog::param
    pub fn fields(&self) -> Vec<(String, Value)> {
        let Ok(Value::Object(map)) = serde_json::to_value(&self.record) else { return Vec::new() };
        let mut fields = Vec::new();
        for (k, v) in map {
            match (k.as_str(), v) {
                ("params", Value::Object(own)) => fields.extend(own),
                (_, v) => fields.push((k, v)),
            }
        }
        fields
    }
}

/// Reads the run in `dir` (a folder with `run.json` and `history.csv`).
pub fn load(dir: impl AsRef<Path>) -> Result<Run> {
    let dir = dir.as_ref();
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).map_err(|e| Error::io(dir.join(f), e));
    let record = RunRecord::from_json(&read("run.json")?, &dir.join("run.json"))?;
    let mut history = History::from_csv(&read("history.csv")?, &dir.join("history.csv"))?;
    history.best_epoch = record.best_epoch;
    history.stopped_early = record.stopped_early;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(Run { name, dir: dir.to_path_buf(), record, history })
}

/// Every complete run in `root`, newest first. Folders without `run.json` — runs still going, or
/// killed — and hidden folders are skipped; a missing `root` has no runs.
pub fn load_all(root: impl AsRef<Path>) -> Result<Vec<Run>> {
    let root = root.as_ref();
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(root, e)),
    };
    let mut runs = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(root, e))?.path();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden && path.join("run.json").is_file() {
            runs.push(load(&path)?);
        }
    }
    runs.sort_by(|a, b| b.record.created_ms.cmp(&a.record.created_ms).then_with(|| a.name.cmp(&b.name)));
    Ok(runs)
}

/// The settings [`table`] shows before the runs' own parameters, and the results after them.
const SETTINGS: [&str; 10] = [
    "name",
    "created_utc",
    "model",
    "network",
    "epochs_run",
    "batch_size",
    "optimizer",
    "learning_rate",
    "seed",
    "validation_split",
];
const RESULTS: [&str; 6] = ["loss", "accuracy", "val_loss", "val_accuracy", "best_epoch", "seconds"];

/// Every run in `root` as a table, newest first: the main settings, the parameters the runs recorded
/// themselves (empty where a run lacks one), the results. [`frame`] of [`load_all`] gives every field.
pub fn table(root: impl AsRef<Path>) -> Result<DataFrame> {
    let runs = load_all(root)?;
    let mut keys: Vec<String> = SETTINGS.iter().map(|k| k.to_string()).collect();
    for r in &runs {
        for k in r.record.params.keys() {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    keys.extend(RESULTS.iter().map(|k| k.to_string()));
    columns(&runs, &keys)
}

/// The runs as a table with every field of their `run.json` files.
pub fn frame(runs: &[Run]) -> Result<DataFrame> {
    let mut keys: Vec<String> = Vec::new();
    for r in runs {
        for (k, _) in r.fields() {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    columns(runs, &keys)
}

/// One column per key: whole numbers as integers, other numbers as floats, anything else as text.
fn columns(runs: &[Run], keys: &[String]) -> Result<DataFrame> {
    let fields: Vec<Vec<(String, Value)>> = runs.iter().map(Run::fields).collect();
    let columns: Vec<Column> = keys
        .iter()
        .map(|k| {
            let values: Vec<Option<&Value>> = fields
                .iter()
                .map(|f| f.iter().find(|(key, _)| key == k).map(|(_, v)| v).filter(|v| !v.is_null()))
                .collect();
            let name = k.as_str().into();
            if values.iter().flatten().all(|v| v.is_u64() || v.is_i64()) {
                Column::new(name, values.iter().map(|v| v.and_then(Value::as_i64)).collect::<Vec<_>>())
            } else if values.iter().flatten().all(|v| v.is_number()) {
                Column::new(name, values.iter().map(|v| v.and_then(Value::as_f64)).collect::<Vec<_>>())
            } else {
                let text = |v: &Value| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Column::new(name, values.iter().map(|v| v.map(text)).collect::<Vec<_>>())
            }
        })
        .collect();
    Ok(DataFrame::new(runs.len(), columns)?)
}

/// `(name, history)` pairs for [`plot::training_curves`](crate::plot::training_curves).
pub fn curves(runs: &[Run]) -> Vec<(&str, &History)> {
    runs.iter().map(|r| (r.name.as_str(), &r.history)).collect()
}
