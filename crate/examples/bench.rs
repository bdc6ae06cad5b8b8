//! Measures how fast the tutorial's models train and predict on the real data, as Keras users measure it:
//! seconds per epoch, seconds to predict the 10,000 test images, peak memory, and the test accuracy reached.
//!
//! ```text
//! cargo run --release -p fashion --example bench -- --model mlp --epochs 5
//! cargo run --release -p fashion --example bench -- --model cnn --batch-size 64 --json
//! cargo run --release -p fashion --example bench -- --model resnet --batch-size 128 --epochs 3
//! cargo run --release -p fashion --example bench -- --peak      # large-GEMM GFLOP/s of this machine
//! ```
//!
//! `scripts/bench` runs this once per model (one process each, so peak memory is per model) and, with
//! `--keras`, the same models in Keras, alternating, and prints the ratios.
use std::time::Instant;

use fashion::model::WithNetwork;
use fashion::prelude::*;
use fashion_kernels::matmul::{matmul, Mat, Split, Store};

#[path = "common/resnet.rs"]
mod resnet;

/// Multiply-adds per image of the MLP's two weight matrices (784×128 + 128×10): a training step costs
/// 6 FLOP per weight and image (2 forward, 4 backward), so an epoch is 6 × 101,632 × 60,000 ≈ 37 GFLOP.
const MLP_WEIGHTS: f64 = (784 * 128 + 128 * 10) as f64;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    match args.iter().position(|a| a == name) {
        Some(i) => match args.get(i + 1).map(|v| v.parse()) {
            Some(Ok(v)) => v,
            _ => {
                eprintln!("error: {name} needs a value");
                std::process::exit(2);
            }
        },
        None => default,
    }
}

fn run() -> fashion::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    if args.iter().any(|a| a == "--peak") {
        let gflops = peak_gemm_gflops()?;
        if json {
            println!("{{\"gemm_gflops\": {gflops:.2}, \"threads\": {}}}", threads());
        } else {
            println!(
                "2048×2048×2048 f32 matrix product (gemm crate, as in our kernels): {gflops:.1} GFLOP/s on {} threads",
                threads()
            );
        }
        return Ok(());
    }
    let model: String = arg(&args, "--model", "mlp".to_string());
    let bench = Bench {
        epochs: arg(&args, "--epochs", 5),
        batch_size: arg(&args, "--batch-size", 32),
        repeats: arg(&args, "--predict-repeats", 5),
        seed: arg(&args, "--seed", 42),
        json,
    };
    if model == "resnet" {
        // Notebook 7's network and optimizer (at a fixed rate, without augmentation: the step itself).
        return measure::<resnet::ResNet>("resnet", AdamW { learning_rate: 1e-3, weight_decay: 5e-4 }.into(), bench);
    }
    match model.parse::<Arch>() {
        Ok(arch) => arch.run(bench),
        Err(e) => {
            eprintln!("error: {e}, or resnet (notebook 7's)");
            std::process::exit(2);
        }
    }
}

struct Bench {
    epochs: usize,
    batch_size: usize,
    repeats: usize,
    seed: u64,
    json: bool,
}

impl WithNetwork for Bench {
    type Output = fashion::Result<()>;
    fn run<N: Network>(self, arch: Arch) -> fashion::Result<()> {
        measure::<N>(arch.name(), Adam { learning_rate: 1e-3, ..Adam::default() }.into(), self)
    }
}

fn measure<N: Network>(
    name: &str,
    optimizer: Optimizer,
    Bench { epochs, batch_size, repeats, seed, json }: Bench,
) -> fashion::Result<()> {
    let data = load_data()?;
    let x = data.train.normalized();
    let tx = data.test.normalized();
    let mut model = Model::<N>::new(seed)?.named(name);
    model.verbosity = Verbosity::Silent;
    model.compile(optimizer);
    let options = FitOptions { epochs, batch_size, ..Default::default() };
    let history = model.fit(&x, &data.train.labels, options)?;
    let accuracy = model.evaluate(&tx, &data.test.labels)?.accuracy;

    model.predict(&tx)?; // warm-up, as on the Keras side
    let mut predict = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        let p = model.predict(&tx)?;
        predict.push(start.elapsed().as_secs_f64());
        assert_eq!(p.dim(), (10_000, 10));
    }
    let epoch_seconds: Vec<f64> = history.epochs.iter().map(|e| e.seconds).collect();
    let rss = peak_rss_mb();
    if json {
        let list = |v: &[f64]| v.iter().map(|s| format!("{s:.6}")).collect::<Vec<_>>().join(", ");
        println!(
            "{{\"framework\": \"fashion {} (dfdx 0.13)\", \"model\": \"{}\", \"batch_size\": {batch_size}, \
             \"epoch_seconds\": [{}], \"predict_seconds\": [{}], \"peak_rss_mb\": {rss:.1}, \
             \"test_accuracy\": {accuracy:.4}, \"params\": {}, \"threads\": {}, \"data\": {:?}}}",
            env!("CARGO_PKG_VERSION"),
            name,
            list(&epoch_seconds),
            list(&predict),
            model.count_params(),
            threads(),
            data.source.display().to_string(),
        );
    } else {
        let median_epoch = median(&epoch_seconds);
        println!("model {name}, batch {batch_size}, {epochs} epochs, data from {}", data.source.display());
        println!(
            "epoch: min {:.3} s, median {median_epoch:.3} s",
            epoch_seconds.iter().cloned().fold(f64::INFINITY, f64::min)
        );
        println!("predict 10,000 images: median {:.4} s", median(&predict));
        println!("peak RSS: {rss:.0} MB; test accuracy {accuracy:.4}");
        if name == "mlp" {
            let gflop = 6.0 * MLP_WEIGHTS * x.len_of(Axis(0)) as f64 / 1e9;
            println!("MLP: {gflop:.1} GFLOP per epoch → {:.1} GFLOP/s", gflop / median_epoch);
        }
    }
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Threads the kernels may use (rayon's pool: all cores unless `RAYON_NUM_THREADS` says otherwise).
fn threads() -> usize {
    rayon::current_num_threads()
}

/// The highest matrix-product speed reachable here: a large square product on all threads with our
/// kernels' matrix product (the `gemm` crate), best of 3.
fn peak_gemm_gflops() -> fashion::Result<f64> {
    const N: usize = 2048;
    let a: Vec<f32> = (0..N * N).map(|i| (i % 7) as f32 - 3.0).collect();
    let b: Vec<f32> = (0..N * N).map(|i| (i % 5) as f32 - 2.0).collect();
    let mut c = vec![0f32; N * N];
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        // Large enough for gemm's own threads on all cores.
        matmul(Split::Rows, (N, N, N), Mat::Plain(&a), Mat::Plain(&b), &mut c, Store::Overwrite);
        best = best.min(start.elapsed().as_secs_f64());
    }
    assert!(c[0].is_finite());
    Ok(2.0 * (N * N * N) as f64 / best / 1e9)
}

/// Peak resident memory of this process in MB (`VmHWM` of /proc/self/status; NaN where there is none).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
