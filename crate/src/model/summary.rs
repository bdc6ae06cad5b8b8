//! Keras' `model.summary()`, derived from the network's type: every layer describes itself — its
//! Keras-style name, its output shape for a given input shape, its parameter count — and a tuple
//! chains its elements. Nothing here is written per network.

use std::collections::HashMap;
use std::fmt;

use dfdx::prelude::*;

use super::layers::conv::out_size;
use super::layers::{
    AddChannel, AvgPool2d, BatchNorm, Conv2d, ConvReluPool, Dropout, DropoutOneIn, Elu, Flatten, Gelu, GlobalAvgPool,
    LeakyReLU, MaxPool2d, ReLU, Residual, ResidualProjection, Sigmoid, Tanh,
};
use super::Dev;

/// One row of a model summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// Keras' layer name: `dense`, `dense_1`, `re_lu`, …
    pub name: String,
    /// Keras' layer type: `Dense`, `ReLU`, `Conv2D`, …
    pub kind: &'static str,
    /// Output shape without the batch dimension.
    pub output: Vec<usize>,
    pub params: usize,
}

impl LayerInfo {
    /// Keras' notation, e.g. `(None, 13, 13, 32)`.
    pub fn output_shape(&self) -> String {
        let dims: Vec<String> = self.output.iter().map(|d| d.to_string()).collect();
        format!("(None, {})", dims.join(", "))
    }
}

/// The rows of a summary as the layers add them, with Keras' numbering of repeated names.
#[derive(Debug, Default)]
pub struct Rows {
    pub rows: Vec<LayerInfo>,
    seen: HashMap<&'static str, usize>,
}

impl Rows {
    /// Adds a row named after `base` (`dense`, then `dense_1`, `dense_2`, …).
    pub fn push(&mut self, base: &'static str, kind: &'static str, output: &[usize], params: usize) {
        let n = self.seen.entry(base).or_insert(0);
        let name = if *n == 0 { base.to_string() } else { format!("{base}_{n}") };
        *n += 1;
        self.rows.push(LayerInfo { name, kind, output: output.to_vec(), params });
    }
}

/// What every layer (and every tuple of layers) tells about itself: its summary rows. A network is a
/// tuple of types that implement it; a layer of your own implements it beside dfdx's `Module`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a layer a `Model` can train",
    label = "not a layer of the `fashion` crate",
    note = "the layers are in `fashion::prelude`: Linear, Conv2d, ConvReluPool, MaxPool2d, AvgPool2d, GlobalAvgPool, \
            BatchNorm, ReLU, Sigmoid, Tanh, Gelu, LeakyReLU, Elu, Dropout, DropoutOneIn, Flatten, AddChannel, Residual, \
            ResidualProjection (dfdx's own `dfdx::nn` modules are not: use these names from the prelude)",
    note = "a layer of your own implements dfdx's `Module` (its forward pass) and `fashion::model::Layer` (its \
            summary row): see notebooks/README.md, \"Your own layer\""
)]
pub trait Layer {
    /// Adds this layer's summary rows for inputs of shape `input` (without the batch dimension) and
    /// returns its output shape, or says why it cannot take that shape.
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String>;

    /// Tells the network's first layers that their input is the data, whose gradient nothing needs.
    /// Returns `true` once a layer with parameters took the hint (it then skips that gradient); layers
    /// without parameters pass it on.
    fn input_is_data(&mut self) -> bool {
        false
    }
}

fn params<M: TensorCollection<f32, Dev>>(m: &M) -> usize {
    m.num_trainable_params()
}

impl<const N: usize> Layer for Flatten<N> {
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
        let values: usize = input.iter().product();
        if values != N {
            return Err(format!("Flatten<{N}> gets {input:?} = {values} values per image: write Flatten<{values}>"));
        }
        rows.push("flatten", "Flatten", &[N], 0);
        Ok(vec![N])
    }
}

impl Layer for AddChannel {
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
        let out = [input, &[1]].concat();
        rows.push("add_channel", "AddChannel", &out, 0);
        Ok(out)
    }
}

/// Layers that keep the shape and have no parameters: one row named as Keras names them.
macro_rules! same_shape_row {
    ($layer:ty, [$($generics:tt)*], $name:expr, $kind:expr) => {
        impl<$($generics)*> Layer for $layer {
            fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
                rows.push($name, $kind, input, 0);
                Ok(input.to_vec())
            }
        }
    };
}
same_shape_row!(ReLU, [], "re_lu", "ReLU");
same_shape_row!(Sigmoid, [], "activation", "Activation");
same_shape_row!(Tanh, [], "activation", "Activation");
same_shape_row!(Gelu, [], "activation", "Activation");
same_shape_row!(LeakyReLU<P>, [const P: usize], "leaky_re_lu", "LeakyReLU");
same_shape_row!(Elu, [], "elu", "ELU");
same_shape_row!(DropoutOneIn<N>, [const N: usize], "dropout", "Dropout");

impl<const P: usize> Layer for Dropout<P> {
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
        if P >= 100 {
            return Err(format!("Dropout<{P}> would drop every value: the rate is a percentage below 100 (Dropout<20> is Keras' Dropout(0.2))"));
        }
        rows.push("dropout", "Dropout", input, 0);
        Ok(input.to_vec())
    }
}

/// `(H, W, C)` pooled by `K×K` windows every `S` pixels.
fn pool_out(input: &[usize], k: usize, s: usize, what: &str) -> Result<Vec<usize>, String> {
    match *input {
        [h, w, c] if h >= k && w >= k && s > 0 => Ok(vec![out_size(h, k, 0, s), out_size(w, k, 0, s), c]),
        [_, _, _] => Err(format!("{what}: the {k}×{k} window (stride {s}) does not fit {input:?}")),
        _ => Err(format!("{what} needs (height, width, channels), got {input:?}")),
    }
}

impl<const K: usize, const S: usize> Layer for MaxPool2d<K, S> {
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
        let out = pool_out(input, K, S, &format!("MaxPool2d<{K}, {S}>"))?;
        rows.push("max_pooling2d", "MaxPooling2D", &out, 0);
        Ok(out)
    }
}

impl<const K: usize, const S: usize> Layer for AvgPool2d<K, S> {
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
        let out = pool_out(input, K, S, &format!("AvgPool2d<{K}, {S}>"))?;
        rows.push("average_pooling2d", "AveragePooling2D", &out, 0);
        Ok(out)
    }
}

impl Layer for GlobalAvgPool {
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
        let [_, _, c] = *input else {
            return Err(format!("GlobalAvgPool needs (height, width, channels), got {input:?}"));
        };
        rows.push("global_average_pooling2d", "GlobalAveragePooling2D", &[c], 0);
        Ok(vec![c])
    }
}

impl<const C: usize> Layer for BatchNorm<C, f32, Dev> {
    /// Keras' count: γ and β trained, the two running statistics not.
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
        if input.last() != Some(&C) {
            return Err(format!(
                "BatchNorm<{C}> normalizes the last axis, which has {input:?}: write BatchNorm<{}>",
                input.last().unwrap_or(&0)
            ));
        }
        rows.push("batch_normalization", "BatchNormalization", input, 4 * C);
        Ok(input.to_vec())
    }

    /// Its input gradient is cheap; taking the hint stops it reaching later layers.
    fn input_is_data(&mut self) -> bool {
        true
    }
}

/// `(H, W, IN)` → `((H + 2P - K)/S + 1, (W + 2P - K)/S + 1)`, checking the channels.
fn conv_out(
    input: &[usize],
    cin: usize,
    (k, p, s): (usize, usize, usize),
    what: &str,
) -> Result<(usize, usize), String> {
    match *input {
        [h, w, c] if c == cin && h + 2 * p >= k && w + 2 * p >= k && s > 0 => {
            Ok((out_size(h, k, p, s), out_size(w, k, p, s)))
        }
        [_, _, c] if c == cin => Err(format!("{what}: the {k}×{k} kernel is larger than the padded input {input:?}")),
        _ => Err(format!("{what} takes (height, width, {cin}), got {input:?}")),
    }
}

impl<const IN: usize, const OUT: usize, const K: usize, const P: usize, const S: usize> Layer
    for Conv2d<IN, OUT, K, P, S, f32, Dev>
{
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
        let (h, w) = conv_out(input, IN, (K, P, S), &format!("Conv2d<{IN}, {OUT}, {K}, {P}, {S}>"))?;
        rows.push("conv2d", "Conv2D", &[h, w, OUT], params(self));
        Ok(vec![h, w, OUT])
    }

    #[cfg(not(feature = "cuda"))]
    fn input_is_data(&mut self) -> bool {
        self.input_is_data = true;
        true
    }
}

impl<F: Layer> Layer for Residual<F> {
    /// `F`'s rows, then Keras' `Add` row.
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
        let out = self.0.describe(input, rows)?;
        if out != input {
            return Err(format!("Residual: its block turns {input:?} into {out:?}, so x + F(x) cannot be added: keep the shape, or use ResidualProjection with a projection to {out:?}"));
        }
        rows.push("add", "Add", &out, 0);
        Ok(out)
    }

    /// The input also goes round the block; the hint stops here.
    fn input_is_data(&mut self) -> bool {
        true
    }
}

impl<F: Layer, P: Layer> Layer for ResidualProjection<F, P> {
    /// `F`'s rows, the projection's, then Keras' `Add` row.
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
        let out = self.f.describe(input, rows)?;
        let projected = self.proj.describe(input, rows)?;
        if out != projected {
            return Err(format!("ResidualProjection: the block gives {out:?} but the projection {projected:?}: they must match to be added"));
        }
        rows.push("add", "Add", &out, 0);
        Ok(out)
    }

    fn input_is_data(&mut self) -> bool {
        true
    }
}

impl<const IN: usize, const OUT: usize, const K: usize, const P: usize, const POOL: usize> Layer
    for ConvReluPool<IN, OUT, K, P, POOL, f32, Dev>
{
    /// Three rows, as Keras lists `Conv2D(…, activation="relu")`, `ReLU` and `MaxPooling2D`.
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
        let (h, w) = conv_out(input, IN, (K, P, 1), &format!("ConvReluPool<{IN}, {OUT}, {K}, {P}, {POOL}>"))?;
        rows.push("conv2d", "Conv2D", &[h, w, OUT], params(self));
        rows.push("re_lu", "ReLU", &[h, w, OUT], 0);
        let out = [h / POOL, w / POOL, OUT];
        rows.push("max_pooling2d", "MaxPooling2D", &out, 0);
        Ok(out.to_vec())
    }

    #[cfg(not(feature = "cuda"))]
    fn input_is_data(&mut self) -> bool {
        self.input_is_data = true;
        true
    }
}

#[cfg(not(feature = "cuda"))]
impl<const I: usize, const O: usize> Layer for super::layers::Linear<I, O, f32, Dev> {
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
        dense(I, O, params(self), input, rows)
    }

    fn input_is_data(&mut self) -> bool {
        self.input_is_data = true;
        true
    }
}

#[cfg(feature = "cuda")]
impl<const I: usize, const O: usize> Layer for dfdx::nn::modules::Linear<I, O, f32, Dev> {
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
        dense(I, O, params(self), input, rows)
    }

    fn input_is_data(&mut self) -> bool {
        true
    }
}

fn dense(i: usize, o: usize, params: usize, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
    if input != [i] {
        return Err(format!(
            "Linear<{i}, {o}> takes ({i},), got {input:?}: put Flatten<{}> before it",
            input.iter().product::<usize>()
        ));
    }
    rows.push("dense", "Dense", &[o], params);
    Ok(vec![o])
}

macro_rules! tuple_layer {
    ($($m:ident $i:tt),+) => {
        impl<$($m: Layer),+> Layer for ($($m,)+) {
            fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
                let shape = input.to_vec();
                $(let shape = self.$i.describe(&shape, rows)?;)+
                Ok(shape)
            }

            fn input_is_data(&mut self) -> bool {
                $(if self.$i.input_is_data() { return true; })+
                false
            }
        }
    };
}
tuple_layer!(A 0);
tuple_layer!(A 0, B 1);
tuple_layer!(A 0, B 1, C 2);
tuple_layer!(A 0, B 1, C 2, D 3);
tuple_layer!(A 0, B 1, C 2, D 3, E 4);
tuple_layer!(A 0, B 1, C 2, D 3, E 4, F 5);

/// Keras' `model.summary()`: the layers, their output shapes and parameter counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The model's name (`mlp`, or what [`Model::named`](crate::train::Model::named) gave it).
    pub name: String,
    /// The network's type as written, e.g. `(Flatten<784>, Linear<784, 128>, ReLU, Linear<128, 10>)`.
    pub type_name: String,
    pub layers: Vec<LayerInfo>,
    /// The trained parameters, counted from the built model's tensors.
    pub total_params: usize,
    /// Saved but not trained: batch normalization's running statistics.
    pub non_trainable_params: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keras' 34 columns for "name (type)", wider when a row needs it (`batch_normalization_1
        // (BatchNormalization)`), so the shapes stay in one column.
        let first = self.layers.iter().map(|l| l.name.chars().count() + l.kind.len() + 4).max().unwrap_or(0).max(34);
        let width = first + 32;
        let line = "─".repeat(width);
        writeln!(f, "Model: \"{}\"", self.name)?;
        writeln!(f, "Type: {}", self.type_name)?;
        writeln!(f, "{line}")?;
        writeln!(f, "{:<first$}{:<22}{:>10}", "Layer (type)", "Output Shape", "Param #")?;
        writeln!(f, "{}", "═".repeat(width))?;
        for l in &self.layers {
            writeln!(
                f,
                "{:<first$}{:<22}{:>10}",
                format!("{} ({})", l.name, l.kind),
                l.output_shape(),
                group_thousands(l.params)
            )?;
        }
        writeln!(f, "{}", "═".repeat(width))?;
        writeln!(f, "Total params: {}", group_thousands(self.total_params + self.non_trainable_params))?;
        writeln!(f, "Trainable params: {}", group_thousands(self.total_params))?;
        write!(f, "Non-trainable params: {}", group_thousands(self.non_trainable_params))
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
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
