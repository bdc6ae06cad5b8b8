//! Saving and loading weights (safetensors, the names dfdx gives the tensors: `1.weight`, `1.bias`, …).
//! A file whose tensors do not fit the network — other names, shapes or dtype — is an error that
//! leaves the model unchanged.

use std::path::Path;

use dfdx::prelude::*;

use crate::error::{Error, Result};
use crate::model::{self, Network, TensorInfo};

use super::Model;

impl<N: Network> Model<N> {
    /// Saves the weights as safetensors (the optimizer state is not saved), atomically: a reader sees
    /// the previous file or the new one, never half of one.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        crate::files::write_with(path, |tmp| self.net.save_safetensors(tmp).map_err(std::io::Error::other))
            .map_err(|e| Error::Weights { path: path.to_path_buf(), reason: e.to_string() })
    }

    /// Builds the network and loads weights saved by [`Model::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Model<N>> {
        let mut m = Model::new(0)?;
        m.load_weights(path)?;
        Ok(m)
    }

    /// Replaces this model's weights by those in `path`, after checking that every tensor's name, shape
    /// and dtype fit this network (a mismatch is an error and leaves the model unchanged).
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        check_weights_file(path, &model::tensor_infos(&self.net), &self.label())?;
        // Everything checked: load into a copy, then swap it in.
        let mut copy = self.net.clone();
        copy.load_safetensors(path).map_err(|e| mismatch(path, &self.label(), format!("{e:?}")))?;
        self.net = copy;
        // Optimizer moments belong to the old weights.
        if let Some(o) = self.optimizer() {
            self.compile(o);
        }
        Ok(())
    }
}

fn mismatch(path: &Path, model: &str, reason: String) -> Error {
    Error::WeightsMismatch { path: path.to_path_buf(), model: model.to_string(), reason }
}

/// Room for the JSON header of a safetensors file (a few hundred bytes for our networks).
const HEADER_ROOM: u64 = 1 << 16;

/// Checks that the safetensors file at `path` holds exactly the tensors `expected`, as finite `f32`
/// values. A file larger than those tensors need, or not a regular file, is refused before reading.
fn check_weights_file(path: &Path, expected: &[TensorInfo], model: &str) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::io(path, std::io::Error::other("not a regular file (a folder, FIFO or device)")));
    }
    let need: u64 = expected.iter().map(|t| 4 * t.shape.iter().product::<usize>() as u64).sum();
    if meta.len() > need + 8 + HEADER_ROOM {
        return Err(mismatch(
            path,
            model,
            format!(
                "the file is {} bytes, this network's weights take {need}: they belong to a bigger network",
                meta.len()
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = ::safetensors::tensor::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Weights { path: path.to_path_buf(), reason: format!("not a safetensors file ({e:?})") })?;
    let mut found: Vec<String> = file.names().into_iter().cloned().collect();
    found.sort();
    let mut want: Vec<String> = expected.iter().map(|t| t.name.clone()).collect();
    want.sort();
    if found != want {
        return Err(mismatch(path, model, format!("the file has tensors {found:?}, this model has {want:?}")));
    }
    for TensorInfo { name, shape, .. } in expected {
        let t = file.tensor(name).map_err(|e| mismatch(path, model, format!("{e:?}")))?;
        if t.shape() != shape.as_slice() {
            return Err(mismatch(path, model, format!("`{name}` has shape {:?}, expected {shape:?}", t.shape())));
        }
        if t.dtype() != ::safetensors::tensor::Dtype::F32 {
            return Err(mismatch(path, model, format!("`{name}` is {:?}, expected F32", t.dtype())));
        }
        let bad = t.data().chunks_exact(4).position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite());
        if let Some(i) = bad {
            return Err(Error::Weights {
                path: path.to_path_buf(),
                reason: format!("`{name}` holds a NaN or infinite value (element {i}): the run that wrote it diverged; train again with a lower learning rate"),
            });
        }
    }
    Ok(())
}
