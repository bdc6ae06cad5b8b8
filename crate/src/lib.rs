//! Fashion-MNIST in Rust: the support crate of the notebooks.
//!
//! One module per step of the Keras guide "Basic classification: classify images of clothing":
//!
//! | step | module |
//! |---|---|
//! | import and preprocess the data | [`data`] |
//! | build the model (typed shapes) | [`model`] |
//! | compile, fit, evaluate, predict | [`train`] |
//! | confusion matrix, per-class metrics | [`metrics`] |
//! | figures | [`plot`] |
//! | inline display in Jupyter (evcxr) | [`display`] |
//!
//! Notebooks start with `use fashion::prelude::*;`.

pub mod data;
pub mod display;
pub mod error;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod train;

pub use error::{Error, Result};

/// Everything a notebook cell uses.
pub mod prelude {
    pub use crate::data::{load_data, normalize, sample_indices, Dataset, FashionMnist, CLASS_NAMES};
    pub use crate::error::{Error, Result};
    pub use crate::model::{Arch, CnnArch, DeepMlpArch, Dev, Images, LinearArch, Logits, MlpArch};
    pub use crate::train::{Evaluation, History, Loss, Metric, Model, Optimizer, Verbosity};
    pub use crate::display::{EvcxrDisplay, Figure, Html, Table};
    pub use crate::metrics::ConfusionMatrix;
    pub use crate::plot;
    pub use ndarray::{s, Array1, Array2, Array3, Axis};
    pub use polars::prelude::DataFrame;
}
