//! Steps 5–8 of the guide — **compile, fit, evaluate, predict** — named as Keras names them, for any
//! network type.
//!
//! ```no_run
//! use fashion::prelude::*;
//! let data = load_data()?;
//! let (x, y) = (data.train.normalized(), &data.train.labels);
//! type Wide = (Flatten<784>, Linear<784, 256>, ReLU, DropoutOneIn<5>, Linear<256, 10>);
//! let mut model = Model::<Wide>::new(42)?;                                // build
//! model.compile(Adam::default());                                        // compile
//! let history = model.fit(&x, y, FitOptions { epochs: 10, ..Default::default() })?; // fit
//! let test = model.evaluate(&data.test.normalized(), &data.test.labels)?;
//! println!("Test accuracy: {:.4}", test.accuracy);
//! # Ok::<(), fashion::Error>(())
//! ```
//!
//! | file | what |
//! |---|---|
//! | this one | [`Model`]: build and compile |
//! | `fit.rs` | `Model::fit`: the checks, the epoch loop, the run log around it |
//! | `inference.rs` | `Model::evaluate`, `predict`, …: batched inference |
//! | [`step`] | one training step: forward → loss → backward → update |
//! | [`optimizer`] | [`Adam`], [`Sgd`] and their state |
//! | `history.rs` | [`History`], what `fit` returns |
//! | `options.rs` | [`FitOptions`], [`RunLog`] |
//! | `stopping.rs` | [`EarlyStopping`] and its state through a fit |
//! | `run_log.rs` | [`RunRecord`] (`run.json`) and writing a run's folder (history, TensorBoard events, weights) |
//! | `progress.rs` | Keras-style progress lines |
//! | `weights.rs` | save and load weights |
//! | `checkpoint.rs` | a run's checkpoint after every epoch, and resuming from it |
//! | `interrupt.rs` | the stop button: SIGINT ends `fit` at the end of a batch |
//! | `evcxr_ids.rs` | why and how a model survives being used across notebook cells |
//!
//! `Model<N>` is generic, so for a network type written in a notebook cell its methods are compiled in
//! the cell (without optimisation); they only loop over batches and call the layers and the non-generic
//! functions of [`step`] and of the kernels, so the cell trains at the speed of the same type built into
//! this crate (measured: `notebooks/README.md`, "Your own network").

// On the GPU a fit keeps no checkpoints (dfdx keeps its optimizers' state private).
#[cfg_attr(feature = "cuda", allow(dead_code))]
mod checkpoint;
mod evcxr_ids;
mod fit;
mod history;
mod inference;
mod interrupt;
pub mod optimizer;
mod options;
mod progress;
mod run_log;
mod schedule;
pub mod step;
mod stopping;
#[cfg(test)]
mod tests;
mod weights;

use std::fmt;

use dfdx::prelude::*;

use crate::error::Result;
use crate::model::{self, Dev, Initializer, Layer, Network, Summary};

pub use fashion_kernels::augment::Augment;
pub use history::{EpochLog, History};
pub use optimizer::{Adam, AdamW, Optimizer, Sgd};
pub use options::{FitOptions, RunLog};
pub use run_log::RunRecord;
pub use schedule::{ReduceOnPlateau, Schedule};
pub use step::{argmax, validation_split};
pub use stopping::{EarlyStopping, Monitor};

use optimizer::OptState;
use step::dev_err;

/// How much `fit` and `evaluate` print (Keras' `verbose`): [`Model::verbosity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// Nothing (`verbose=0`).
    Silent,
    /// Keras style: a live bar on a terminal, one line per epoch elsewhere (notebooks, logs), and
    /// `evaluate`'s `313/313 - 0s - loss: … - accuracy: …`.
    #[default]
    Progress,
}

/// Loss and accuracy over a whole set (Keras' `model.evaluate`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loss: {:.4} - accuracy: {:.4}", self.loss, self.accuracy)
    }
}

/// A network of type `N` (any tuple of this crate's layers from images to logits), its weights, and —
/// after `compile` — its optimizer with its state.
pub struct Model<N: Network> {
    name: String,
    seed: u64,
    dev: Dev,
    net: N::Net,
    opt: Option<OptState<N::Net>>,
    /// Epochs trained so far (shuffling differs from one epoch to the next, across `fit` calls too).
    epochs_done: usize,
    /// Dropout masks drawn from the device's generator since the build (a checkpoint keeps the count).
    dropout_draws: u64,
    /// What `fit` and `evaluate` print (`model.verbosity = Verbosity::Silent` for sweeps).
    pub verbosity: Verbosity,
}

impl<N: Network> Model<N> {
    /// Builds the network with weights drawn from `seed` (same seed → same weights), initialised as
    /// Keras does (Glorot-uniform weights, zero biases). A shape the compiler cannot check — the `N` of
    /// `Flatten<N>` — is checked here: [`Error::Network`].
    pub fn new(seed: u64) -> Result<Model<N>> {
        let dev = Dev::seed_from_u64(seed);
        #[cfg(not(feature = "cuda"))]
        dfdx::flush_denormals_to_zero();
        fashion_kernels::keep_large_buffers();
        #[allow(unused_mut)]
        let mut net = dev.try_build_module::<N, f32>().map_err(dev_err)?;
        // dfdx's own `Linear` (the `cuda` build's) draws its weights as PyTorch does: Keras' instead.
        #[cfg(feature = "cuda")]
        model::initialize(&mut net, Initializer::GlorotUniform).map_err(dev_err)?;
        model::summarize::<N>(&net, "sequential")?;
        let mut model = Model::<N> {
            name: "sequential".into(),
            seed,
            dev,
            net,
            opt: None,
            epochs_done: 0,
            dropout_draws: 0,
            verbosity: Verbosity::Progress,
        };
        // The first layer's input is the images: nothing needs its gradient.
        Layer::input_is_data(&mut model.net);
        Ok(model)
    }

    /// The same model with its weights drawn anew by `init` — `Initializer::HeNormal` is Keras'
    /// `kernel_initializer="he_normal"` on every dense and convolution layer, the start He et al.
    /// propose for ReLU networks. Biases and batch norm start as `Model::new` starts them; the draws come
    /// from the model's seeded generator, so the same seed gives the same weights.
    ///
    /// ```no_run
    /// # use fashion::prelude::*;
    /// let model: Model<CnnArch> = Model::new(42)?.with_initializer(Initializer::HeNormal)?;
    /// # Ok::<(), fashion::Error>(())
    /// ```
    pub fn with_initializer(mut self, init: Initializer) -> Result<Self> {
        model::initialize(&mut self.net, init).map_err(dev_err)?;
        Ok(self)
    }

    /// The same model under another name (Keras' `name=`), shown by `summary` and in errors.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How messages name this model: its name, or its type while it has the default name.
    fn label(&self) -> String {
        match self.name.as_str() {
            "sequential" => model::short_type_name::<N>(),
            name => name.to_string(),
        }
    }

    /// The device tensors live on.
    pub fn device(&self) -> &Dev {
        &self.dev
    }

    /// The built network: its layers and weights, as dfdx modules (`model.network().1.weight`).
    pub fn network(&self) -> &N::Net {
        &self.net
    }

    /// Number of trainable parameters, counted from the tensors.
    pub fn count_params(&self) -> usize {
        self.net.num_trainable_params()
    }

    /// Keras' `model.summary()`: every layer with its output shape and parameter count, read from the
    /// network's type and weights.
    pub fn summary(&self) -> Summary {
        // `new` checked that the layers fit the images, so describing them cannot fail here.
        model::summarize::<N>(&self.net, &self.name).unwrap_or_else(|_| Summary {
            name: self.name.clone(),
            type_name: model::short_type_name::<N>(),
            layers: Vec::new(),
            total_params: self.count_params(),
            non_trainable_params: 0,
        })
    }

    /// Chooses the optimizer: `Adam::default()`, `AdamW { .. }` or `Sgd { .. }`. The loss is the sparse
    /// categorical cross-entropy of the logits and the metric the accuracy (the guide's only choices).
    /// Compiling again resets the optimizer's state, as in Keras.
    pub fn compile(&mut self, optimizer: impl Into<Optimizer>) {
        self.opt = Some(OptState::new(optimizer.into(), &self.net));
    }

    /// The optimizer given to `compile`, if any.
    pub fn optimizer(&self) -> Option<Optimizer> {
        self.opt.as_ref().map(|o| o.config)
    }
}

impl<N: Network> fmt::Debug for Model<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("type", &model::short_type_name::<N>())
            .field("params", &self.count_params())
            .field("optimizer", &self.optimizer())
            .field("epochs_trained", &self.epochs_done)
            .finish()
    }
}
