//! Keras' `model.summary()`, derived from the network's type: every layer describes itself — its
//! Keras-style name, its output shape for a given input shape, its parameter count — and a tuple
//! chains its elements. Nothing here is written per network.

use std::collections::HashMap;
use std::fmt;

use dfdx::prelude::*;

use super::layers::{AddChannel, Conv2d, ConvReluPool, DropoutOneIn, Flatten, MaxPool2d, ReLU};
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

/// What every layer (and every tuple of layers) tells about itself.
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

impl Layer for ReLU {
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
        rows.push("re_lu", "ReLU", input, 0);
        Ok(input.to_vec())
    }
}

impl<const N: usize> Layer for DropoutOneIn<N> {
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
        rows.push("dropout", "Dropout", input, 0);
        Ok(input.to_vec())
    }
}

impl<const K: usize> Layer for MaxPool2d<K> {
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
        let [h, w, c] = *input else { return Err(format!("MaxPool2d needs (height, width, channels), got {input:?}")) };
        let out = [h / K, w / K, c];
        rows.push("max_pooling2d", "MaxPooling2D", &out, 0);
        Ok(out.to_vec())
    }
}

/// `(H, W, IN)` → `(H + 2P - K + 1, W + 2P - K + 1)`, checking the channels.
fn conv_out(input: &[usize], cin: usize, k: usize, p: usize, what: &str) -> Result<(usize, usize), String> {
    match *input {
        [h, w, c] if c == cin && h + 2 * p >= k && w + 2 * p >= k => Ok((h + 2 * p + 1 - k, w + 2 * p + 1 - k)),
        [_, _, c] if c == cin => Err(format!("{what}: the {k}×{k} kernel is larger than the padded input {input:?}")),
        _ => Err(format!("{what} takes (height, width, {cin}), got {input:?}")),
    }
}

impl<const IN: usize, const OUT: usize, const K: usize, const P: usize> Layer for Conv2d<IN, OUT, K, P, f32, Dev> {
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
        let (h, w) = conv_out(input, IN, K, P, &format!("Conv2d<{IN}, {OUT}, {K}, {P}>"))?;
        rows.push("conv2d", "Conv2D", &[h, w, OUT], params(self));
        Ok(vec![h, w, OUT])
    }
}

impl<const IN: usize, const OUT: usize, const K: usize, const P: usize, const POOL: usize> Layer
    for ConvReluPool<IN, OUT, K, P, POOL, f32, Dev>
{
    /// Three rows, as Keras lists `Conv2D(…, activation="relu")`, `ReLU` and `MaxPooling2D`.
    fn describe(&self, input: &[usize], rows: &mut Rows) -> Result<Vec<usize>, String> {
        let (h, w) = conv_out(input, IN, K, P, &format!("ConvReluPool<{IN}, {OUT}, {K}, {P}, {POOL}>"))?;
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
    /// Counted from the built model's tensors.
    pub total_params: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = "─".repeat(66);
        writeln!(f, "Model: \"{}\"", self.name)?;
        writeln!(f, "Type: {}", self.type_name)?;
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
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
