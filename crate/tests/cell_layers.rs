//! What a notebook cell writes with the next chapters' layers: a layer of its own (Swish, from dfdx
//! operations) trained by the same `fit`, and a small ResNet with batch norm and a projection, fitted,
//! saved and loaded back with its running statistics.

use fashion::dfdx::prelude::{HasErr, NonMutableModule, Tape, Tensor, TryMul, WithEmptyTape, ZeroSizedModule};
use fashion::prelude::*;

#[derive(Debug, Clone, Copy, Default)]
struct Swish;
impl ZeroSizedModule for Swish {}
impl NonMutableModule for Swish {}
impl<S: Shape, T: Tape<f32, Dev>> Module<Tensor<S, f32, Dev, T>> for Swish {
    type Output = Tensor<S, f32, Dev, T>;
    type Error = <Dev as HasErr>::Err;
    fn try_forward(&self, x: Tensor<S, f32, Dev, T>) -> std::result::Result<Self::Output, Self::Error> {
        let s = x.with_empty_tape().try_sigmoid()?;
        x.try_mul(s)
    }
}
impl Layer for Swish {
    fn describe(&self, input: &[usize], rows: &mut Rows) -> std::result::Result<Vec<usize>, String> {
        rows.push("swish", "Activation", input, 0);
        Ok(input.to_vec())
    }
}

type Block<const C: usize> = Residual<(Conv2d<C, C, 3, 1>, BatchNorm<C>, ReLU, Conv2d<C, C, 3, 1>, BatchNorm<C>)>;
type Down<const I: usize, const O: usize> = ResidualProjection<
    (Conv2d<I, O, 3, 1, 2>, BatchNorm<O>, ReLU, Conv2d<O, O, 3, 1>, BatchNorm<O>),
    (Conv2d<I, O, 1, 0, 2>, BatchNorm<O>),
>;
type ResNet = (
    AddChannel,
    (Conv2d<1, 8, 3, 1>, BatchNorm<8>, ReLU),
    (Block<8>, ReLU, Down<8, 16>, ReLU),
    GlobalAvgPool,
    Linear<16, 10>,
);

fn toy(n: usize) -> (Array3<f32>, Array1<u8>) {
    let y = Array1::from_iter((0..n).map(|i| (i % 10) as u8));
    let x = Array3::from_shape_fn((n, 28, 28), |(i, r, c)| if (r + c + i % 10) % 7 == 0 { 1.0 } else { 0.0 });
    (x, y)
}

#[test]
fn a_layer_written_in_a_cell_trains_with_fit() {
    type SwishMlp = (Flatten<784>, Linear<784, 32>, Swish, Linear<32, 10>);
    let (x, y) = toy(200);
    let mut m: Model<SwishMlp> = Model::new(3).unwrap();
    m.verbosity = Verbosity::Silent;
    m.compile(Adam::default());
    let h = m.fit(&x, &y, FitOptions { epochs: 3, ..Default::default() }).unwrap();
    assert!(h.epochs[2].loss < h.epochs[0].loss, "{h:?}");
    assert!(m.summary().to_string().contains("swish (Activation)"));
}

#[test]
fn a_resnet_with_batch_norm_fits_saves_and_loads() {
    let (x, y) = toy(256);
    let mut m: Model<ResNet> = Model::new(5).unwrap();
    m.verbosity = Verbosity::Silent;
    m.compile(AdamW::default());
    let h = m.fit(&x, &y, FitOptions { epochs: 3, batch_size: 32, ..Default::default() }).unwrap();
    assert!(h.epochs[2].loss < h.epochs[0].loss, "{h:?}");
    let s = m.summary();
    assert_eq!(s.non_trainable_params, 2 * (8 + 8 + 8 + 16 + 16 + 16));
    let dir = std::env::temp_dir().join(format!("fashion-resnet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("resnet.safetensors");
    m.save(&path).unwrap();
    let mut back: Model<ResNet> = Model::new(99).unwrap();
    back.load_weights(&path).unwrap();
    let (a, b) = (m.predict(&x).unwrap(), back.predict(&x).unwrap());
    assert_eq!(a, b, "the running statistics were saved and loaded with the weights");
    std::fs::remove_dir_all(&dir).unwrap();
}
