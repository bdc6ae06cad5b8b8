//! What `fit` returns: one row per epoch, as Keras' `history.history`; a CSV file and a polars table.

use std::path::Path;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One row of [`History`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// 1-based, as Keras prints it.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches (weighted by batch size).
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    /// Wall-clock seconds of the epoch's training (validation excluded).
    pub seconds: f64,
    /// With a learning-rate schedule: the rate of the epoch's last batch.
    #[serde(default)]
    pub learning_rate: Option<f64>,
}

/// What `fit` returns: one row per epoch (Keras' `history.history`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    pub epochs: Vec<EpochLog>,
    /// With early stopping: the epoch whose monitored value was best.
    pub best_epoch: Option<usize>,
    /// Early stopping ended the training before the last epoch asked for.
    pub stopped_early: bool,
    /// The stop button (SIGINT) ended the training during an epoch: `epochs` holds the epochs completed
    /// before it; the model keeps the weights of the last batch trained.
    pub interrupted: bool,
}

impl History {
    /// Column names, in order.
    pub const COLUMNS: [&'static str; 6] = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"];

    /// The last epoch's row.
    pub fn last(&self) -> Option<&EpochLog> {
        self.epochs.last()
    }

    /// Whether a schedule set the rates (the history then has a `learning_rate` column).
    pub fn has_learning_rates(&self) -> bool {
        self.epochs.iter().any(|e| e.learning_rate.is_some())
    }

    /// The history as CSV text (empty cells where there was no validation set); with a schedule, a
    /// last column `learning_rate`.
    pub fn to_csv(&self) -> String {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
        let rates = self.has_learning_rates();
        let mut s = Self::COLUMNS.join(",");
        s.push_str(if rates { ",learning_rate\n" } else { "\n" });
        for e in &self.epochs {
            s.push_str(&format!(
                "{},{:.6},{:.6},{},{},{:.3}",
                e.epoch,
                e.loss,
                e.accuracy,
                opt(e.val_loss),
                opt(e.val_accuracy),
                e.seconds
            ));
            if rates {
                s.push_str(&format!(",{}", e.learning_rate.map(|v| format!("{v:e}")).unwrap_or_default()));
            }
            s.push('\n');
        }
        s
    }

    /// Writes [`History::to_csv`] to `path` (atomically: a reader sees the old file or the new one).
    pub fn write_csv(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::files::write_atomic(path, self.to_csv().as_bytes())
    }

    /// Reads what [`History::to_csv`] wrote (`path` names the file in errors).
    pub fn from_csv(text: &str, path: &Path) -> Result<History> {
        let bad = |line: usize, what: &str| Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!("line {line}: {what}"),
        };
        let mut lines = text.lines();
        let header = lines.next().map(str::trim).unwrap_or_default();
        let plain = Self::COLUMNS.join(",");
        let columns = match header {
            h if h == plain => 6,
            h if h == format!("{plain},learning_rate") => 7,
            _ => return Err(bad(1, &format!("expected the header {plain}"))),
        };
        let mut epochs = Vec::new();
        for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let cells: Vec<&str> = line.trim().split(',').collect();
            if cells.len() != columns {
                return Err(bad(i + 2, &format!("expected {columns} values")));
            }
            let num =
                |j: usize| cells[j].parse::<f64>().map_err(|_| bad(i + 2, &format!("`{}` is not a number", cells[j])));
            let opt = |j: usize| if cells[j].is_empty() { Ok(None) } else { num(j).map(Some) };
            epochs.push(EpochLog {
                epoch: cells[0].parse().map_err(|_| bad(i + 2, "bad epoch"))?,
                loss: num(1)?,
                accuracy: num(2)?,
                val_loss: opt(3)?,
                val_accuracy: opt(4)?,
                seconds: num(5)?,
                learning_rate: if columns == 7 { opt(6)? } else { None },
            });
        }
        Ok(History { epochs, ..Default::default() })
    }

    /// The history as a polars DataFrame (columns [`History::COLUMNS`], and `learning_rate` with a
    /// schedule; validation columns null when absent).
    pub fn to_dataframe(&self) -> Result<DataFrame> {
        let col = |f: fn(&EpochLog) -> Option<f64>| self.epochs.iter().map(f).collect::<Vec<_>>();
        let mut df = df!(
            "epoch" => self.epochs.iter().map(|e| e.epoch as u32).collect::<Vec<_>>(),
            "loss" => col(|e| Some(e.loss)),
            "accuracy" => col(|e| Some(e.accuracy)),
            "val_loss" => col(|e| e.val_loss),
            "val_accuracy" => col(|e| e.val_accuracy),
            "seconds" => col(|e| Some(e.seconds)),
        )?;
        if self.has_learning_rates() {
            df.with_column(Column::new("learning_rate".into(), col(|e| e.learning_rate)))?;
        }
        Ok(df)
    }

    /// Shows the history as a table when it ends a notebook cell.
    pub fn evcxr_display(&self) {
        match self.to_dataframe() {
            Ok(df) => crate::display::Table(df).evcxr_display(),
            Err(e) => eprintln!("{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataframe_has_nulls_without_validation_and_csv_empty_cells() {
        let h = History {
            epochs: vec![EpochLog {
                epoch: 1,
                loss: 0.5,
                accuracy: 0.8,
                val_loss: None,
                val_accuracy: None,
                seconds: 1.0,
                learning_rate: None,
            }],
            ..Default::default()
        };
        let df = h.to_dataframe().unwrap();
        let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
        assert_eq!(names, History::COLUMNS);
        assert_eq!(df.column("val_loss").unwrap().null_count(), 1);
        assert_eq!(h.to_csv(), "epoch,loss,accuracy,val_loss,val_accuracy,seconds\n1,0.500000,0.800000,,,1.000\n");
        let p = Path::new("history.csv");
        assert_eq!(History::from_csv(&h.to_csv(), p).unwrap(), h);
        let with_val = History {
            epochs: vec![EpochLog { val_loss: Some(0.25), val_accuracy: Some(0.75), ..h.epochs[0] }],
            ..Default::default()
        };
        assert_eq!(History::from_csv(&with_val.to_csv(), p).unwrap(), with_val);
        assert!(matches!(History::from_csv("epoch,loss\n", p), Err(Error::Corrupt { .. })));
        assert!(History::from_csv(&(h.to_csv() + "2,x,1,,,1\n"), p).unwrap_err().to_string().contains("line 3"));
        let scheduled =
            History { epochs: vec![EpochLog { learning_rate: Some(2.5e-4), ..h.epochs[0] }], ..Default::default() };
        assert!(scheduled.to_csv().starts_with("epoch,loss,accuracy,val_loss,val_accuracy,seconds,learning_rate\n"));
        assert_eq!(History::from_csv(&scheduled.to_csv(), p).unwrap(), scheduled);
        assert_eq!(scheduled.to_dataframe().unwrap().width(), 7);
    }
}
