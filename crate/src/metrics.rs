//! What the model gets right and wrong: confusion matrix, per-class precision / recall / accuracy,
//! and the tables (polars DataFrames) that notebooks show.

use ndarray::{Array1, Array2};
use polars::prelude::*;

use crate::data::{CLASS_NAMES, NUM_CLASSES};
use crate::error::{Error, Result};
use crate::train::{EpochLog, History};

/// Counts of (true class, predicted class) pairs: `counts[[t, p]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    pub counts: Array2<usize>,
}

impl ConfusionMatrix {
    /// From true labels and predicted classes.
    pub fn from_predictions(labels: &Array1<u8>, predicted: &Array1<u8>) -> Result<Self> {
        if labels.len() != predicted.len() {
            return Err(Error::InvalidArgument(format!("{} labels but {} predictions", labels.len(), predicted.len())));
        }
        crate::data::check_labels(labels)?;
        crate::data::check_labels(predicted)?;
        let mut counts = Array2::zeros((NUM_CLASSES, NUM_CLASSES));
        for (&t, &p) in labels.iter().zip(predicted) {
            counts[[t as usize, p as usize]] += 1;
        }
        Ok(ConfusionMatrix { counts })
    }

    /// From true labels and `(n, 10)` class probabilities (or logits).
    pub fn from_probabilities(labels: &Array1<u8>, probs: &Array2<f32>) -> Result<Self> {
        Self::from_predictions(labels, &predicted_classes(probs)?)
    }

    /// Number of samples.
    pub fn total(&self) -> usize {
        self.counts.sum()
    }

    /// Fraction on the diagonal.
    pub fn accuracy(&self) -> f64 {
        let right: usize = (0..NUM_CLASSES).map(|i| self.counts[[i, i]]).sum();
        fraction(right, self.total())
    }

    /// Of the images predicted as class `c`, the fraction that are `c`.
    pub fn precision(&self, c: usize) -> f64 {
        fraction(self.counts[[c, c]], self.counts.column(c).sum())
    }

    /// Of the images of class `c`, the fraction predicted as `c` (the per-class accuracy).
    pub fn recall(&self, c: usize) -> f64 {
        fraction(self.counts[[c, c]], self.counts.row(c).sum())
    }

    /// One row per class: `class, name, support, precision, recall, f1`. Recall is the per-class accuracy.
    pub fn per_class(&self) -> Result<DataFrame> {
        let p: Vec<f64> = (0..NUM_CLASSES).map(|c| self.precision(c)).collect();
        let r: Vec<f64> = (0..NUM_CLASSES).map(|c| self.recall(c)).collect();
        let f1: Vec<f64> =
            p.iter().zip(&r).map(|(p, r)| if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 }).collect();
        let support: Vec<u64> = (0..NUM_CLASSES).map(|c| self.counts.row(c).sum() as u64).collect();
        df!(
            "class" => (0..NUM_CLASSES as u32).collect::<Vec<u32>>(),
            "name" => CLASS_NAMES.to_vec(),
            "support" => support,
            "precision" => p,
            "recall" => r,
            "f1" => f1,
        )
        .map_err(Error::from)
    }
}

/// `part / whole`, 0 when there is nothing to divide.
fn fraction(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The argmax of each row.
pub fn predicted_classes(probs: &Array2<f32>) -> Result<Array1<u8>> {
    if probs.ncols() != NUM_CLASSES {
        return Err(Error::InvalidArgument(format!("expected (n, 10) scores, got {:?}", probs.shape())));
    }
    Ok(crate::train::step::classes(probs))
}

/// Indices of the wrong predictions, most confident first: `(index, predicted, probability)`.
pub fn confident_mistakes(labels: &Array1<u8>, probs: &Array2<f32>, n: usize) -> Result<Vec<(usize, usize, f32)>> {
    let pred = predicted_classes(probs)?;
    let mut wrong: Vec<(usize, usize, f32)> = pred
        .iter()
        .zip(labels)
        .enumerate()
        .filter(|(_, (p, t))| p != t)
        .map(|(i, (&p, _))| (i, p as usize, probs[[i, p as usize]]))
        .collect();
    wrong.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    wrong.truncate(n);
    Ok(wrong)
}

/// One row per run, to compare experiments: `model, epochs, accuracy, val_accuracy, val_loss,
/// seconds_per_epoch` (from the last epoch of each history).
pub fn compare(runs: &[(&str, &History)]) -> Result<DataFrame> {
    let last = |h: &History| h.last().copied();
    let col =
        |f: fn(&EpochLog) -> Option<f64>| runs.iter().map(|(_, h)| last(h).and_then(|e| f(&e))).collect::<Vec<_>>();
    df!(
        "model" => runs.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>(),
        "epochs" => runs.iter().map(|(_, h)| h.epochs.len() as u32).collect::<Vec<_>>(),
        "accuracy" => col(|e| Some(e.accuracy)),
        "val_accuracy" => col(|e| e.val_accuracy),
        "val_loss" => col(|e| e.val_loss),
        "seconds_per_epoch" => runs
            .iter()
            .map(|(_, h)| (!h.epochs.is_empty()).then(|| h.epochs.iter().map(|e| e.seconds).sum::<f64>() / h.epochs.len() as f64))
            .collect::<Vec<_>>(),
    )
    .map_err(Error::from)
}

/// The results of a grid of runs, for a table and [`plot::spread`](crate::plot::spread): for each
/// series (say a hidden width) and x (say a learning rate), one value per seed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Spread {
    /// `(series name, [(x, values over seeds)])`.
    pub series: Vec<(String, Points)>,
}

/// The points of one series of a [`Spread`]: each x with its values.
pub type Points = Vec<(f64, Vec<f64>)>;

impl Spread {
    /// Records `value` for `series` at `x`.
    pub fn add(&mut self, series: &str, x: f64, value: f64) {
        let s = match self.series.iter().position(|(n, _)| n == series) {
            Some(i) => &mut self.series[i].1,
            None => {
                self.series.push((series.to_string(), Vec::new()));
                &mut self.series.last_mut().expect("just pushed").1
            }
        };
        match s.iter_mut().find(|(px, _)| *px == x) {
            Some((_, values)) => values.push(value),
            None => s.push((x, vec![value])),
        }
    }

    /// One row per series and x: `series, x, mean, min, max, runs`.
    pub fn table(&self) -> Result<DataFrame> {
        let rows: Vec<(&str, f64, &Vec<f64>)> =
            self.series.iter().flat_map(|(n, pts)| pts.iter().map(move |(x, v)| (n.as_str(), *x, v))).collect();
        let stat = |f: fn(&[f64]) -> f64| rows.iter().map(|r| f(r.2)).collect::<Vec<_>>();
        Ok(df!(
            "series" => rows.iter().map(|r| r.0.to_string()).collect::<Vec<_>>(),
            "x" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            "mean" => stat(|v| v.iter().sum::<f64>() / v.len().max(1) as f64),
            "min" => stat(|v| v.iter().cloned().fold(f64::INFINITY, f64::min)),
            "max" => stat(|v| v.iter().cloned().fold(f64::NEG_INFINITY, f64::max)),
            "runs" => rows.iter().map(|r| r.2.len() as u32).collect::<Vec<_>>(),
        )?)
    }

    /// Shows the table when it ends a notebook cell.
    pub fn evcxr_display(&self) {
        match self.table() {
            Ok(df) => crate::display::Table(df).evcxr_display(),
            Err(e) => eprintln!("{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn confusion_counts_precision_recall() {
        let labels = array![0u8, 0, 1, 1, 2, 9];
        let pred = array![0u8, 1, 1, 1, 2, 0];
        let cm = ConfusionMatrix::from_predictions(&labels, &pred).unwrap();
        assert_eq!(cm.counts[[0, 1]], 1);
        assert_eq!(cm.counts[[9, 0]], 1);
        assert_eq!(cm.total(), 6);
        assert!((cm.accuracy() - 4.0 / 6.0).abs() < 1e-12);
        assert!((cm.recall(0) - 0.5).abs() < 1e-12);
        assert!((cm.precision(1) - 2.0 / 3.0).abs() < 1e-12);
        let df = cm.per_class().unwrap();
        assert_eq!(df.shape(), (10, 6));
        assert_eq!(df.column("support").unwrap().u64().unwrap().get(0), Some(2));
        assert_eq!(df.column("name").unwrap().str().unwrap().get(9), Some("Ankle boot"));
        assert!(ConfusionMatrix::from_predictions(&labels, &array![0u8]).is_err());
    }

    #[test]
    fn mistakes_sorted_by_confidence() {
        let labels = array![0u8, 1, 2];
        let mut p = Array2::<f32>::zeros((3, 10));
        p[[0, 0]] = 0.9; // right
        p[[1, 5]] = 0.6; // wrong, 60%
        p[[2, 7]] = 0.8; // wrong, 80%
        let m = confident_mistakes(&labels, &p, 5).unwrap();
        assert_eq!(m, vec![(2, 7, 0.8), (1, 5, 0.6)]);
    }

    #[test]
    fn compare_has_a_row_per_run() {
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
        let c = compare(&[("a", &h), ("b", &h)]).unwrap();
        assert_eq!(c.shape(), (2, 6));
        assert_eq!(c.column("accuracy").unwrap().f64().unwrap().get(1), Some(0.8));
    }

    #[test]
    fn spread_groups_values_by_series_and_x() {
        let mut s = Spread::default();
        for (series, x, v) in [("a", 1.0, 0.5), ("a", 1.0, 0.7), ("b", 1.0, 0.1), ("a", 2.0, 0.9)] {
            s.add(series, x, v);
        }
        let t = s.table().unwrap();
        assert_eq!(t.shape(), (3, 6));
        assert_eq!(t.column("mean").unwrap().f64().unwrap().get(0), Some(0.6));
        assert_eq!(t.column("min").unwrap().f64().unwrap().get(0), Some(0.5));
        assert_eq!(t.column("runs").unwrap().u32().unwrap().get(0), Some(2));
        assert_eq!(t.column("series").unwrap().str().unwrap().get(2), Some("b"));
    }
}
