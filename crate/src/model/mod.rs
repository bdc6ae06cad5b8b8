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
//! Any tuple of the layers in [`layers`] (nested tuples too, up to six elements each) that takes
//! `(batch, 28, 28)` images and gives `(batch, 10)` logits is a network: [`Model<N>`](crate::train::Model)
//! trains it. A layer that does not fit its neighbour (say `Linear<784, 128>` followed by
//! `Linear<64, 10>`) is a *compile* error, not a run-time one. The networks of the guide are the
//! type aliases below; [`Arch`] names them for the command line.

mod init;
pub mod layers;
#[cfg(not(feature = "cuda"))]
pub(crate) mod ops;
mod summary;

use std::fmt;
use std::str::FromStr;

use dfdx::prelude::*;
pub(crate) use init::initialize;
pub use init::Initializer;
pub use layers::builders::{
    AddChannel, AvgPool2d, BatchNorm, Conv2d, ConvReluPool, Dropout, DropoutOneIn, Elu, Flatten, Gelu, GlobalAvgPool,
    LeakyReLU, Linear, MaxPool2d, ReLU, Residual, ResidualProjection, Sigmoid, Tanh,
};
pub use summary::{group_thousands, Layer, LayerInfo, Rows, Summary};

use crate::error::Error;

/// The compute device: the CPU, or an NVIDIA GPU with the `cuda` feature.
pub type Dev = AutoDevice;

/// A batch of normalized images, `(batch, 28, 28)`, as every model takes it.
pub type Images<T = NoneTape> = Tensor<(usize, Const<28>, Const<28>), f32, Dev, T>;
/// The models' output: one logit per class, `(batch, 10)`.
pub type Logits<T = NoneTape> = Tensor<(usize, Const<10>), f32, Dev, T>;

/// Linear classifier (softmax regression): 784 → 10. 7,850 parameters.
pub type LinearArch = (Flatten<784>, Linear<784, 10>);

/// The Keras guide's model: Flatten → Dense 128 + ReLU → Dense 10. 101,770 parameters.
pub type MlpArch = (Flatten<784>, Linear<784, 128>, ReLU, Linear<128, 10>);

/// "Maybe the model needs to be bigger": the guide's MLP with twice the hidden units. 203,530 parameters.
pub type WideArch = (Flatten<784>, Linear<784, 256>, ReLU, Linear<256, 10>);

/// "Go deeper": three hidden layers, 512 → 256 → 128, each with ReLU. 567,434 parameters.
pub type DeepMlpArch =
    (Flatten<784>, (Linear<784, 512>, ReLU), (Linear<512, 256>, ReLU), (Linear<256, 128>, ReLU), Linear<128, 10>);

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

/// What a network type must be for [`Model`](crate::train::Model) to build and train it: a builder whose
/// built module maps [`Images`] to [`Logits`] (with and without a gradient tape), holds `f32` tensors on
/// [`Dev`], and describes its layers ([`Layer`]). Every tuple of this crate's layers that fits together
/// is one; a shape mistake inside it is a compile error.
pub trait Network: BuildOnDevice<Dev, f32, Built = Self::Net> + 'static {
    /// The built module (weights included).
    type Net: Layer
        + TensorCollection<f32, Dev, To<f32, Dev> = Self::Net>
        + Module<Images, Output = Logits, Error = <Dev as HasErr>::Err>
        + ModuleMut<Images<OwnedTape<f32, Dev>>, Output = Logits<OwnedTape<f32, Dev>>, Error = <Dev as HasErr>::Err>
        + Clone
        + Threads;
}

impl<N, M> Network for N
where
    N: BuildOnDevice<Dev, f32, Built = M> + 'static,
    M: Layer
        + TensorCollection<f32, Dev, To<f32, Dev> = M>
        + Module<Images, Output = Logits, Error = <Dev as HasErr>::Err>
        + ModuleMut<Images<OwnedTape<f32, Dev>>, Output = Logits<OwnedTape<f32, Dev>>, Error = <Dev as HasErr>::Err>
        + Clone
        + Threads,
{
    type Net = M;
}

/// `Send + Sync` on the CPU, where inference runs its batches on all cores; nothing with the `cuda`
/// feature (dfdx's CUDA device is neither, and batches run one after the other on the GPU).
#[cfg(not(feature = "cuda"))]
pub trait Threads: Send + Sync {}
#[cfg(not(feature = "cuda"))]
impl<T: Send + Sync> Threads for T {}
/// `Send + Sync` on the CPU; nothing with the `cuda` feature.
#[cfg(feature = "cuda")]
pub trait Threads {}
#[cfg(feature = "cuda")]
impl<T> Threads for T {}

/// Keras' `summary()` of the built network `net` of type `N`, or [`Error::Network`] when its layers do
/// not fit `(28, 28)` images.
pub fn summarize<N: Network>(net: &N::Net, name: &str) -> Result<Summary, Error> {
    let mut rows = Rows::default();
    net.describe(&[28, 28], &mut rows).map_err(|reason| Error::Network { network: short_type_name::<N>(), reason })?;
    Ok(Summary {
        name: name.to_string(),
        type_name: short_type_name::<N>(),
        layers: rows.rows,
        total_params: net.num_trainable_params(),
        non_trainable_params: count_values(net) - net.num_trainable_params(),
    })
}

/// The readable form of a type's name: `fashion::model::layers::builders::Linear<784, 128>` →
/// `Linear<784, 128>`.
pub fn short_type_name<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    let mut out = String::with_capacity(full.len());
    let mut word = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            out.push_str(word.rsplit("::").next().unwrap_or(""));
            word.clear();
            out.push(c);
        }
    }
    out.push_str(word.rsplit("::").next().unwrap_or(""));
    out
}

/// The guide's five networks by name, for the command line and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    Linear,
    Mlp,
    Wide,
    DeepMlp,
    Cnn,
}

/// Something to do with a network type chosen at run time: [`Arch::run`] calls `run::<N>()` with the
/// type the name stands for.
pub trait WithNetwork {
    type Output;
    fn run<N: Network>(self, arch: Arch) -> Self::Output;
}

impl Arch {
    pub const ALL: [Arch; 5] = [Arch::Linear, Arch::Mlp, Arch::Wide, Arch::DeepMlp, Arch::Cnn];

    /// Short name used on the command line and in files (`linear`, `mlp`, `wide`, `deep`, `cnn`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Linear => "linear",
            Arch::Mlp => "mlp",
            Arch::Wide => "wide",
            Arch::DeepMlp => "deep",
            Arch::Cnn => "cnn",
        }
    }

    /// Runs `job` with the network type of this name.
    pub fn run<W: WithNetwork>(self, job: W) -> W::Output {
        match self {
            Arch::Linear => job.run::<LinearArch>(self),
            Arch::Mlp => job.run::<MlpArch>(self),
            Arch::Wide => job.run::<WideArch>(self),
            Arch::DeepMlp => job.run::<DeepMlpArch>(self),
            Arch::Cnn => job.run::<CnnArch>(self),
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
            "wide" => Ok(Arch::Wide),
            "deep" | "deepmlp" | "deep-mlp" | "dnn" => Ok(Arch::DeepMlp),
            "cnn" | "conv" => Ok(Arch::Cnn),
            other => Err(Error::InvalidArgument(format!(
                "unknown model `{other}`; choose one of linear, mlp, wide, deep, cnn"
            ))),
        }
    }
}

/// The values of every tensor of a model, trained or not.
pub(crate) fn count_values<M: TensorCollection<f32, Dev>>(model: &M) -> usize {
    tensor_infos(model).iter().map(|t| t.shape.iter().product::<usize>()).sum()
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
            self.0.push(TensorInfo { name, shape: t.shape().concrete().into_iter().collect(), id: tensor_id(t) });
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
    let _ = M::iter_tensors(&mut RecursiveWalker { m: (model, String::new()), f: &mut infos });
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

    fn summary<N: Network>(name: &str) -> Summary {
        summarize::<N>(&Dev::seed_from_u64(0).build_module::<N, f32>(), name).unwrap()
    }

    /// A network no one wrote into the crate, as a notebook cell would.
    type Cell = (Flatten<784>, (Linear<784, 64>, ReLU, DropoutOneIn<5>), Linear<64, 32>, ReLU, Linear<32, 10>);

    fn rows<N: Network>() -> Vec<(String, &'static str, Vec<usize>, usize)> {
        let s = summary::<N>("x");
        let total: usize = s.layers.iter().map(|l| l.params).sum();
        assert_eq!(total, s.total_params + s.non_trainable_params, "rows add up to the tensors' count");
        s.layers.into_iter().map(|l| (l.name, l.kind, l.output, l.params)).collect()
    }

    #[test]
    fn parameter_counts_match_keras() {
        for (n, want) in [
            (summary::<LinearArch>("x").total_params, 7_850),
            (summary::<MlpArch>("x").total_params, 101_770),
            (summary::<DeepMlpArch>("x").total_params, 567_434),
            (summary::<CnnArch>("x").total_params, 421_642),
            (summary::<Cell>("x").total_params, 784 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10),
        ] {
            assert_eq!(n, want);
        }
    }

    #[test]
    fn summary_rows_come_from_the_layers() {
        let s = |name: &str, kind, out: &[usize], p| (name.to_string(), kind, out.to_vec(), p);
        assert_eq!(
            rows::<MlpArch>(),
            vec![
                s("flatten", "Flatten", &[784], 0),
                s("dense", "Dense", &[128], 100_480),
                s("re_lu", "ReLU", &[128], 0),
                s("dense_1", "Dense", &[10], 1_290)
            ]
        );
        let cnn = rows::<CnnArch>();
        assert_eq!(cnn.len(), 12);
        assert_eq!(cnn[1], s("conv2d", "Conv2D", &[28, 28, 32], 320));
        assert_eq!(cnn[3], s("max_pooling2d", "MaxPooling2D", &[14, 14, 32], 0));
        assert_eq!(cnn[4], s("conv2d_1", "Conv2D", &[14, 14, 64], 18_496));
        assert_eq!(cnn[7], s("flatten", "Flatten", &[3136], 0));
        assert_eq!(cnn[10], s("dropout", "Dropout", &[128], 0));
        let cell = rows::<Cell>();
        assert_eq!(
            cell.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
            ["flatten", "dense", "re_lu", "dropout", "dense_1", "re_lu_1", "dense_2"]
        );
        let summary = summary::<Cell>("cell").to_string();
        assert!(summary.starts_with("Model: \"cell\"\nType: (Flatten<784>, (Linear<784, 64>, ReLU, DropoutOneIn<5>), Linear<64, 32>, ReLU, Linear<32, 10>)"), "{summary}");
        assert!(summary.contains("Total params: 52,650"), "{summary}");
    }

    /// The next chapters' networks: d2l.ai's LeNet (sigmoid, average pooling; 61,706 parameters as
    /// d2l counts them), a batch-norm CNN (Keras counts γ, β and both running statistics) and a small
    /// ResNet with a projection.
    #[test]
    fn chapter_networks_summarise_as_keras_does() {
        type LeNet = (
            AddChannel,
            (Conv2d<1, 6, 5, 2>, Sigmoid, AvgPool2d<2>),
            (Conv2d<6, 16, 5>, Sigmoid, AvgPool2d<2>),
            Flatten<400>,
            (Linear<400, 120>, Sigmoid, Linear<120, 84>, Sigmoid),
            Linear<84, 10>,
        );
        let s = summary::<LeNet>("lenet");
        assert_eq!((s.total_params, s.non_trainable_params), (61_706, 0));
        assert_eq!(s.layers[3].output, [14, 14, 6]);
        assert_eq!(s.layers[3].kind, "AveragePooling2D");
        type BnCnn = (
            AddChannel,
            (Conv2d<1, 32, 3, 1>, BatchNorm<32>, ReLU, MaxPool2d<2>),
            Flatten<6272>,
            (Linear<6272, 64>, BatchNorm<64>, ReLU, Dropout<20>),
            Linear<64, 10>,
        );
        let s = summary::<BnCnn>("bn");
        assert_eq!(s.non_trainable_params, 2 * 32 + 2 * 64);
        assert_eq!(s.layers[2].params, 4 * 32, "Keras' BatchNormalization row");
        let text = s.to_string();
        assert!(text.contains("Non-trainable params: 192"), "{text}");
        type Block<const C: usize> =
            Residual<(Conv2d<C, C, 3, 1>, BatchNorm<C>, ReLU, Conv2d<C, C, 3, 1>, BatchNorm<C>)>;
        type Down<const I: usize, const O: usize> = ResidualProjection<
            (Conv2d<I, O, 3, 1, 2>, BatchNorm<O>, ReLU, Conv2d<O, O, 3, 1>, BatchNorm<O>),
            (Conv2d<I, O, 1, 0, 2>, BatchNorm<O>),
        >;
        type ResNet = (
            AddChannel,
            (Conv2d<1, 16, 3, 1>, BatchNorm<16>, ReLU),
            (Block<16>, ReLU, Down<16, 32>, ReLU),
            GlobalAvgPool,
            Linear<32, 10>,
        );
        let s = summary::<ResNet>("resnet");
        let kinds: Vec<&str> = s.layers.iter().map(|l| l.kind).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "Add").count(), 2);
        assert_eq!(s.layers.last().unwrap().output, [10]);
        let gap = s.layers.iter().find(|l| l.kind == "GlobalAveragePooling2D").unwrap();
        assert_eq!(gap.output, [32]);
        let text = s.to_string();
        let columns: Vec<usize> =
            text.lines().filter_map(|l| l.find("(None").map(|i| l[..i].chars().count())).collect();
        assert!(columns.len() > 20 && columns.iter().all(|&c| c == columns[0]), "shapes in one column:\n{text}");
        // A block that changes the shape without a projection is refused, naming the fix.
        type Wrong = (AddChannel, Conv2d<1, 8, 3, 1>, Residual<Conv2d<8, 8, 3>>, Flatten<5408>, Linear<5408, 10>);
        let e = summarize::<Wrong>(&Dev::default().build_module::<Wrong, f32>(), "x").unwrap_err().to_string();
        assert!(e.contains("ResidualProjection"), "{e}");
        type Lost = (Flatten<784>, Linear<784, 10>, Dropout<100>);
        let e = summarize::<Lost>(&Dev::default().build_module::<Lost, f32>(), "x").unwrap_err().to_string();
        assert!(e.contains("Dropout<20>"), "{e}");
    }

    /// `Flatten<N>` with the wrong `N` compiles (the compiler cannot multiply the shape) but is refused
    /// when the model is built (`Model::new` calls this), naming the right `N`.
    #[test]
    fn a_wrong_flatten_is_an_error_naming_the_fix() {
        type Wrong = (Flatten<100>, Linear<100, 10>);
        let e = summarize::<Wrong>(&Dev::default().build_module::<Wrong, f32>(), "x").unwrap_err().to_string();
        assert!(e.contains("Flatten<784>") && e.contains("(Flatten<100>, Linear<100, 10>)"), "{e}");
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
        for out in [
            dev.build_module::<LinearArch, f32>().forward(x.clone()),
            dev.build_module::<Cell, f32>().forward(x.clone()),
        ] {
            assert_eq!(out.shape().concrete(), [2, 10]);
        }
    }

    /// Keras' initialisation, drawn once when the layers are built.
    #[test]
    fn keras_initialisation_bounds_and_zero_biases() {
        let cnn = Dev::seed_from_u64(3).build_module::<CnnArch, f32>();
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
    fn arch_names_round_trip_and_type_names_read_well() {
        for a in Arch::ALL {
            assert_eq!(a.name().parse::<Arch>().unwrap(), a);
        }
        assert!("resnet".parse::<Arch>().unwrap_err().to_string().contains("linear, mlp, wide, deep, cnn"));
        assert_eq!(group_thousands(101770), "101,770");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(short_type_name::<MlpArch>(), "(Flatten<784>, Linear<784, 128>, ReLU, Linear<128, 10>)");
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
