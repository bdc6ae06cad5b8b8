//! A run's checkpoint ([`RunLog::with_checkpoints`](super::RunLog::with_checkpoints)): after every epoch,
//! everything `fit` needs to go on exactly as it would have — the weights, the optimizer's step and moments,
//! the epochs done, the TensorBoard step, the dropout masks drawn so far, the history and early stopping's
//! state — in one file, `checkpoint.safetensors` (the tensors, and the rest as JSON in its metadata), written
//! atomically. The shuffles need nothing: each epoch's order is drawn from the seed and the epoch's number.

use std::collections::HashMap;
use std::path::Path;

use ::safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};
use dfdx::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Dev;

use super::optimizer::Moments;
use super::run_log::RunRecord;
use super::EpochLog;

/// The metadata key that holds [`State`].
const KEY: &str = "fashion_checkpoint";
pub(crate) const FORMAT: u32 = 1;

/// Where a fit stood after an epoch, besides the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    pub format: u32,
    /// The run's settings when it started: a resumed fit must have the same.
    pub settings: RunRecord,
    /// Epochs of this fit completed.
    pub epochs_completed: usize,
    /// Epochs the model had trained in all (`Model`'s count, which seeds each epoch's shuffle).
    pub model_epochs: usize,
    /// Batches trained in this fit (TensorBoard's step for `batch_loss`).
    pub steps: usize,
    /// The `batch_loss` not yet written: sum and count.
    pub batch_loss: (f64, usize),
    /// Dropout masks the model's device has drawn since the model was built.
    pub dropout_draws: u64,
    pub optimizer_step: u32,
    pub history: Vec<EpochLog>,
    pub best_epoch: Option<usize>,
    /// Early stopping: the best value so far and the epochs waited since.
    pub stopper: Option<(Option<f64>, usize)>,
    /// Whether the file holds the best epoch's weights too (`restore_best_weights`).
    pub best_weights: bool,
    /// `ReduceOnPlateau`'s state, with that schedule.
    #[serde(default)]
    pub plateau: Option<super::schedule::PlateauState>,
}

/// Writes the checkpoint: `net` (and `best`, the weights early stopping would restore), the optimizer's
/// moments `slots` (one pair per parameter tensor) and `state`.
pub(crate) fn save<M: TensorCollection<f32, Dev>>(
    path: &Path,
    net: &M,
    slots: &[Moments],
    best: Option<&M>,
    state: &State,
) -> Result<()> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, (shape, values)) in values(net).into_iter().enumerate() {
        if let Some((m, v)) = slots.get(i) {
            for (kind, moment) in [("m", m), ("v", v)] {
                if !moment.is_empty() {
                    tensors.push((format!("optimizer.{i}.{kind}"), shape.clone(), bytes(moment)));
                }
            }
        }
        tensors.push((format!("weights.{i}"), shape, bytes(&values)));
    }
    if let Some(best) = best {
        for (i, (shape, values)) in values(best).into_iter().enumerate() {
            tensors.push((format!("best.{i}"), shape, bytes(&values)));
        }
    }
    let views = tensors
        .iter()
        .map(|(name, shape, data)| Ok((name.as_str(), TensorView::new(Dtype::F32, shape.clone(), data)?)))
        .collect::<std::result::Result<Vec<_>, SafeTensorError>>()
        .map_err(|e| corrupt(path, format!("{e:?}")))?;
    let json = serde_json::to_string(state).map_err(|e| corrupt(path, e.to_string()))?;
    let file = ::safetensors::tensor::serialize(views, &Some(HashMap::from([(KEY.to_string(), json)])))
        .map_err(|e| corrupt(path, format!("{e:?}")))?;
    crate::files::write_atomic(path, &file)
}

/// What [`load`] read besides the weights it put into the network.
pub(crate) struct Loaded<M> {
    pub state: State,
    pub optimizer: Vec<Moments>,
    pub best: Option<M>,
}

/// Reads the checkpoint at `path` into `net` after checking that it was written by a fit with `settings`
/// and that its tensors fit `net`; on any error `net` is unchanged.
pub(crate) fn load<M: TensorCollection<f32, Dev> + Clone>(
    path: &Path,
    net: &mut M,
    settings: &RunRecord,
) -> Result<Loaded<M>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file =
        SafeTensors::deserialize(&bytes).map_err(|e| corrupt(path, format!("not a safetensors file ({e:?})")))?;
    let (_, meta) =
        SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(path, format!("not a safetensors file ({e:?})")))?;
    let json = meta.metadata().as_ref().and_then(|m| m.get(KEY)).ok_or_else(|| corrupt(path, "no fit state".into()))?;
    let state: State = serde_json::from_str(json).map_err(|e| corrupt(path, e.to_string()))?;
    if state.format != FORMAT {
        return Err(corrupt(path, format!("format {} (this version reads {FORMAT})", state.format)));
    }
    let differ = differences(&state.settings, settings);
    if !differ.is_empty() {
        return Err(Error::Setting {
            setting: "run",
            reason: format!(
                "run {:?} has a checkpoint of a fit with other settings ({}): fit with the same settings to \
                 resume it, or choose another run name, or delete {} to start over",
                settings.name,
                differ.join(", "),
                path.parent().unwrap_or(path).display()
            ),
        });
    }
    let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let t = file.tensor(name).map_err(|e| corrupt(path, format!("`{name}`: {e:?}")))?;
        if t.dtype() != Dtype::F32 || t.shape() != shape {
            return Err(corrupt(
                path,
                format!("`{name}` is {:?} {:?}, this network needs F32 {shape:?}", t.dtype(), t.shape()),
            ));
        }
        Ok(t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    };
    let shapes: Vec<Vec<usize>> = values(net).into_iter().map(|(shape, _)| shape).collect();
    let weights =
        shapes.iter().enumerate().map(|(i, s)| read(&format!("weights.{i}"), s)).collect::<Result<Vec<_>>>()?;
    let moment = |i: usize, kind: &str, shape: &[usize]| {
        let name = format!("optimizer.{i}.{kind}");
        if file.names().iter().any(|n| **n == name) {
            read(&name, shape)
        } else {
            Ok(Vec::new())
        }
    };
    let optimizer = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| Ok((moment(i, "m", s)?, moment(i, "v", s)?)))
        .collect::<Result<Vec<_>>>()?;
    let best = match state.best_weights {
        true => {
            let best =
                shapes.iter().enumerate().map(|(i, s)| read(&format!("best.{i}"), s)).collect::<Result<Vec<_>>>()?;
            let mut m = net.clone();
            set_values(&mut m, &best)?;
            Some(m)
        }
        false => None,
    };
    let mut copy = net.clone();
    set_values(&mut copy, &weights)?;
    *net = copy;
    Ok(Loaded { state, optimizer, best })
}

/// The settings that differ, as `name: then → now`.
fn differences(then: &RunRecord, now: &RunRecord) -> Vec<String> {
    let (a, b) = (serde_json::to_value(then), serde_json::to_value(now));
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (a, b) else {
        return vec!["unreadable".into()];
    };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {v} then, {} now", b.get(k).map(|v| v.to_string()).unwrap_or_default()))
        .collect()
}

fn corrupt(path: &Path, reason: String) -> Error {
    Error::Corrupt { path: path.to_path_buf(), reason }
}

fn bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Every parameter tensor of `net`, in the network's order: its shape and values.
fn values<M: TensorCollection<f32, Dev>>(net: &M) -> Vec<(Vec<usize>, Vec<f32>)> {
    struct Read(Vec<(Vec<usize>, Vec<f32>)>);
    impl TensorVisitor<f32, Dev> for Read {
        type Viewer = ViewTensorRef;
        type Err = std::convert::Infallible;
        type E2 = f32;
        type D2 = Dev;
        fn visit<S: Shape>(
            &mut self,
            _: TensorOptions<S, f32, Dev>,
            t: &Tensor<S, f32, Dev>,
        ) -> std::result::Result<Option<Tensor<S, f32, Dev>>, Self::Err> {
            self.0.push((t.shape().concrete().into_iter().collect(), t.as_vec()));
            Ok(None)
        }
        fn visit_scalar<N: num_traits::NumCast>(
            &mut self,
            _: ScalarOptions<N>,
            _: &N,
        ) -> std::result::Result<Option<N>, Self::Err> {
            Ok(None)
        }
    }
    let mut read = Read(Vec::new());
    let _ = M::iter_tensors(&mut RecursiveWalker { m: net, f: &mut read });
    read.0
}

/// Sets every parameter tensor of `net` to `values` (as [`values`] lists them).
fn set_values<M: TensorCollection<f32, Dev>>(net: &mut M, values: &[Vec<f32>]) -> Result<()> {
    struct Write<'a>(&'a [Vec<f32>], usize);
    impl TensorVisitor<f32, Dev> for Write<'_> {
        type Viewer = ViewTensorMut;
        type Err = String;
        type E2 = f32;
        type D2 = Dev;
        fn visit<S: Shape>(
            &mut self,
            _: TensorOptions<S, f32, Dev>,
            t: &mut Tensor<S, f32, Dev>,
        ) -> std::result::Result<Option<Tensor<S, f32, Dev>>, String> {
            let v = self.0.get(self.1).filter(|v| v.len() == t.shape().num_elements());
            let v = v.ok_or_else(|| format!("tensor {} does not fit", self.1))?;
            t.copy_from(v);
            self.1 += 1;
            Ok(None)
        }
        fn visit_scalar<N: num_traits::NumCast>(
            &mut self,
            _: ScalarOptions<N>,
            _: &mut N,
        ) -> std::result::Result<Option<N>, String> {
            Ok(None)
        }
    }
    M::iter_tensors(&mut RecursiveWalker { m: net, f: &mut Write(values, 0) })
        .map(|_| ())
        .map_err(Error::InvalidArgument)
}
