//! Fashion-MNIST in Rust: the support crate of the notebooks.
//!
//! One module per step of the Keras guide "Basic classification: classify images of clothing":
//!
//! | step | module |
//! |---|---|
//! | import and preprocess the data | [`data`] |
//! | build the model (typed shapes) | [`model`] |
//! | compile, fit, evaluate, predict | [`train`] |
//! | the CPU kernels the layers run on | the `fashion_kernels` crate (`crate/kernels`) |
//! | confusion matrix, per-class metrics | [`metrics`] |
//! | figures | [`plot`] |
//! | inline display in Jupyter (evcxr) | [`display`] |
//!
//! Notebooks start with `use fashion::prelude::*;`.

pub mod data;
pub mod display;
pub mod error;
pub mod files;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod runs;
pub mod tensorboard;
pub mod train;

pub use error::{Error, Result};

/// dfdx itself, for cells that build or call a typed network directly.
pub use dfdx;
/// polars itself, for cells that build their own tables.
pub use polars;

/// A notebook parameter: the environment variable `name` parsed as `T`, or `default` when unset.
///
/// `EPOCHS=20 scripts/run-notebook notebooks/02-classify-clothing.ipynb` re-runs with 20 epochs.
/// A value that does not parse is reported and the default used.
pub fn param<T: std::str::FromStr + std::fmt::Display>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => match v.trim().parse() {
            Ok(x) => x,
            Err(_) => {
                eprintln!("{name}={v:?} is not valid here; using {default}");
                default
            }
        },
        Err(_) => default,
    }
}

/// Everything a notebook cell uses.
pub mod prelude {
    pub use crate::data::load_image;
    pub use crate::data::{load_data, normalize, sample_indices, shape_str, Dataset, FashionMnist, CLASS_NAMES};
    pub use crate::display::{setup_notebook, EvcxrDisplay, Figure, Html, Table};
    pub use crate::error::{Error, Result};
    pub use crate::metrics::compare;
    pub use crate::metrics::{ConfusionMatrix, Spread};
    pub use crate::model::{
        AddChannel, Arch, AvgPool2d, BatchNorm, CnnArch, Conv2d, ConvReluPool, DeepMlpArch, Dev, Dropout, DropoutOneIn,
        Elu, Flatten, Gelu, GlobalAvgPool, Images, Initializer, Layer, LeakyReLU, Linear, LinearArch, Logits,
        MaxPool2d, MlpArch, Network, ReLU, Residual, ResidualProjection, Rows, Sigmoid, Tanh,
    };
    pub use crate::param;
    pub use crate::plot;
    pub use crate::runs::{self, Run};
    pub use crate::tensorboard::{tensorboard, TensorBoard};
    pub use crate::train::validation_split;
    pub use crate::train::{
        Adam, AdamW, Augment, EarlyStopping, Evaluation, FitOptions, History, Model, Monitor, Optimizer,
        ReduceOnPlateau, RunLog, Schedule, Sgd, Verbosity,
    };
    /// The dfdx names cells use to build and call a typed network directly.
    pub use dfdx::prelude::{Const, DeviceBuildExt, HasShape, Module, Shape, ZerosTensor};
    pub use ndarray::{s, Array1, Array2, Array3, Axis};
    pub use polars::prelude::DataFrame;
}
