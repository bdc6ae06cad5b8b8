//! The optimizers `compile` takes, with Keras' names and defaults, and their state.
//!
//! On the CPU the update runs in `fashion_kernels::optim` — one non-generic pass per parameter tensor
//! that also zeroes its gradient — so a network type defined in a notebook cell updates its weights at
//! full speed. With the `cuda` feature dfdx's own optimizers do the work.

use std::marker::PhantomData;

use dfdx::prelude::*;

use crate::error::Result;
use crate::model::Dev;

use super::step::dev_err;

/// Adam with Keras' defaults: β₁ = 0.9, β₂ = 0.999, ε = 1e-7 (`keras.optimizers.Adam(learning_rate)`).
///
/// `weight_decay` is the L2 penalty as PyTorch's `Adam(weight_decay=…)` applies it: `wd·w` is added to
/// every parameter's gradient before the update. Keras' `kernel_regularizer=l2(λ)` on every layer adds
/// `λ·Σw²` to the loss, whose gradient is `2λ·w`: the same as `weight_decay: 2λ` (here biases and batch
/// norm's γ, β are decayed too, as in PyTorch). For decay that does not pass through Adam's scaling,
/// see [`AdamW`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam {
    pub learning_rate: f64,
    pub weight_decay: f64,
}

impl Default for Adam {
    /// Keras' default learning rate, 1e-3; no weight decay.
    fn default() -> Self {
        Adam { learning_rate: 1e-3, weight_decay: 0.0 }
    }
}

/// Adam with decoupled weight decay (Loshchilov and Hutter; `keras.optimizers.AdamW`,
/// `torch.optim.AdamW`): each step first shrinks every parameter by `learning_rate · weight_decay` of
/// itself, then takes Adam's step (β₁ = 0.9, β₂ = 0.999, ε = 1e-7).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    pub learning_rate: f64,
    pub weight_decay: f64,
}

impl Default for AdamW {
    /// Keras' defaults: learning rate 1e-3, weight decay 0.004.
    fn default() -> Self {
        AdamW { learning_rate: 1e-3, weight_decay: 0.004 }
    }
}

/// Stochastic gradient descent (`keras.optimizers.SGD(learning_rate, momentum)`); `momentum: 0.0` is
/// plain SGD. `weight_decay` adds `wd·w` to each gradient (PyTorch's `SGD(weight_decay=…)`, the L2
/// penalty `λ·Σw²` of Keras' `l2(λ)` with `wd = 2λ`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sgd {
    pub learning_rate: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

impl Default for Sgd {
    /// Keras' defaults: learning rate 0.01, no momentum, no weight decay.
    fn default() -> Self {
        Sgd { learning_rate: 0.01, momentum: 0.0, weight_decay: 0.0 }
    }
}

/// The optimizer chosen at `compile`: `model.compile(Adam::default())`,
/// `model.compile(AdamW { learning_rate: 1e-3, weight_decay: 1e-4 })` or
/// `model.compile(Sgd { learning_rate: 0.1, momentum: 0.9, ..Sgd::default() })`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    Adam(Adam),
    AdamW(AdamW),
    Sgd(Sgd),
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer::Adam(Adam::default())
    }
}

impl From<Adam> for Optimizer {
    fn from(a: Adam) -> Self {
        Optimizer::Adam(a)
    }
}

impl From<AdamW> for Optimizer {
    fn from(a: AdamW) -> Self {
        Optimizer::AdamW(a)
    }
}

impl From<Sgd> for Optimizer {
    fn from(s: Sgd) -> Self {
        Optimizer::Sgd(s)
    }
}

impl Optimizer {
    pub fn learning_rate(&self) -> f64 {
        match self {
            Optimizer::Adam(a) => a.learning_rate,
            Optimizer::AdamW(a) => a.learning_rate,
            Optimizer::Sgd(s) => s.learning_rate,
        }
    }

    /// The same optimizer at another learning rate (what a schedule sets each epoch).
    pub fn with_learning_rate(mut self, lr: f64) -> Optimizer {
        match &mut self {
            Optimizer::Adam(a) => a.learning_rate = lr,
            Optimizer::AdamW(a) => a.learning_rate = lr,
            Optimizer::Sgd(s) => s.learning_rate = lr,
        }
        self
    }

    /// The weight decay (0 when none).
    pub fn weight_decay(&self) -> f64 {
        match self {
            Optimizer::Adam(a) => a.weight_decay,
            Optimizer::AdamW(a) => a.weight_decay,
            Optimizer::Sgd(s) => s.weight_decay,
        }
    }

    /// An error naming the fix when the learning rate is not a positive number or the momentum is
    /// outside `[0, 1)`.
    pub fn check(&self) -> Result<()> {
        let lr = self.learning_rate();
        if !(lr.is_finite() && lr > 0.0) {
            let default = match self {
                Optimizer::Adam(_) => Adam::default().learning_rate,
                Optimizer::AdamW(_) => AdamW::default().learning_rate,
                Optimizer::Sgd(_) => Sgd::default().learning_rate,
            };
            return Err(crate::Error::Setting {
                setting: "learning_rate",
                reason: format!("must be a positive number, got {lr}; Keras' default for {} is {default}", self.name()),
            });
        }
        let wd = self.weight_decay();
        if !(wd.is_finite() && wd >= 0.0) {
            return Err(crate::Error::Setting {
                setting: "weight_decay",
                reason: format!("must be 0 or a positive number, got {wd}; 1e-4 is usual, AdamW's default is 0.004"),
            });
        }
        if let Optimizer::Sgd(Sgd { momentum, .. }) = self {
            if !(0.0..1.0).contains(momentum) {
                return Err(crate::Error::Setting {
                    setting: "momentum",
                    reason: format!("must be in [0, 1), got {momentum}; 0.9 is usual"),
                });
            }
        }
        Ok(())
    }

    /// `adam`, `adamw` or `sgd`.
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Adam(_) => "adam",
            Optimizer::AdamW(_) => "adamw",
            Optimizer::Sgd(_) => "sgd",
        }
    }
}

/// One parameter tensor's moments: Adam's first and second, SGD's velocity and nothing (empty when unused).
pub(crate) type Moments = (Vec<f32>, Vec<f32>);

/// An optimizer with its state (step count, moments) for a network `M`.
pub(crate) struct OptState<M> {
    pub config: Optimizer,
    #[cfg(not(feature = "cuda"))]
    cpu: CpuState,
    #[cfg(feature = "cuda")]
    dfdx: DfdxOpt<M>,
    _net: PhantomData<fn() -> M>,
}

impl<M: TensorCollection<f32, Dev>> OptState<M> {
    #[allow(unused_variables)]
    pub fn new(config: Optimizer, net: &M) -> Self {
        OptState {
            config,
            #[cfg(not(feature = "cuda"))]
            cpu: CpuState { config, step: 0, slots: Vec::new(), scratch: Vec::new() },
            #[cfg(feature = "cuda")]
            dfdx: DfdxOpt::new(config, net),
            _net: PhantomData,
        }
    }

    /// Sets the learning rate of the next steps (a schedule's), keeping the moments.
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.config = self.config.with_learning_rate(lr);
        #[cfg(not(feature = "cuda"))]
        {
            self.cpu.config = self.config;
        }
        #[cfg(feature = "cuda")]
        self.dfdx.set_learning_rate(lr);
    }

    /// One update of every parameter of `net` from `grads`, which are zeroed for the next batch.
    #[cfg(not(feature = "cuda"))]
    pub fn update(&mut self, net: &mut M, grads: &mut Gradients<f32, Dev>) -> Result<()> {
        struct Visit<'a> {
            state: &'a mut CpuState,
            grads: &'a mut Gradients<f32, Dev>,
            index: usize,
        }
        impl TensorVisitor<f32, Dev> for Visit<'_> {
            type Viewer = ViewTensorMut;
            type Err = CpuError;
            type E2 = f32;
            type D2 = Dev;
            fn visit<S: Shape>(
                &mut self,
                opts: TensorOptions<S, f32, Dev>,
                t: &mut Tensor<S, f32, Dev>,
            ) -> Result<Option<Tensor<S, f32, Dev>>, CpuError> {
                if !opts.do_gradient_update {
                    return Ok(None); // running statistics: set by the forward pass, not trained
                }
                let scratch = self.state.read(t.shape().num_elements());
                t.copy_into(scratch);
                self.state.step(self.index, self.grads.get_or_alloc_mut(t)?);
                t.copy_from(&self.state.scratch);
                self.index += 1;
                Ok(None)
            }
            fn visit_scalar<N: num_traits::NumCast>(
                &mut self,
                _: ScalarOptions<N>,
                _: &mut N,
            ) -> Result<Option<N>, CpuError> {
                Ok(None)
            }
        }
        self.cpu.step += 1;
        let mut visit = Visit { state: &mut self.cpu, grads, index: 0 };
        M::iter_tensors(&mut RecursiveWalker { m: net, f: &mut visit }).map_err(dev_err)?;
        Ok(())
    }

    /// The state a checkpoint keeps: the step count and each parameter tensor's moments (empty where the
    /// optimizer keeps none, e.g. SGD without momentum).
    #[cfg(not(feature = "cuda"))]
    pub fn state(&self) -> (u32, &[Moments]) {
        (self.cpu.step, &self.cpu.slots)
    }

    /// Puts back what [`state`](Self::state) returned.
    #[cfg(not(feature = "cuda"))]
    pub fn restore(&mut self, step: u32, slots: Vec<Moments>) {
        self.cpu.step = step;
        self.cpu.slots = slots;
    }

    /// One update of every parameter of `net` from `grads`, which are zeroed for the next batch.
    #[cfg(feature = "cuda")]
    pub fn update(&mut self, net: &mut M, grads: &mut Gradients<f32, Dev>) -> Result<()> {
        self.dfdx.update(net, grads)
    }
}

/// The CPU optimizer's state: one slot of moments per parameter tensor, in the network's order.
#[cfg(not(feature = "cuda"))]
struct CpuState {
    config: Optimizer,
    step: u32,
    slots: Vec<Moments>,
    /// The parameter being updated (dfdx lends a tensor's values only by copy).
    scratch: Vec<f32>,
}

#[cfg(not(feature = "cuda"))]
impl CpuState {
    fn read(&mut self, len: usize) -> &mut [f32] {
        self.scratch.resize(len, 0.0);
        &mut self.scratch
    }

    /// Updates `self.scratch` (parameter tensor `index`) from its gradient `g`, and zeroes `g`.
    fn step(&mut self, index: usize, g: &mut [f32]) {
        use fashion_kernels::optim;
        let len = self.scratch.len();
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, Default::default);
        }
        let (m, v) = &mut self.slots[index];
        let adam = |t: u32, lr: f64| optim::AdamStep { t, lr, betas: (0.9, 0.999), eps: 1e-7 };
        match self.config {
            Optimizer::Adam(Adam { learning_rate, weight_decay }) => {
                m.resize(len, 0.0);
                v.resize(len, 0.0);
                optim::add_scaled(g, &self.scratch, weight_decay as f32);
                optim::adam(&adam(self.step, learning_rate), &mut self.scratch, g, m, v);
            }
            Optimizer::AdamW(AdamW { learning_rate, weight_decay }) => {
                m.resize(len, 0.0);
                v.resize(len, 0.0);
                optim::scale(&mut self.scratch, (1.0 - learning_rate * weight_decay) as f32);
                optim::adam(&adam(self.step, learning_rate), &mut self.scratch, g, m, v);
            }
            Optimizer::Sgd(Sgd { learning_rate, momentum, weight_decay }) => {
                optim::add_scaled(g, &self.scratch, weight_decay as f32);
                let velocity = (momentum != 0.0).then(|| {
                    m.resize(len, 0.0);
                    &mut m[..]
                });
                optim::sgd(learning_rate, momentum, &mut self.scratch, g, velocity);
            }
        }
    }
}

#[cfg(feature = "cuda")]
enum DfdxOpt<M> {
    Adam(dfdx::optim::Adam<M, f32, Dev>),
    Sgd(dfdx::optim::Sgd<M, f32, Dev>),
}

#[cfg(feature = "cuda")]
impl<M> DfdxOpt<M> {
    fn set_learning_rate(&mut self, lr: f64) {
        match self {
            DfdxOpt::Adam(o) => o.cfg.lr = lr,
            DfdxOpt::Sgd(o) => o.cfg.lr = lr,
        }
    }
}

#[cfg(feature = "cuda")]
impl<M: TensorCollection<f32, Dev>> DfdxOpt<M> {
    fn new(config: Optimizer, net: &M) -> Self {
        match config {
            Optimizer::Adam(Adam { learning_rate, weight_decay }) => DfdxOpt::Adam(dfdx::optim::Adam::new(
                net,
                AdamConfig {
                    lr: learning_rate,
                    betas: [0.9, 0.999],
                    eps: 1e-7,
                    weight_decay: (weight_decay != 0.0).then_some(WeightDecay::L2(weight_decay)),
                },
            )),
            Optimizer::AdamW(AdamW { learning_rate, weight_decay }) => DfdxOpt::Adam(dfdx::optim::Adam::new(
                net,
                AdamConfig {
                    lr: learning_rate,
                    betas: [0.9, 0.999],
                    eps: 1e-7,
                    weight_decay: (weight_decay != 0.0).then_some(WeightDecay::Decoupled(weight_decay)),
                },
            )),
            Optimizer::Sgd(Sgd { learning_rate, momentum, weight_decay }) => DfdxOpt::Sgd(dfdx::optim::Sgd::new(
                net,
                SgdConfig {
                    lr: learning_rate,
                    momentum: (momentum != 0.0).then_some(Momentum::Classic(momentum)),
                    weight_decay: (weight_decay != 0.0).then_some(WeightDecay::L2(weight_decay)),
                },
            )),
        }
    }

    fn update(&mut self, net: &mut M, grads: &mut Gradients<f32, Dev>) -> Result<()> {
        use dfdx::optim::Optimizer as _;
        match self {
            DfdxOpt::Adam(o) => o.update(net, grads),
            DfdxOpt::Sgd(o) => o.update(net, grads),
        }
        .map_err(dev_err)?;
        net.try_zero_grads(grads).map_err(dev_err)
    }
}
