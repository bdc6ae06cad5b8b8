//! `fashion`: the terminal side of the tutorial.
//!
//! ```text
//! cargo run --release -p fashion -- info
//! cargo run --release -p fashion -- train --model mlp --epochs 10 --out runs/mlp
//! cargo run --release -p fashion -- evaluate --model mlp --weights runs/mlp/model.safetensors
//! cargo run --release -p fashion -- predict --model mlp --weights runs/mlp/model.safetensors --index 0
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fashion::data::{self, shape_str, CLASS_NAMES};
use fashion::model::Arch;
use fashion::train::{Model, Optimizer};
use fashion::{plot, Result};

#[derive(Parser)]
#[command(name = "fashion", version, about = "Classify Fashion-MNIST clothing images with dfdx")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the dataset and print its shapes and where it was found.
    Info,
    /// Download the four official files into data/fashion-mnist/ (or --dir) and verify them.
    Download {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Train a model, evaluate it on the test set, save weights, history and figures in --out.
    Train {
        /// linear, mlp, deep or cnn.
        #[arg(long, default_value = "mlp")]
        model: Arch,
        #[arg(long, default_value_t = 10)]
        epochs: usize,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Learning rate.
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        /// adam or sgd.
        #[arg(long, default_value = "adam")]
        optimizer: String,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Train on the first N training images only (quick runs).
        #[arg(long)]
        train_subset: Option<usize>,
        #[arg(long, default_value = "runs/model")]
        out: PathBuf,
    },
    /// Print the test loss and accuracy of saved weights.
    Evaluate {
        #[arg(long)]
        model: Arch,
        #[arg(long)]
        weights: PathBuf,
    },
    /// Predict one test image: class, probability, and the true class.
    Predict {
        #[arg(long)]
        model: Arch,
        #[arg(long)]
        weights: PathBuf,
        #[arg(long, default_value_t = 0)]
        index: usize,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info => {
            let d = data::load_data()?;
            println!("Data: {}", d.source.display());
            println!("Train Images Shape: {}", shape_str(d.train.images.shape()));
            println!("Train Labels Shape: {}", shape_str(d.train.labels.shape()));
            println!("Test Images Shape: {}", shape_str(d.test.images.shape()));
            println!("Test Labels Shape: {}", shape_str(d.test.labels.shape()));
            println!("Classes: {}", CLASS_NAMES.join(", "));
        }
        Command::Download { dir } => {
            let dir = dir.unwrap_or_else(data::workspace_data_dir);
            data::download(&dir)?;
            println!("Fashion-MNIST verified in {}", dir.display());
        }
        Command::Train {
            model,
            epochs,
            batch_size,
            lr,
            optimizer,
            seed,
            train_subset,
            out,
        } => {
            let optimizer = match optimizer.as_str() {
                "adam" => Optimizer::Adam { learning_rate: lr },
                "sgd" => Optimizer::Sgd { learning_rate: lr, momentum: None },
                other => {
                    return Err(fashion::Error::InvalidArgument(format!("unknown optimizer `{other}`: adam or sgd")))
                }
            };
            let d = data::load_data()?;
            println!("Data: {}", d.source.display());
            let train = match train_subset {
                Some(n) => d.train.take(n),
                None => d.train.clone(),
            };
            let (x, y) = (train.normalized(), &train.labels);
            let (tx, ty) = (d.test.normalized(), &d.test.labels);
            let mut m = Model::new(model, seed)?;
            println!("{}\n", m.summary());
            m.compile(optimizer);
            let history = m.fit(&x, y, epochs, batch_size, Some((&tx, ty)))?;
            let test = m.evaluate(&tx, ty)?;
            println!("Test accuracy: {:.4}", test.accuracy);
            println!("Test loss: {:.4}", test.loss);
            std::fs::create_dir_all(&out).map_err(|e| fashion::Error::Io { path: out.clone(), source: e })?;
            history.write_csv(out.join("history.csv"))?;
            m.save(out.join("model.safetensors"))?;
            let probs = m.predict(&tx)?;
            plot::prediction_grid(&d.test, &probs, 10, 10, seed)?.save(out.join("predictions.png"))?;
            plot::training_curves(&[(model.name(), &history)])?.save(out.join("curves.png"))?;
            let cm = fashion::metrics::ConfusionMatrix::from_probabilities(ty, &probs)?;
            plot::confusion_matrix(&cm)?.save(out.join("confusion.png"))?;
            println!(
                "Wrote {}/{{history.csv, model.safetensors, predictions.png, curves.png, confusion.png}}",
                out.display()
            );
        }
        Command::Evaluate { model, weights } => {
            let d = data::load_data()?;
            let m = Model::load(model, &weights)?;
            let test = m.evaluate(&d.test.normalized(), &d.test.labels)?;
            println!("Test accuracy: {:.4}", test.accuracy);
            println!("Test loss: {:.4}", test.loss);
        }
        Command::Predict { model, weights, index } => {
            let d = data::load_data()?;
            if index >= d.test.len() {
                return Err(fashion::Error::InvalidArgument(format!(
                    "--index {index} is past the {} test images",
                    d.test.len()
                )));
            }
            let m = Model::load(model, &weights)?;
            let image = d.test.select(&[index])?.normalized();
            let p = m.predict(&image)?;
            let k = fashion::train::argmax(p.row(0).as_slice().unwrap_or(&[]));
            let truth = d.test.labels[index] as usize;
            println!(
                "Test image {index}: predicted {} ({:.1}%), true class {}{}",
                CLASS_NAMES[k],
                100.0 * p[[0, k]],
                CLASS_NAMES[truth],
                if k == truth { "" } else { " - wrong" }
            );
        }
    }
    Ok(())
}
