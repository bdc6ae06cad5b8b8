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

use crate::error::{Error, Result};
use crate::json::{self, Value};
use crate::train::History;

/// One logged run: its folder, its parameters and final metrics (`run.json`), its history.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub name: String,
    pub dir: PathBuf,
    /// Everything `run.json` holds, in its order.
    pub params: Vec<(String, Value)>,
    pub history: History,
}

impl Run {
    /// A value of `run.json`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Seconds since 1970 when the run ended.
    pub fn created(&self) -> f64 {
        self.get("created").and_then(Value::as_f64).unwrap_or(0.0)
    }
}

/// Reads the run in `dir` (a folder with `run.json` and `history.csv`).
pub fn load(dir: impl AsRef<Path>) -> Result<Run> {
    let dir = dir.as_ref();
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).map_err(|e| Error::io(dir.join(f), e));
    let params = json::parse_object(&read("run.json")?)?;
    let mut history = History::from_csv(&read("history.csv")?)?;
    let get = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    history.best_epoch = get("best_epoch").and_then(|v| v.as_f64()).map(|e| e as usize);
    history.stopped_early = get("stopped_early") == Some(Value::Bool(true));
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(Run { name, dir: dir.to_path_buf(), params, history })
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
    runs.sort_by(|a, b| b.created().total_cmp(&a.created()).then_with(|| a.name.cmp(&b.name)));
    Ok(runs)
}

/// The columns of [`table`], in order; the parameters a run recorded itself (`RunLog::param`) go
/// between the settings and the results.
pub const COLUMNS: [&str; 16] = [
    "name", "created_utc", "model", "network", "epochs_run", "batch_size", "optimizer", "learning_rate", "seed",
    "validation_split", "loss", "accuracy", "val_loss", "val_accuracy", "best_epoch", "seconds",
];

/// Every run in `root` as a table, newest first: [`COLUMNS`] plus the parameters the runs recorded
/// (empty where a run lacks one). [`frame`] of [`load_all`] gives every key of `run.json`.
pub fn table(root: impl AsRef<Path>) -> Result<DataFrame> {
    let runs = load_all(root)?;
    let mut keys: Vec<&str> = COLUMNS[..10].to_vec();
    let own: Vec<String> = runs
        .iter()
        .flat_map(|r| r.get("own_params").map(Value::text).unwrap_or_default().split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|k| !k.is_empty())
        .collect();
    for k in &own {
        if !keys.contains(&k.as_str()) {
            keys.push(k);
        }
    }
    keys.extend(&COLUMNS[10..]);
    columns(&runs, &keys)
}

/// The runs as a table with every key of their `run.json` files.
pub fn frame(runs: &[Run]) -> Result<DataFrame> {
    let mut keys: Vec<&str> = Vec::new();
    for r in runs {
        for (k, _) in &r.params {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
    }
    columns(runs, &keys)
}

/// One column per key: whole numbers as integers, other numbers as floats, anything else as text.
fn columns(runs: &[Run], keys: &[&str]) -> Result<DataFrame> {
    let columns: Vec<Column> = keys
        .iter()
        .map(|&k| {
            let values: Vec<Option<&Value>> = runs.iter().map(|r| r.get(k).filter(|v| **v != Value::Null)).collect();
            let nums: Option<Vec<Option<f64>>> = values
                .iter()
                .map(|v| match v {
                    None => Some(None),
                    Some(Value::Num(x)) => Some(Some(*x)),
                    Some(_) => None,
                })
                .collect();
            match nums {
                Some(n) if n.iter().flatten().all(|x| x.fract() == 0.0 && x.abs() < 1e15) => {
                    Column::new(k.into(), n.iter().map(|x| x.map(|x| x as i64)).collect::<Vec<_>>())
                }
                Some(n) => Column::new(k.into(), n),
                None => Column::new(k.into(), values.iter().map(|v| v.map(Value::text)).collect::<Vec<_>>()),
            }
        })
        .collect();
    Ok(DataFrame::new(runs.len(), columns)?)
}

/// `(name, history)` pairs for [`plot::training_curves`](crate::plot::training_curves).
pub fn curves(runs: &[Run]) -> Vec<(&str, &History)> {
    runs.iter().map(|r| (r.name.as_str(), &r.history)).collect()
}
