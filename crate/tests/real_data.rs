//! Tests on the real Fashion-MNIST files (installed by `.ci/run`: Debian package `dataset-fashion-mnist`).
//!
//! The accuracy floors train full models for 10 epochs: they are `#[ignore]`d and run with
//! `cargo test --release -p fashion --test real_data -- --ignored --nocapture`.

use fashion::data::{self, CLASS_NAMES};
use fashion::prelude::*;

#[test]
fn real_data_shapes_balance_and_first_label() {
    let d = load_data().expect("the real dataset (apt-get install dataset-fashion-mnist)");
    assert_eq!(d.train.images.shape(), &[60000, 28, 28]);
    assert_eq!(d.train.labels.shape(), &[60000]);
    assert_eq!(d.test.images.shape(), &[10000, 28, 28]);
    assert_eq!(d.test.labels.shape(), &[10000]);
    assert_eq!(d.train.class_counts(), [6000; 10]);
    assert_eq!(d.test.class_counts(), [1000; 10]);
    assert_eq!(d.train.labels[0], 9);
    assert_eq!(CLASS_NAMES[d.train.labels[0] as usize], "Ankle boot");
    assert_eq!(*d.train.images.iter().max().unwrap(), 255);
    let n = d.train.take(100).normalized();
    assert!(n.iter().all(|&v| (0.0..=1.0).contains(&v)));
}

#[test]
fn real_data_raw_and_gz_load_identically() {
    // Decompress the installed .gz files into a temp folder and load them raw.
    let src = data::locate().expect("dataset installed");
    let tmp = tempfile::tempdir().unwrap();
    for name in [data::TRAIN_FILES.1, data::TEST_FILES.0, data::TEST_FILES.1, data::TRAIN_FILES.0] {
        let gz = src.join(format!("{name}.gz"));
        let path = if gz.is_file() { gz } else { src.join(name) };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut data::idx::open_maybe_gz(&path).unwrap(), &mut bytes).unwrap();
        std::fs::write(tmp.path().join(name), bytes).unwrap();
    }
    let raw = data::load_dir(tmp.path()).unwrap();
    let gz = data::load_dir(&src).unwrap();
    assert_eq!(raw.train, gz.train);
    assert_eq!(raw.test, gz.test);
}

#[test]
fn short_real_training_learns_and_reloads_exactly() {
    let d = load_data().unwrap().subset(6000, 2000);
    let (x, y) = (d.train.normalized(), &d.train.labels);
    let (tx, ty) = (d.test.normalized(), &d.test.labels);
    let mut m = Model::<MlpArch>::new(1).unwrap();
    m.verbosity = Verbosity::Silent;
    m.compile(Adam { learning_rate: 1e-3 });
    m.fit(&x, y, FitOptions { epochs: 2, ..Default::default() }).unwrap();
    let ev = m.evaluate(&tx, ty).unwrap();
    assert!(ev.accuracy > 0.75, "{ev}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.safetensors");
    m.save(&path).unwrap();
    assert_eq!(Model::<MlpArch>::load(&path).unwrap().evaluate(&tx, ty).unwrap(), ev);
}

/// Trains the network of `arch` for 10 epochs (seed 42, Adam 1e-3, batches of `batch_size`: Keras' 32,
/// 64 for the CNN) and checks the test accuracy reaches `want`.
fn floor<N: Network>(arch: Arch, batch_size: usize, want: f64) {
    let d = load_data().unwrap();
    let (x, y) = (d.train.normalized(), &d.train.labels);
    let (tx, ty) = (d.test.normalized(), &d.test.labels);
    let mut m = Model::<N>::new(42).unwrap();
    m.compile(Adam { learning_rate: 1e-3 });
    let h = m.fit(&x, y, FitOptions { epochs: 10, batch_size, ..Default::default() }).unwrap();
    let ev = m.evaluate(&tx, ty).unwrap();
    let secs: Vec<f64> = h.epochs.iter().map(|e| e.seconds).collect();
    println!("{arch}: test accuracy {:.4}, loss {:.4}, seconds per epoch {secs:.2?}", ev.accuracy, ev.loss);
    assert!(ev.accuracy >= want, "{arch}: {:.4} < floor {want}", ev.accuracy);
}

#[test]
#[ignore = "slow: full training run (release build recommended)"]
fn floor_linear_10_epochs() {
    floor::<LinearArch>(Arch::Linear, 32, 0.835);
}

#[test]
#[ignore = "slow: full training run (release build recommended)"]
fn floor_mlp_10_epochs() {
    floor::<MlpArch>(Arch::Mlp, 32, 0.875);
}

#[test]
#[ignore = "slow: full training run (release build recommended)"]
fn floor_cnn_10_epochs() {
    floor::<CnnArch>(Arch::Cnn, 64, 0.915);
}
