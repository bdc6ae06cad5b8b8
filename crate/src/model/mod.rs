//! Step 4 of the guide — **build the model** — as dfdx types, so the shapes are in the type.
//!
//! ```text
//! Keras                                         this crate
//! keras.Sequential([                            type MlpArch = (
//!     layers.Flatten(input_shape=(28, 28)),         Flatten<784>,
//!     layers.Dense(128, activation='relu'),         Linear<784, 128>, ReLU,
//!     layers.Dense(10)])                            Linear<128, 10>);
//! ```
//!
//! A layer that does not fit its neighbour (say `Linear<784, 128>` followed by `Linear<64, 10>`) is a
//! *compile* error, not a run-time one. The four architectures are chosen by one enum, [`Arch`].

#[cfg(not(feature = "cuda"))]
mod kernels;
pub mod layers;

use std::fmt;
use std::str::FromStr;

pub use dfdx::nn::builders::{DropoutOneIn, ReLU};
use dfdx::prelude::*;
pub use layers::builders::{AddChannel, Conv2d, ConvReluPool, Flatten, Linear, MaxPool2d};

use crate::error::Error;

/// The compute device: the CPU, or an NVIDIA GPU with the `cuda` feature.
pub type Dev = AutoDevice;

/// A batch of normalized images, `(batch, 28, 28)`, as every model takes it.
pub type Images<T = NoneTape> = Tensor<(usize, Const<28>, Const<28>), f32, Dev, T>;
/// The models' output: one logit per class, `(batch, 10)`.
pub type Logits<T = NoneTape> = Tensor<(usize, Const<10>), f32, Dev, T>;
/// The built (parameter-holding) model of an architecture.
pub type Built<A> = <A as BuildOnDevice<Dev, f32>>::Built;

/// Linear classifier (softmax regression): 784 → 10. 7,850 parameters.
pub type LinearArch = (Flatten<784>, Linear<784, 10>);

/// The Keras guide's model: Flatten → Dense 128 + ReLU → Dense 10. 101,770 parameters.
pub type MlpArch = (Flatten<784>, Linear<784, 128>, ReLU, Linear<128, 10>);

/// "Go deeper": three hidden layers, 512 → 256 → 128, each with ReLU. 567,434 parameters.
pub type DeepMlpArch = (
    Flatten<784>,
    (Linear<784, 512>, ReLU),
    (Linear<512, 256>, ReLU),
    (Linear<256, 128>, ReLU),
    Linear<128, 10>,
);

/// Two convolution blocks (3×3 conv with "same" padding + ReLU + 2×2 max-pool, 32 then 64 filters)
/// → Dense 128 (with dropout 0.5 while training) → Dense 10.
/// 28×28×1 → 28×28×32 → 14×14×32 → 14×14×64 → 7×7×64 = 3136 → 128 → 10. 421,642 parameters.
///
/// `ConvReluPool<IN, OUT, 3, 1, 2>` is `(Conv2d<IN, OUT, 3, 1>, ReLU, MaxPool2d<2>)` computed in one pass
/// by its own CPU kernel: same parameters, same results (tested), a fraction of the memory traffic.
pub type CnnArch = (
    AddChannel,
    ConvReluPool<1, 32, 3, 1, 2>,
    ConvReluPool<32, 64, 3, 1, 2>,
    Flatten<3136>,
    (Linear<3136, 128>, ReLU, DropoutOneIn<2>),
    Linear<128, 10>,
);

/// Which architecture: the one switch between the four models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    Linear,
    Mlp,
    DeepMlp,
    Cnn,
}

impl Arch {
    pub const ALL: [Arch; 4] = [Arch::Linear, Arch::Mlp, Arch::DeepMlp, Arch::Cnn];

    /// Short name used on the command line and in files (`linear`, `mlp`, `deep`, `cnn`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Linear => "linear",
            Arch::Mlp => "mlp",
            Arch::DeepMlp => "deep",
            Arch::Cnn => "cnn",
        }
    }

    /// The dfdx type of the architecture, as written in this module.
    pub fn type_name(self) -> &'static str {
        match self {
            Arch::Linear => "(Flatten<784>, Linear<784, 10>)",
            Arch::Mlp => "(Flatten<784>, Linear<784, 128>, ReLU, Linear<128, 10>)",
            Arch::DeepMlp => {
                "(Flatten<784>, (Linear<784, 512>, ReLU), (Linear<512, 256>, ReLU), (Linear<256, 128>, ReLU), Linear<128, 10>)"
            }
            Arch::Cnn => {
                "(AddChannel, ConvReluPool<1, 32, 3, 1, 2>, ConvReluPool<32, 64, 3, 1, 2>, Flatten<3136>, (Linear<3136, 128>, ReLU, DropoutOneIn<2>), Linear<128, 10>)"
            }
        }
    }

    /// Layers in Keras' `summary()` terms: name, output shape (`None` = batch), parameter count.
    pub fn layers(self) -> Vec<LayerInfo> {
        let dense = |name: &str, i: usize, o: usize| LayerInfo::new(name, "Dense", vec![o], i * o + o);
        let relu = |name: &str, shape: Vec<usize>| LayerInfo::new(name, "ReLU", shape, 0);
        let flatten = |n: usize| LayerInfo::new("flatten", "Flatten", vec![n], 0);
        match self {
            Arch::Linear => vec![flatten(784), dense("dense", 784, 10)],
            Arch::Mlp => vec![flatten(784), dense("dense", 784, 128), relu("re_lu", vec![128]), dense("dense_1", 128, 10)],
            Arch::DeepMlp => vec![
                flatten(784),
                dense("dense", 784, 512),
                relu("re_lu", vec![512]),
                dense("dense_1", 512, 256),
                relu("re_lu_1", vec![256]),
                dense("dense_2", 256, 128),
                relu("re_lu_2", vec![128]),
                dense("dense_3", 128, 10),
            ],
            Arch::Cnn => vec![
                LayerInfo::new("add_channel", "AddChannel", vec![28, 28, 1], 0),
                LayerInfo::new("conv2d", "Conv2D", vec![28, 28, 32], 3 * 3 * 32 + 32),
                relu("re_lu", vec![28, 28, 32]),
                LayerInfo::new("max_pooling2d", "MaxPooling2D", vec![14, 14, 32], 0),
                LayerInfo::new("conv2d_1", "Conv2D", vec![14, 14, 64], 3 * 3 * 32 * 64 + 64),
                relu("re_lu_1", vec![14, 14, 64]),
                LayerInfo::new("max_pooling2d_1", "MaxPooling2D", vec![7, 7, 64], 0),
                flatten(3136),
                dense("dense", 3136, 128),
                relu("re_lu_2", vec![128]),
                LayerInfo::new("dropout", "Dropout", vec![128], 0),
                dense("dense_1", 128, 10),
            ],
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "linear" => Ok(Arch::Linear),
            "mlp" | "dense" => Ok(Arch::Mlp),
            "deep" | "deepmlp" | "deep-mlp" | "dnn" => Ok(Arch::DeepMlp),
            "cnn" | "conv" => Ok(Arch::Cnn),
            other => Err(Error::InvalidArgument(format!(
                "unknown model `{other}`; choose one of linear, mlp, deep, cnn"
            ))),
        }
    }
}

/// One row of a model summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    pub name: String,
    pub kind: &'static str,
    /// Output shape without the batch dimension.
    pub output: Vec<usize>,
    pub params: usize,
}

impl LayerInfo {
    fn new(name: &str, kind: &'static str, output: Vec<usize>, params: usize) -> Self {
        LayerInfo {
            name: name.to_string(),
            kind,
            output,
            params,
        }
    }

    /// Keras' notation, e.g. `(None, 13, 13, 32)`.
    pub fn output_shape(&self) -> String {
        let dims: Vec<String> = self.output.iter().map(|d| d.to_string()).collect();
        format!("(None, {})", dims.join(", "))
    }
}

/// Keras' `model.summary()`: the layers, their output shapes and parameter counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub arch: Arch,
    pub layers: Vec<LayerInfo>,
    /// Counted from the built model's tensors (not from the table).
    pub total_params: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = "─".repeat(66);
        writeln!(f, "Model: \"{}\"", self.arch.name())?;
        writeln!(f, "{line}")?;
        writeln!(f, "{:<34}{:<22}{:>10}", "Layer (type)", "Output Shape", "Param #")?;
        writeln!(f, "{}", "═".repeat(66))?;
        for l in &self.layers {
            writeln!(
                f,
                "{:<34}{:<22}{:>10}",
                format!("{} ({})", l.name, l.kind),
                l.output_shape(),
                group_thousands(l.params)
            )?;
        }
        writeln!(f, "{}", "═".repeat(66))?;
        writeln!(f, "Total params: {}", group_thousands(self.total_params))?;
        writeln!(f, "Trainable params: {}", group_thousands(self.total_params))?;
        write!(f, "Non-trainable params: 0")
    }
}

impl Summary {
    /// Shows the summary as text when it ends a notebook cell.
    pub fn evcxr_display(&self) {
        println!("EVCXR_BEGIN_CONTENT text/plain\n{self}\nEVCXR_END_CONTENT");
    }
}

/// `101770` → `101,770`.
pub fn group_thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Re-initialises a model as Keras does: weights Glorot-uniform in `±sqrt(6 / (fan_in + fan_out))`,
/// biases zero. Dense weights are stored `(out, in)`; convolution kernels `(K, K, in, out)`, whose fans
/// are `K·K·in` and `K·K·out`. Draws from the device's seeded generator, so the seed still decides.
pub fn glorot_init<M: TensorCollection<f32, Dev>>(model: &mut M) -> Result<(), <Dev as HasErr>::Err> {
    struct Glorot;
    impl TensorVisitor<f32, Dev> for Glorot {
        type Viewer = ViewTensorMut;
        type Err = <Dev as HasErr>::Err;
        type E2 = f32;
        type D2 = Dev;
        fn visit<S: Shape>(
            &mut self,
            _: TensorOptions<S, f32, Dev>,
            t: &mut Tensor<S, f32, Dev>,
        ) -> Result<Option<Tensor<S, f32, Dev>>, Self::Err> {
            let d: Vec<usize> = t.shape().concrete().into_iter().collect();
            let Some((fan_in, fan_out)) = layers::glorot_fans(&d) else {
                t.try_fill_with_zeros()?;
                return Ok(None);
            };
            let bound = (6.0 / (fan_in + fan_out) as f32).sqrt();
            t.try_fill_with_distr(rand_distr::Uniform::new(-bound, bound))?;
            Ok(None)
        }
        fn visit_scalar<N: num_traits::NumCast>(&mut self, _: ScalarOptions<N>, _: &mut N) -> Result<Option<N>, Self::Err> {
            Ok(None)
        }
    }
    M::iter_tensors(&mut RecursiveWalker { m: model, f: &mut Glorot })?;
    Ok(())
}

/// A parameter tensor as safetensors stores it, plus the id dfdx gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub id: Option<usize>,
}

/// The parameter tensors of a model, in order.
pub(crate) fn tensor_infos<M: TensorCollection<f32, Dev>>(model: &M) -> Vec<TensorInfo> {
    struct Infos(Vec<TensorInfo>);
    impl TensorVisitor<f32, Dev> for Infos {
        type Viewer = (ViewTensorRef, ViewTensorName);
        type Err = std::convert::Infallible;
        type E2 = f32;
        type D2 = Dev;
        fn visit<S: Shape>(
            &mut self,
            _: TensorOptions<S, f32, Dev>,
            (t, name): (&Tensor<S, f32, Dev>, String),
        ) -> Result<Option<Tensor<S, f32, Dev>>, Self::Err> {
            self.0.push(TensorInfo {
                name,
                shape: t.shape().concrete().into_iter().collect(),
                id: tensor_id(t),
            });
            Ok(None)
        }
        fn visit_scalar<N: num_traits::NumCast>(
            &mut self,
            _: ScalarOptions<N>,
            _: (&N, String),
        ) -> Result<Option<N>, Self::Err> {
            Ok(None)
        }
    }
    let mut infos = Infos(Vec::new());
    let _ = M::iter_tensors(&mut RecursiveWalker {
        m: (model, String::new()),
        f: &mut infos,
    });
    infos.0
}

/// The id dfdx gave a tensor (gradients and optimizer state are keyed by it). dfdx 0.13 keeps ids
/// private; its derived `Debug` starts with `Tensor { id: UniqueId(N), …`, so read that and stop before
/// the data is formatted.
pub(crate) fn tensor_id<S: Shape, T: fmt::Debug>(t: &Tensor<S, f32, Dev, T>) -> Option<usize> {
    struct Head(String);
    impl fmt::Write for Head {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0.push_str(s);
            if self.0.len() > 48 {
                Err(fmt::Error)
            } else {
                Ok(())
            }
        }
    }
    let mut head = Head(String::new());
    let _ = fmt::write(&mut head, format_args!("{t:?}"));
    let rest = head.0.split("UniqueId(").nth(1)?;
    rest[..rest.find(')')?].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count<A: BuildOnDevice<Dev, f32>>() -> usize
    where
        Built<A>: TensorCollection<f32, Dev>,
    {
        let dev = Dev::default();
        dev.build_module::<A, f32>().num_trainable_params()
    }

    #[test]
    fn parameter_counts_match_keras_and_the_summary_table() {
        assert_eq!(count::<LinearArch>(), 7_850);
        assert_eq!(count::<MlpArch>(), 101_770);
        assert_eq!(count::<DeepMlpArch>(), 567_434);
        assert_eq!(count::<CnnArch>(), 421_642);
        for (arch, n) in [
            (Arch::Linear, count::<LinearArch>()),
            (Arch::Mlp, count::<MlpArch>()),
            (Arch::DeepMlp, count::<DeepMlpArch>()),
            (Arch::Cnn, count::<CnnArch>()),
        ] {
            assert_eq!(arch.layers().iter().map(|l| l.params).sum::<usize>(), n, "{arch}");
        }
    }

    #[test]
    fn shapes_through_each_block() {
        let dev = Dev::seed_from_u64(0);
        let x: Images = dev.sample_normal_like(&(2, Const, Const));
        let cnn = dev.build_module::<CnnArch, f32>();
        let a = cnn.0.forward(x.clone());
        assert_eq!(a.shape().concrete(), [2, 28, 28, 1]);
        let b = cnn.1.forward(a);
        assert_eq!(b.shape().concrete(), [2, 14, 14, 32]);
        let c = cnn.2.forward(b);
        assert_eq!(c.shape().concrete(), [2, 7, 7, 64]);
        let d = cnn.3.forward(c);
        assert_eq!(d.shape().concrete(), [2, 3136]);
        let e: Logits = cnn.5.forward(cnn.4.forward(d));
        assert_eq!(e.shape().concrete(), [2, 10]);
        // The table's shapes agree with what the blocks produce.
        let table: Vec<Vec<usize>> = Arch::Cnn.layers().into_iter().map(|l| l.output).collect();
        assert_eq!(table[0], vec![28, 28, 1]);
        assert_eq!(table[3], vec![14, 14, 32]);
        assert_eq!(table[6], vec![7, 7, 64]);
        for arch_out in [
            dev.build_module::<LinearArch, f32>().forward(x.clone()),
            dev.build_module::<MlpArch, f32>().forward(x.clone()),
            dev.build_module::<DeepMlpArch, f32>().forward(x.clone()),
        ] {
            assert_eq!(arch_out.shape().concrete(), [2, 10]);
        }
    }

    #[test]
    fn glorot_init_bounds_and_zero_biases() {
        let dev = Dev::seed_from_u64(3);
        let mut cnn = dev.build_module::<CnnArch, f32>();
        glorot_init(&mut cnn).unwrap();
        let conv2 = &cnn.2;
        let b = (6.0f32 / (9.0 * 32.0 + 9.0 * 64.0)).sqrt();
        let w = conv2.weight.as_vec();
        assert!(w.iter().all(|v| v.abs() <= b));
        assert!(w.iter().any(|v| v.abs() > 0.9 * b), "uses the whole range");
        assert!(conv2.bias.as_vec().iter().all(|&v| v == 0.0));
        let dense = &cnn.4 .0;
        let b = (6.0f32 / (3136.0 + 128.0)).sqrt();
        assert!(dense.weight.as_vec().iter().all(|v| v.abs() <= b));
    }

    #[test]
    fn arch_names_round_trip() {
        for a in Arch::ALL {
            assert_eq!(a.name().parse::<Arch>().unwrap(), a);
        }
        assert!("resnet".parse::<Arch>().is_err());
        assert_eq!(group_thousands(101770), "101,770");
        assert_eq!(group_thousands(999), "999");
    }

    #[test]
    fn tensor_names_are_the_safetensors_keys() {
        let dev = Dev::default();
        let infos = tensor_infos(&dev.build_module::<MlpArch, f32>());
        assert!(infos.windows(2).all(|w| w[0].id < w[1].id), "ids read and increasing");
        let names: Vec<(String, Vec<usize>)> = infos.into_iter().map(|i| (i.name, i.shape)).collect();
        assert_eq!(
            names,
            vec![
                ("1.weight".to_string(), vec![128, 784]),
                ("1.bias".to_string(), vec![128]),
                ("3.weight".to_string(), vec![10, 128]),
                ("3.bias".to_string(), vec![10]),
            ]
        );
    }
}
