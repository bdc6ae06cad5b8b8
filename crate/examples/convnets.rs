//! Trains notebook 7's networks from the command line, to try settings faster than a notebook does:
//! seconds per epoch, validation accuracy, and the test accuracy once at the end.
//!
//! ```text
//! cargo run --release -p fashion --example convnets -- --net resnet --epochs 10 --batch-size 128
//! ```
//!
//! `--net lenet | lenet-bn | resnet (notebook 7's) | resnet-dropout | resnet-gap | resnet-deep | resnet-77`; `--lr` (the peak of a
//! cosine schedule with one epoch of warm-up), `--wd` (AdamW's weight decay), `--shift`, `--no-flip`,
//! `--erase`, `--smooth` (label smoothing), `--init glorot | he | he-uniform`, `--seed`, `--subset`.
use fashion::prelude::*;

/// d2l.ai's LeNet: sigmoid and average pooling, 5×5 kernels.
type LeNet = (
    AddChannel,
    (Conv2d<1, 6, 5, 2>, Sigmoid, AvgPool2d<2>),
    (Conv2d<6, 16, 5>, Sigmoid, AvgPool2d<2>),
    Flatten<400>,
    (Linear<400, 120>, Sigmoid, Linear<120, 84>, Sigmoid),
    Linear<84, 10>,
);

/// LeNet with batch normalization after every convolution and dense layer (d2l.ai, 8.5).
type LeNetBn = (
    AddChannel,
    (Conv2d<1, 6, 5, 2>, BatchNorm<6>, Sigmoid, AvgPool2d<2>),
    (Conv2d<6, 16, 5>, BatchNorm<16>, Sigmoid, AvgPool2d<2>),
    Flatten<400>,
    (Linear<400, 120>, BatchNorm<120>, Sigmoid, Linear<120, 84>, BatchNorm<84>, Sigmoid),
    Linear<84, 10>,
);

#[path = "common/resnet.rs"]
mod resnet;
use resnet::{Block, ResNet};

/// The same with dropout 0.3 in the head.
type ResNetDropout = (
    AddChannel,
    (ConvReluPool<1, 32, 3, 1, 2>, BatchNorm<32>),
    (Block<32>, ReLU),
    (ConvReluPool<32, 64, 3, 1, 2>, BatchNorm<64>),
    (Block<64>, ReLU),
    (Flatten<3136>, Linear<3136, 128>, BatchNorm<128>, ReLU, Dropout<30>, Linear<128, 10>),
);

type Down<const I: usize, const O: usize> = ResidualProjection<
    (Conv2d<I, O, 3, 1, 2>, BatchNorm<O>, ReLU, Conv2d<O, O, 3, 1>, BatchNorm<O>),
    (Conv2d<I, O, 1, 0, 2>, BatchNorm<O>),
>;

/// A ResNet in He et al.'s form: stem, blocks, a strided projection block, global average pooling.
type ResNetGap = (
    AddChannel,
    (Conv2d<1, 32, 3, 1>, BatchNorm<32>, ReLU, MaxPool2d<2>),
    (Block<32>, ReLU),
    (Down<32, 64>, ReLU),
    (Block<64>, ReLU),
    (GlobalAvgPool, Linear<64, 10>),
);

/// Notebook 7's ResNet with a second residual block at 7×7×64.
type ResNetDeep = (
    AddChannel,
    (ConvReluPool<1, 32, 3, 1, 2>, BatchNorm<32>),
    (Block<32>, ReLU),
    (ConvReluPool<32, 64, 3, 1, 2>, BatchNorm<64>),
    (Block<64>, ReLU, Block<64>, ReLU),
    (Flatten<3136>, Linear<3136, 128>, BatchNorm<128>, ReLU, Linear<128, 10>),
);

/// Both residual blocks at 7×7×64, none at 14×14 (the cheaper resolution for this machine's kernels).
type ResNet77 = (
    AddChannel,
    (ConvReluPool<1, 32, 3, 1, 2>, BatchNorm<32>),
    (ConvReluPool<32, 64, 3, 1, 2>, BatchNorm<64>),
    (Block<64>, ReLU, Block<64>, ReLU),
    (Flatten<3136>, Linear<3136, 128>, BatchNorm<128>, ReLU, Linear<128, 10>),
);

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn train<N: Network>(args: &[String], data: &FashionMnist) -> Result<()> {
    let epochs: usize = arg(args, "--epochs", 10);
    let batch_size: usize = arg(args, "--batch-size", 128);
    let lr: f64 = arg(args, "--lr", 2e-3);
    let wd: f64 = arg(args, "--wd", 5e-4);
    let shift: usize = arg(args, "--shift", 2);
    let flip = !args.iter().any(|a| a == "--no-flip");
    let (x, y) = (data.train.normalized(), data.train.labels.clone());
    let init = match arg(args, "--init", "glorot".to_string()).as_str() {
        "he" | "he-normal" => Initializer::HeNormal,
        "he-uniform" => Initializer::HeUniform,
        _ => Initializer::GlorotUniform,
    };
    let mut m: Model<N> = Model::new(arg(args, "--seed", 42))?.with_initializer(init)?;
    println!("{}", m.summary());
    m.compile(AdamW { learning_rate: lr / 10.0, weight_decay: wd });
    let steps = (x.shape()[0] as f64 * 0.9 / batch_size as f64).ceil() as usize;
    let schedule = Schedule::Cosine {
        decay_steps: steps * epochs.saturating_sub(1).max(1),
        alpha: 0.0,
        warmup_steps: steps,
        warmup_target: Some(lr),
    };
    let options = FitOptions {
        epochs,
        batch_size,
        validation_split: 0.1,
        lr_schedule: Some(schedule),
        augment: Augment { flip, shift, erase: arg(args, "--erase", 0.0) },
        label_smoothing: arg(args, "--smooth", 0.0),
        ..Default::default()
    };
    let h = m.fit(&x, &y, options)?;
    let total: f64 = h.epochs.iter().map(|e| e.seconds).sum();
    let tx = data.test.normalized();
    let test = m.evaluate(&tx, &data.test.labels)?;
    println!("trained {:.1} min; test accuracy {:.4}", total / 60.0, test.accuracy);
    // Test-time augmentation: the mean of the probabilities for each image and its mirror image.
    let mirrored = tx.slice(s![.., .., ..;-1]).to_owned();
    let probs = (m.predict(&tx)? + m.predict(&mirrored)?) / 2.0;
    let right = probs
        .outer_iter()
        .zip(&data.test.labels)
        .filter(|(p, &y)| p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i) == Some(y as usize))
        .count();
    println!("test accuracy with flip test-time augmentation {:.4}", right as f64 / probs.nrows() as f64);
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run = || -> Result<()> {
        let data = load_data()?.subset(arg(&args, "--subset", 60000), 10000);
        match arg(&args, "--net", "resnet".to_string()).as_str() {
            "lenet" => train::<LeNet>(&args, &data),
            "lenet-bn" => train::<LeNetBn>(&args, &data),
            "resnet-gap" => train::<ResNetGap>(&args, &data),
            "resnet-dropout" => train::<ResNetDropout>(&args, &data),
            "resnet-deep" => train::<ResNetDeep>(&args, &data),
            "resnet-77" => train::<ResNet77>(&args, &data),
            _ => train::<ResNet>(&args, &data),
        }
    };
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
