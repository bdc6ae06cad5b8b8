//! `fashion`: the terminal side of the tutorial.
//!
//! ```text
//! cargo run --release -p fashion -- info
//! cargo run --release -p fashion -- train --model mlp --epochs 10 --out runs/mlp
//! cargo run --release -p fashion -- evaluate --model mlp --weights runs/mlp/model.safetensors
//! cargo run --release -p fashion -- predict --model mlp --weights runs/mlp/model.safetensors --index 0
//! cargo run --release -p fashion -- runs
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fashion::data::{self, shape_str, CLASS_NAMES};
use fashion::model::{Arch, Network, WithNetwork};
use fashion::train::{Adam, AdamW, FitOptions, Model, Optimizer, RunLog, Sgd};
use fashion::{plot, Error, Result};

#[derive(Parser)]
#[command(name = "fashion", version, about = "Classify Fashion-MNIST clothing images with dfdx")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct TrainArgs {
    /// linear, mlp, wide, deep or cnn.
    #[arg(long, default_value = "mlp")]
    model: Arch,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Images per gradient step (Keras' default; the README's CNN runs use 64).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Learning rate (default: the optimizer's, 1e-3 for adam and 0.01 for sgd, as in Keras).
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, value_enum, default_value_t = OptimizerName::Adam)]
    optimizer: OptimizerName,
    /// Weight decay: the L2 penalty's gradient for adam and sgd, decoupled for adamw (default: 0, and
    /// Keras' 0.004 for adamw).
    #[arg(long)]
    weight_decay: Option<f64>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Train on the first N training images only (quick runs).
    #[arg(long)]
    train_subset: Option<usize>,
    /// Hold out this fraction of the training images (the last ones) as validation data; the test
    /// set is scored once, after training.
    #[arg(long, default_value_t = 0.1)]
    validation_split: f64,
    /// The run's folder: parameters, history, TensorBoard events, weights and figures (`fashion runs`
    /// lists the runs of its parent folder).
    #[arg(long, default_value = "runs/model")]
    out: PathBuf,
    /// Keep a checkpoint after every epoch; the same command resumes a run that was killed or stopped
    /// (Ctrl-C ends training at the end of a batch) and ends as it would have uninterrupted.
    #[arg(long)]
    checkpoint: bool,
}

/// The optimizers `--optimizer` names.
#[derive(Clone, Copy, ValueEnum)]
enum OptimizerName {
    Adam,
    /// Adam with decoupled weight decay.
    Adamw,
    /// Plain SGD (no momentum).
    Sgd,
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
    Train(TrainArgs),
    /// List the runs logged in a folder (newest first).
    Runs {
        #[arg(long, default_value = "runs")]
        dir: PathBuf,
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
    let cli = Cli::parse();
    // Ctrl-C during a download: remove its part file and lock now, not at the next download.
    let download_dirs = match &cli.command {
        Command::Download { dir } => vec![dir.clone().unwrap_or_else(data::workspace_data_dir)],
        _ => vec![data::workspace_data_dir()],
    };
    let _ = ctrlc::set_handler(move || {
        for dir in &download_dirs {
            data::clean_up_interrupted(dir);
        }
        std::process::exit(130);
    });
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(hint) = terminal_hint(&e) {
                eprintln!("In the terminal: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The command's flags for a fix the library's message gives in library terms.
fn terminal_hint(e: &Error) -> Option<&'static str> {
    match e {
        Error::NonFiniteLoss { .. } => Some("a lower --lr, e.g. --lr 1e-4"),
        Error::WeightsMismatch { .. } => Some("give the --model the weights were trained with"),
        Error::Setting { setting: "batch_size", .. } => Some("a smaller --batch-size"),
        _ => None,
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
        Command::Train(args) => args.model.run(args)?,
        Command::Runs { dir } => {
            let runs = fashion::runs::load_all(&dir)?;
            if runs.is_empty() {
                println!("no runs in {} (train with --out {}/NAME)", dir.display(), dir.display());
            }
            let num = |x: Option<f64>| x.map(|x| format!("{x:.4}")).unwrap_or_default();
            if !runs.is_empty() {
                println!(
                    "{:<24} {:<19} {:<8} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8}",
                    "name", "created (UTC)", "model", "epochs", "lr", "loss", "accuracy", "val_loss", "val_acc"
                );
            }
            for fashion::runs::Run { name, record: r, .. } in &runs {
                println!(
                    "{:<24} {:<19} {:<8} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8}",
                    name,
                    r.created_utc,
                    r.model,
                    r.epochs_run,
                    r.learning_rate,
                    num(r.loss),
                    num(r.accuracy),
                    num(r.val_loss),
                    num(r.val_accuracy)
                );
            }
        }
        Command::Evaluate { model, weights } => model.run(Evaluate { weights })?,
        Command::Predict { model, weights, index } => model.run(Predict { weights, index })?,
    }
    Ok(())
}

impl WithNetwork for TrainArgs {
    type Output = Result<()>;
    fn run<N: Network>(self, arch: Arch) -> Result<()> {
        let default: Optimizer = match self.optimizer {
            OptimizerName::Adam => Adam::default().into(),
            OptimizerName::Adamw => AdamW::default().into(),
            OptimizerName::Sgd => Sgd::default().into(),
        };
        let mut optimizer = default.with_learning_rate(self.lr.unwrap_or(default.learning_rate()));
        if let Some(wd) = self.weight_decay {
            optimizer = match optimizer {
                Optimizer::Adam(a) => Adam { weight_decay: wd, ..a }.into(),
                Optimizer::AdamW(a) => AdamW { weight_decay: wd, ..a }.into(),
                Optimizer::Sgd(s) => Sgd { weight_decay: wd, ..s }.into(),
            };
        }
        let d = data::load_data()?;
        println!("Data: {}", d.source.display());
        if let Some(n) = self.train_subset.filter(|&n| n == 0 || n > d.train.len()) {
            return Err(Error::InvalidArgument(format!(
                "--train-subset {n}: choose between 1 and the {} training images",
                d.train.len()
            )));
        }
        let train = match self.train_subset {
            Some(n) => d.train.take(n),
            None => d.train.clone(),
        };
        let (x, y) = (train.normalized(), &train.labels);
        let (tx, ty) = (d.test.normalized(), &d.test.labels);
        let out = self.out;
        let (Some(name), Some(parent)) = (out.file_name(), out.parent()) else {
            return Err(Error::InvalidArgument(format!("--out {}: give a folder such as runs/mlp", out.display())));
        };
        let mut run = RunLog::new(parent, name.to_string_lossy()).with_weights();
        if let Some(n) = self.train_subset {
            run = run.param("train_subset", n);
        }
        if self.checkpoint {
            run = run.with_checkpoints();
        }
        let mut m = Model::<N>::new(self.seed)?.named(arch.name());
        println!("{}\n", m.summary());
        m.compile(optimizer);
        let options = FitOptions {
            epochs: self.epochs,
            batch_size: self.batch_size,
            validation_split: self.validation_split,
            run: Some(run),
            ..Default::default()
        };
        let history = m.fit(&x, y, options)?;
        let test = m.evaluate(&tx, ty)?;
        println!("Test accuracy: {:.4}", test.accuracy);
        println!("Test loss: {:.4}", test.loss);
        let probs = m.predict(&tx)?;
        plot::prediction_grid(&d.test, &probs, 10, 10, self.seed)?.save(out.join("predictions.png"))?;
        plot::training_curves(&[(arch.name(), &history)])?.save(out.join("curves.png"))?;
        let cm = fashion::metrics::ConfusionMatrix::from_probabilities(ty, &probs)?;
        plot::confusion_matrix(&cm)?.save(out.join("confusion.png"))?;
        println!(
            "Wrote {}/{{run.json, history.csv, model.safetensors, train/, validation/, predictions.png, curves.png, confusion.png}}",
            out.display()
        );
        Ok(())
    }
}

struct Evaluate {
    weights: PathBuf,
}

impl WithNetwork for Evaluate {
    type Output = Result<()>;
    fn run<N: Network>(self, arch: Arch) -> Result<()> {
        let d = data::load_data()?;
        let mut m = Model::<N>::new(0)?.named(arch.name());
        m.load_weights(&self.weights)?;
        let test = m.evaluate(&d.test.normalized(), &d.test.labels)?;
        println!("Test accuracy: {:.4}", test.accuracy);
        println!("Test loss: {:.4}", test.loss);
        Ok(())
    }
}

struct Predict {
    weights: PathBuf,
    index: usize,
}

impl WithNetwork for Predict {
    type Output = Result<()>;
    fn run<N: Network>(self, arch: Arch) -> Result<()> {
        let (d, index) = (data::load_data()?, self.index);
        if index >= d.test.len() {
            return Err(Error::InvalidArgument(format!("--index {index} is past the {} test images", d.test.len())));
        }
        let mut m = Model::<N>::new(0)?.named(arch.name());
        m.load_weights(&self.weights)?;
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
        Ok(())
    }
}
