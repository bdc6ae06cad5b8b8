//! `Model`'s behaviour: learning, seeds, validation, errors, saving, dropout, optimizers, early
//! stopping and run logs.

use ndarray::{s, Array, Array1, Array3, Axis};

use super::step::{self, Batch};
use super::*;
use crate::model::{CnnArch, DeepMlpArch, DropoutOneIn, Flatten, Linear, LinearArch, MlpArch, ReLU};
use crate::Error;

/// A network defined outside the crate's list, as in a notebook cell.
type Cell = (Flatten<784>, Linear<784, 48>, ReLU, DropoutOneIn<5>, Linear<48, 10>);

/// A learnable toy problem: class c has a bright 4×4 square at a class-specific place, plus noise.
pub(crate) fn toy(n: usize, seed: u64) -> (Array3<f32>, Array1<u8>) {
    let mut rng = fashion_kernels::rng::SplitMix64(seed);
    let y: Array1<u8> = (0..n).map(|_| (rng.next_u64() % 10) as u8).collect();
    let mut x = Array::zeros((n, 28, 28));
    for (i, &c) in y.iter().enumerate() {
        let (r0, c0) = (2 + (c as usize / 5) * 12, 2 + (c as usize % 5) * 5);
        for r in 0..28 {
            for col in 0..28 {
                let noise = (rng.next_u64() % 100) as f32 / 500.0;
                let on = (r0..r0 + 4).contains(&r) && (c0..c0 + 4).contains(&col);
                x[[i, r, col]] = if on { 0.8 + noise } else { noise };
            }
        }
    }
    (x, y)
}

fn quiet<N: Network>(seed: u64) -> Model<N> {
    let mut m = Model::<N>::new(seed).unwrap();
    m.verbosity = Verbosity::Silent;
    m.compile(Adam::default());
    m
}

fn opts(epochs: usize, batch_size: usize) -> FitOptions<'static> {
    FitOptions { epochs, batch_size, ..Default::default() }
}

fn learns<N: Network>() {
    let (x, y) = toy(400, 1);
    let (vx, vy) = toy(100, 2);
    let mut m = quiet::<N>(3);
    let before = m.evaluate(&vx, &vy).unwrap();
    let h = m.fit(&x, &y, FitOptions { validation_data: Some((&vx, &vy)), ..opts(3, 32) }).unwrap();
    let after = m.evaluate(&vx, &vy).unwrap();
    let name = model::short_type_name::<N>();
    assert_eq!(h.epochs.len(), 3);
    assert!(after.loss < before.loss, "{name}: {before:?} -> {after:?}");
    assert!(after.accuracy > 0.6, "{name}: {after:?}");
    assert_eq!(h.last().unwrap().val_accuracy, Some(after.accuracy));
}

#[test]
fn every_network_learns_the_toy_problem() {
    learns::<LinearArch>();
    learns::<MlpArch>();
    learns::<DeepMlpArch>();
    learns::<CnnArch>();
    learns::<Cell>();
}

#[test]
fn same_seed_same_history_and_weights() {
    let (x, y) = toy(200, 4);
    let run = |seed| {
        let mut m = quiet::<Cell>(seed);
        let h = m.fit(&x, &y, opts(2, 16)).unwrap();
        (h.epochs.iter().map(|e| (e.loss, e.accuracy)).collect::<Vec<_>>(), m.logits(x.view()).unwrap())
    };
    let (a, b, c) = (run(5), run(5), run(6));
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
}

/// Keras' `validation_split`: the last images, before shuffling, are held out and scored.
#[test]
fn validation_split_holds_out_the_last_images() {
    let (x, y) = toy(100, 5);
    let mut a = quiet::<LinearArch>(0);
    let h = a.fit(&x, &y, FitOptions { validation_split: 0.2, ..opts(1, 16) }).unwrap();
    let (tx, ty) = (x.slice(s![..80, .., ..]).to_owned(), y.slice(s![..80]).to_owned());
    let (vx, vy) = super::validation_split(&x, &y, 0.2).unwrap();
    assert_eq!((vx.view(), vy.view()), (x.slice(s![80.., .., ..]), y.slice(s![80..])), "the same held-out images");
    let mut b = quiet::<LinearArch>(0);
    let h2 = b.fit(&tx, &ty, FitOptions { validation_data: Some((&vx, &vy)), ..opts(1, 16) }).unwrap();
    assert_eq!(h, {
        let mut h2 = h2;
        h2.epochs[0].seconds = h.epochs[0].seconds;
        h2
    });
    let both = FitOptions { validation_split: 0.2, validation_data: Some((&vx, &vy)), ..opts(1, 16) };
    assert!(a.fit(&x, &y, both).unwrap_err().to_string().contains("not both"));
    assert!(a.fit(&x, &y, FitOptions { validation_split: 1.0, ..opts(1, 16) }).is_err());
    // round(0.1 · 15) = 2 held out, as fit rounds; a split fit refuses is refused here too.
    let (x15, y15) = toy(15, 6);
    assert_eq!(super::validation_split(&x15, &y15, 0.1).unwrap().1, y15.slice(s![13..]));
    for bad in [1.0, -0.1, 0.97] {
        let e = super::validation_split(&x15, &y15, bad).unwrap_err().to_string();
        assert!(e.contains("validation_split"), "{e}");
    }
}

#[test]
fn without_shuffle_batches_go_in_order_and_history_is_keras_shaped() {
    let (x, y) = toy(64, 5);
    let mut m = quiet::<LinearArch>(0);
    let a = m.fit(&x, &y, FitOptions { shuffle: false, ..opts(1, 32) }).unwrap();
    let mut m2 = quiet::<LinearArch>(0);
    let b = m2.fit(&x, &y, FitOptions { shuffle: false, ..opts(1, 32) }).unwrap();
    assert_eq!(a.epochs[0].loss, b.epochs[0].loss);
    let lines: Vec<String> = a.to_csv().lines().map(String::from).collect();
    assert_eq!(lines[0], "epoch,loss,accuracy,val_loss,val_accuracy,seconds");
    assert!(lines[1].starts_with("1,") && lines[1].contains(",,"), "{lines:?}");
}

#[test]
fn diverging_loss_stops_fit_naming_epoch_and_batch() {
    let (x, y) = toy(256, 6);
    let mut m = quiet::<LinearArch>(0);
    m.compile(Sgd { learning_rate: 1e38, momentum: 0.0, ..Sgd::default() });
    let before = m.logits(x.view()).unwrap();
    let e = m.fit(&x, &y, opts(2, 32)).unwrap_err();
    assert!(matches!(e, Error::NonFiniteLoss { epoch: 1, .. }), "{e}");
    assert!(e.to_string().contains("lower the learning rate") && !e.to_string().contains("--lr"), "{e}");
    assert!(e.to_string().contains("batch"), "{e}");
    assert_ne!(m.logits(x.view()).unwrap(), before, "it did train before diverging");
}

#[test]
fn non_finite_pixels_are_rejected_before_training() {
    // A NaN pixel would be silently absorbed by ReLU and poison the weights: refuse it up front.
    let (mut x, y) = toy(96, 6);
    x[[50, 3, 3]] = f32::NAN;
    let mut m = quiet::<MlpArch>(0);
    let e = m.fit(&x, &y, opts(1, 32)).unwrap_err().to_string();
    assert!(e.contains("image 50"), "{e}");
}

#[test]
fn a_network_that_does_not_fit_the_images_is_refused_by_new() {
    type Wrong = (Flatten<100>, Linear<100, 10>);
    let e = Model::<Wrong>::new(0).unwrap_err();
    assert!(matches!(e, Error::Network { .. }) && e.to_string().contains("write Flatten<784>"), "{e}");
}

#[test]
fn settings_that_cannot_work_are_errors_naming_the_fix() {
    let (x, y) = toy(40, 7);
    let mut m = quiet::<LinearArch>(0);
    for (opt, want) in [
        (Optimizer::Adam(Adam { learning_rate: -1.0, ..Adam::default() }), "positive number"),
        (Optimizer::Adam(Adam { learning_rate: f64::NAN, ..Adam::default() }), "positive number"),
        (Optimizer::Sgd(Sgd { learning_rate: 0.1, momentum: 1.5, ..Sgd::default() }), "momentum"),
    ] {
        m.compile(opt);
        let e = m.fit(&x, &y, opts(1, 8)).unwrap_err().to_string();
        assert!(e.contains(want), "{opt:?}: {e}");
    }
    m.compile(Adam::default());
    assert!(m.fit(&x, &y, opts(0, 8)).unwrap_err().to_string().contains("epochs: must be at least 1"));
}

/// Weights with a NaN (from a run that diverged) are refused when loaded.
#[test]
fn weights_holding_nan_are_refused() {
    use ::safetensors::tensor::{Dtype, TensorView};
    let dir = tempfile::tempdir().unwrap();
    let mut w = vec![0f32; 10 * 784];
    w[5] = f32::NAN;
    let (wb, bb): (Vec<u8>, Vec<u8>) = (w.iter().flat_map(|v| v.to_le_bytes()).collect(), vec![0u8; 40]);
    let tensors = vec![
        ("1.weight", TensorView::new(Dtype::F32, vec![10, 784], &wb).unwrap()),
        ("1.bias", TensorView::new(Dtype::F32, vec![10], &bb).unwrap()),
    ];
    let path = dir.path().join("nan.safetensors");
    std::fs::write(&path, ::safetensors::serialize(tensors, &None).unwrap()).unwrap();
    let e = Model::<LinearArch>::load(&path).unwrap_err().to_string();
    assert!(e.contains("`1.weight` holds a NaN") && e.contains("element 5"), "{e}");
}

/// A batch whose activations would not fit in memory is refused before training, naming the largest
/// that fits; the estimate is within the measured 0.8 MB per CNN image.
#[test]
fn batches_too_large_for_memory_are_refused_naming_one_that_fits() {
    let cnn = Model::<CnnArch>::new(0).unwrap().summary();
    let per = step::bytes_per_image(&cnn);
    assert!((800_000..1_200_000).contains(&per), "{per}");
    let e = step::check_memory(&cnn, 100_000, Some(24_000_000_000)).unwrap_err().to_string();
    assert!(
        e.contains("batch_size: 100000")
            && e.contains(&format!("the largest batch that fits is {}", 12_000_000_000 / per)),
        "{e}"
    );
    assert!(step::check_memory(&cnn, 64, Some(24_000_000_000)).is_ok());
    assert!(step::check_memory(&cnn, 100_000, None).is_ok(), "unknown memory: no check");
}

#[test]
fn bad_inputs_are_errors() {
    let (x, y) = toy(10, 7);
    let mut m = Model::<LinearArch>::new(0).unwrap();
    assert!(m.fit(&x, &y, opts(1, 4)).unwrap_err().to_string().contains("compile"));
    m.compile(Sgd { learning_rate: 0.1, momentum: 0.9, ..Sgd::default() });
    assert!(m.fit(&x, &y, opts(1, 0)).is_err());
    let y9 = y.slice(s![..9]).to_owned();
    assert!(m.fit(&x, &y9, opts(1, 4)).is_err());
    let mut y10 = y.clone();
    y10[0] = 10;
    assert!(m.fit(&x, &y10, opts(1, 4)).is_err());
    let wrong = Array3::<f32>::zeros((2, 27, 28));
    assert!(m.predict(&wrong).unwrap_err().to_string().contains("batch of one"));
    m.fit(&x, &y, opts(1, 4)).unwrap();
}

#[test]
fn predict_gives_probabilities_and_classes_agree() {
    let (x, _) = toy(30, 8);
    let m = quiet::<CnnArch>(1);
    let p = m.predict(&x).unwrap();
    assert_eq!(p.shape(), &[30, 10]);
    for row in p.outer_iter() {
        assert!((row.sum() - 1.0).abs() < 1e-5);
    }
    let c = m.predict_classes(&x).unwrap();
    for (row, &k) in p.outer_iter().zip(&c) {
        assert_eq!(argmax(row.as_slice().unwrap()), k as usize);
    }
    let one = m.predict_one(x.index_axis(Axis(0), 4)).unwrap();
    assert!(one.iter().zip(p.row(4)).all(|(a, b)| (a - b).abs() < 1e-6));
}

fn round_trip<N: Network>(dir: &std::path::Path, name: &str) {
    let (x, y) = toy(64, 9);
    let mut m = quiet::<N>(2);
    m.fit(&x, &y, opts(1, 32)).unwrap();
    let path = dir.join(format!("{name}.safetensors"));
    m.save(&path).unwrap();
    let loaded = Model::<N>::load(&path).unwrap();
    assert_eq!(loaded.predict(&x).unwrap(), m.predict(&x).unwrap(), "{name}");
}

#[test]
fn save_load_round_trip_and_wrong_network() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    round_trip::<LinearArch>(d, "linear");
    round_trip::<MlpArch>(d, "mlp");
    round_trip::<CnnArch>(d, "cnn");
    round_trip::<Cell>(d, "cell");
    let e = Model::<MlpArch>::load(d.join("cnn.safetensors")).unwrap_err();
    assert!(matches!(e, Error::WeightsMismatch { .. }), "{e}");
    let e = Model::<MlpArch>::load(d.join("cell.safetensors")).unwrap_err().to_string();
    assert!(e.contains(r#"the file has tensors ["1.bias", "1.weight", "4.bias", "4.weight"]"#), "{e}");
    let e = Model::<crate::model::WideArch>::load(d.join("mlp.safetensors")).unwrap_err();
    assert!(e.to_string().contains("`1.weight` has shape [128, 784], expected [256, 784]"), "{e}");
    // A failed load leaves the model unchanged.
    let (x, _) = toy(8, 1);
    let mut linear = Model::<LinearArch>::load(d.join("linear.safetensors")).unwrap();
    let before = linear.predict(&x).unwrap();
    assert!(linear.load_weights(d.join("mlp.safetensors")).is_err());
    assert_eq!(linear.predict(&x).unwrap(), before);
    std::fs::write(d.join("junk.safetensors"), b"not weights").unwrap();
    assert!(matches!(Model::<LinearArch>::load(d.join("junk.safetensors")).unwrap_err(), Error::Weights { .. }));
    assert!(matches!(Model::<LinearArch>::load(d.join("none")).unwrap_err(), Error::Io { .. }));
    // Larger than the network's tensors (here: the CNN's weights into the linear model), or not a
    // file at all: refused before reading.
    let e = Model::<LinearArch>::load(d.join("cnn.safetensors")).unwrap_err().to_string();
    assert!(e.contains("this network's weights take 31400"), "{e}");
    let e = Model::<LinearArch>::load("/dev/zero").unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

/// Dropout is active in `fit` only: inference gives the same output twice, training steps differ
/// from the same network without dropout.
#[test]
fn dropout_acts_while_training_only() {
    type NoDrop = (Flatten<784>, Linear<784, 48>, ReLU, Linear<48, 10>);
    let (x, y) = toy(64, 3);
    let m = quiet::<Cell>(4);
    assert_eq!(m.logits(x.view()).unwrap(), m.logits(x.view()).unwrap());
    let (mut a, mut b) = (quiet::<Cell>(4), quiet::<NoDrop>(4));
    assert_eq!(a.logits(x.view()).unwrap(), b.logits(x.view()).unwrap(), "same weights");
    let ha = a.fit(&x, &y, opts(1, 64)).unwrap();
    let hb = b.fit(&x, &y, opts(1, 64)).unwrap();
    assert_ne!(ha.epochs[0].loss, hb.epochs[0].loss);
}

/// The Adam, AdamW and SGD kernels, with and without weight decay, against dfdx's own optimizers
/// (`WeightDecay::L2` for the coupled decay, `Decoupled` for AdamW) on the same network and batches.
#[test]
fn optimizers_match_dfdx() {
    use dfdx::optim::Optimizer as _;
    let (x, y) = toy(64, 11);
    let l2 = |wd: f64| (wd != 0.0).then_some(WeightDecay::L2(wd));
    for config in [
        Optimizer::Adam(Adam { learning_rate: 1e-2, ..Adam::default() }),
        Optimizer::Adam(Adam { learning_rate: 1e-2, weight_decay: 0.05 }),
        Optimizer::AdamW(AdamW { learning_rate: 1e-2, weight_decay: 0.3 }),
        Optimizer::Sgd(Sgd { learning_rate: 0.1, momentum: 0.9, ..Sgd::default() }),
        Optimizer::Sgd(Sgd { learning_rate: 0.1, momentum: 0.9, weight_decay: 0.02 }),
    ] {
        let mut ours = quiet::<MlpArch>(1);
        ours.compile(config);
        ours.fit(&x, &y, FitOptions { shuffle: false, ..opts(1, 16) }).unwrap();

        let reference = Model::<MlpArch>::new(1).unwrap();
        let dev = reference.device().clone();
        let mut net = reference.network().clone();
        let decay = match config {
            Optimizer::AdamW(a) => Some(WeightDecay::Decoupled(a.weight_decay)),
            other => l2(other.weight_decay()),
        };
        let mut adam =
            dfdx::optim::Adam::new(&net, AdamConfig { lr: 1e-2, betas: [0.9, 0.999], eps: 1e-7, weight_decay: decay });
        let mut sgd = dfdx::optim::Sgd::new(
            &net,
            SgdConfig { lr: 0.1, momentum: Some(Momentum::Classic(0.9)), weight_decay: decay },
        );
        let mut grads = net.alloc_grads();
        for start in (0..64).step_by(16) {
            let idx: Vec<usize> = (start..start + 16).collect();
            let batch = Batch::gather(&dev, x.as_slice().unwrap(), y.as_slice().unwrap(), &idx).unwrap();
            let logits = net.forward_mut(batch.images.traced(grads));
            grads = cross_entropy_with_logits_loss(logits, batch.targets).backward();
            match config {
                Optimizer::Adam(_) | Optimizer::AdamW(_) => adam.update(&mut net, &grads).unwrap(),
                Optimizer::Sgd(_) => sgd.update(&mut net, &grads).unwrap(),
            }
            net.zero_grads(&mut grads);
        }
        let (a, b) = (ours.network().1.weight.as_vec(), net.1.weight.as_vec());
        let diff = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "{config:?}: max difference {diff}");
        let plain = Model::<MlpArch>::new(1).unwrap().network().1.weight.as_vec();
        assert_ne!(a, plain, "trained");
    }
    let bad = Optimizer::AdamW(AdamW { learning_rate: 1e-3, weight_decay: -1.0 }).check().unwrap_err();
    assert!(bad.to_string().contains("weight_decay"), "{bad}");
}

/// Keras' `EarlyStopping`: an impossible `min_delta` makes every epoch after the first a
/// non-improvement, so patience decides when training stops.
#[test]
fn early_stopping_stops_after_patience_and_restores_the_best_weights() {
    let (x, y) = toy(200, 12);
    let never = |patience, restore| EarlyStopping {
        monitor: Monitor::Accuracy,
        patience,
        min_delta: 1.0,
        restore_best_weights: restore,
    };
    let mut m = quiet::<MlpArch>(1);
    let h = m.fit(&x, &y, FitOptions { early_stopping: Some(never(0, false)), ..opts(10, 32) }).unwrap();
    assert_eq!((h.epochs.len(), h.best_epoch, h.stopped_early), (2, Some(1), true));
    let mut m = quiet::<MlpArch>(1);
    let h = m.fit(&x, &y, FitOptions { early_stopping: Some(never(2, true)), ..opts(10, 32) }).unwrap();
    assert_eq!((h.epochs.len(), h.best_epoch, h.stopped_early), (3, Some(1), true));
    let mut one = quiet::<MlpArch>(1);
    one.fit(&x, &y, opts(1, 32)).unwrap();
    assert_eq!(m.logits(x.view()).unwrap(), one.logits(x.view()).unwrap(), "the weights after epoch 1 are back");
    // Improving all along: no stop.
    let mut m = quiet::<MlpArch>(1);
    let keep = EarlyStopping { monitor: Monitor::Loss, patience: 0, ..Default::default() };
    let h = m.fit(&x, &y, FitOptions { early_stopping: Some(keep), ..opts(3, 32) }).unwrap();
    assert_eq!((h.epochs.len(), h.best_epoch, h.stopped_early), (3, Some(3), false));
    // Monitoring validation loss needs validation data.
    let e = m.fit(&x, &y, FitOptions { early_stopping: Some(EarlyStopping::default()), ..opts(3, 32) }).unwrap_err();
    assert!(e.to_string().contains("validation_split"), "{e}");
}

#[test]
fn a_run_log_is_written_whole_and_read_back() {
    let (x, y) = toy(300, 13);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("runs");
    let mut m = quiet::<Cell>(2);
    let log = RunLog { batch_loss_every: 2, ..RunLog::new(&root, "cell-a").with_weights().param("train_subset", 300) };
    let h = m.fit(&x, &y, FitOptions { validation_split: 0.2, run: Some(log), ..opts(2, 32) }).unwrap();
    let folder = root.join("cell-a");
    for f in ["run.json", "history.csv", "model.safetensors"] {
        assert!(folder.join(f).is_file(), "{f}");
    }
    for sub in ["train", "validation"] {
        let files: Vec<_> = std::fs::read_dir(folder.join(sub)).unwrap().collect();
        assert_eq!(files.len(), 1, "one event file in {sub}");
    }
    let run = crate::runs::load(&folder).unwrap();
    assert_eq!(run.history.epochs.len(), 2);
    assert!((run.history.epochs[1].val_loss.unwrap() - h.epochs[1].val_loss.unwrap()).abs() < 1e-6);
    assert_eq!(run.record.network, "(Flatten<784>, Linear<784, 48>, ReLU, DropoutOneIn<5>, Linear<48, 10>)");
    assert_eq!(run.record.train_images, 240);
    assert_eq!(run.record.params["train_subset"], "300");
    let back = Model::<Cell>::load(folder.join("model.safetensors")).unwrap();
    assert_eq!(back.logits(x.view()).unwrap(), m.logits(x.view()).unwrap());

    // A second run is listed first; one of the same name replaces the old one.
    std::thread::sleep(std::time::Duration::from_millis(2));
    let mut m2 = quiet::<LinearArch>(3);
    m2.fit(&x, &y, FitOptions { run: Some(RunLog::new(&root, "linear-b")), ..opts(1, 32) }).unwrap();
    let table = crate::runs::table(&root).unwrap();
    assert_eq!(table.height(), 2);
    let names: Vec<Option<&str>> = table.column("name").unwrap().str().unwrap().iter().collect();
    assert_eq!(names, [Some("linear-b"), Some("cell-a")]);
    assert_eq!(table.column("train_subset").unwrap().str().unwrap().get(1), Some("300"));
    m2.fit(&x, &y, FitOptions { run: Some(RunLog::new(&root, "linear-b")), ..opts(3, 32) }).unwrap();
    assert_eq!(crate::runs::load(root.join("linear-b")).unwrap().history.epochs.len(), 3);

    // A fit that fails leaves no run behind, not even a hidden one (only the runs' lock files).
    let mut bad = quiet::<LinearArch>(0);
    bad.compile(Sgd { learning_rate: 1e38, momentum: 0.0, ..Sgd::default() });
    assert!(bad.fit(&x, &y, FitOptions { run: Some(RunLog::new(&root, "diverged")), ..opts(2, 32) }).is_err());
    let left: Vec<String> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let mut folders: Vec<&str> = left.iter().map(String::as_str).filter(|f| !f.ends_with(".lock")).collect();
    folders.sort();
    assert_eq!(folders, ["cell-a", "linear-b"], "{left:?}");
    assert!(bad
        .fit(&x, &y, FitOptions { run: Some(RunLog::new(&root, "../x")), ..opts(1, 32) })
        .unwrap_err()
        .to_string()
        .contains("plain folder name"));
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_checkpoint_puts_back_weights_and_moments_and_refuses_other_settings() {
    use super::checkpoint::{self, State};
    let (x, y) = toy(200, 4);
    let mut m = quiet::<Cell>(5);
    let options = FitOptions { run: Some(RunLog::new("unused", "cell").with_checkpoints()), ..opts(1, 32) };
    m.fit(&x, &y, FitOptions { run: None, ..options.clone() }).unwrap();
    let data = step::FitData::new(&x, &y, &options).unwrap();
    let settings = m.run_record(&options, &data);
    let state = State {
        format: checkpoint::FORMAT,
        settings: settings.clone(),
        epochs_completed: 1,
        model_epochs: 1,
        steps: 7,
        batch_loss: (0.5, 7),
        dropout_draws: 7,
        optimizer_step: m.opt.as_ref().unwrap().state().0,
        history: Vec::new(),
        best_epoch: None,
        stopper: Some((Some(0.25), 1)),
        best_weights: false,
        plateau: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.safetensors");
    checkpoint::save(&path, &m.net, m.opt.as_ref().unwrap().state().1, None, &state).unwrap();

    let mut fresh = quiet::<Cell>(6);
    let loaded = checkpoint::load(&path, &mut fresh.net, &settings).unwrap();
    assert_eq!(fresh.logits(x.view()).unwrap(), m.logits(x.view()).unwrap());
    assert_eq!(loaded.state, state);
    assert_eq!(loaded.optimizer.as_slice(), m.opt.as_ref().unwrap().state().1);

    // Another fit's settings: refused, naming what differs; the network is unchanged.
    let other = RunRecord { epochs: 3, ..settings.clone() };
    let before = fresh.logits(x.view()).unwrap();
    let mut untouched = quiet::<Cell>(6);
    let e = checkpoint::load(&path, &mut untouched.net, &other).err().unwrap();
    assert!(matches!(e, Error::Setting { setting: "run", .. }), "{e}");
    assert!(e.to_string().contains("epochs: 1 then, 3 now") && e.to_string().contains("delete"), "{e}");
    assert_eq!(untouched.logits(x.view()).unwrap(), quiet::<Cell>(6).logits(x.view()).unwrap());
    assert_eq!(fresh.logits(x.view()).unwrap(), before);

    // A damaged file: an error naming it, never a panic.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = checkpoint::load(&path, &mut untouched.net, &settings).err().unwrap();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}

/// A schedule sets the rate of every batch: the history records each epoch's, the run log writes them
/// to `history.csv`, `run.json` and TensorBoard, and the compiled rate is back after the fit. A
/// schedule at a constant rate trains exactly as no schedule.
#[test]
fn schedules_set_the_rate_of_each_epoch_and_are_logged() {
    let (x, y) = toy(128, 21);
    let dir = tempfile::tempdir().unwrap();
    let step = Schedule::Step { every: 1, factor: 0.5 };
    let mut m = quiet::<MlpArch>(4);
    let run = RunLog::new(dir.path(), "stepped");
    let h = m.fit(&x, &y, FitOptions { lr_schedule: Some(step), run: Some(run), ..opts(3, 32) }).unwrap();
    let rates: Vec<f64> = h.epochs.iter().map(|e| e.learning_rate.unwrap()).collect();
    assert_eq!(rates, [1e-3, 5e-4, 2.5e-4]);
    assert_eq!(m.optimizer().unwrap().learning_rate(), 1e-3, "the compiled rate is back");
    let csv = std::fs::read_to_string(dir.path().join("stepped/history.csv")).unwrap();
    assert!(csv.lines().next().unwrap().ends_with(",learning_rate"), "{csv}");
    let json = std::fs::read_to_string(dir.path().join("stepped/run.json")).unwrap();
    assert!(json.contains("\"lr_schedule\": \"Step { every: 1, factor: 0.5 }\""), "{json}");
    let flat = Schedule::Exponential { decay_steps: 10, decay_rate: 1.0, staircase: false };
    let mut a = quiet::<MlpArch>(4);
    let mut b = quiet::<MlpArch>(4);
    let ha = a.fit(&x, &y, FitOptions { lr_schedule: Some(flat), ..opts(2, 32) }).unwrap();
    let hb = b.fit(&x, &y, opts(2, 32)).unwrap();
    assert_eq!(ha.epochs[1].loss, hb.epochs[1].loss);
    let plateau = Schedule::ReduceOnPlateau(ReduceOnPlateau::default());
    let e = a.fit(&x, &y, FitOptions { lr_schedule: Some(plateau), ..opts(1, 32) }).unwrap_err();
    assert!(e.to_string().contains("validation_split"), "{e}");
}

/// Augmentation changes what the model trains on but not what it is scored on, a seed fixes it (two
/// fits, and a fit on one thread, give the same weights), and bad settings are refused.
#[test]
fn augmentation_is_seeded_and_training_only() {
    let (x, y) = toy(96, 22);
    let aug = Augment { flip: true, shift: 2, erase: 0.3 };
    let fit = |augment: Augment| {
        let mut m = quiet::<MlpArch>(9);
        let h = m.fit(&x, &y, FitOptions { augment, ..opts(2, 32) }).unwrap();
        (h, m.network().1.weight.as_vec())
    };
    let (plain, w0) = fit(Augment::default());
    let (a1, w1) = fit(aug);
    let (a2, w2) = fit(aug);
    assert_ne!(plain.epochs[1].loss, a1.epochs[1].loss);
    assert_ne!(w0, w1);
    let losses = |h: &History| h.epochs.iter().map(|e| e.loss).collect::<Vec<_>>();
    assert_eq!(losses(&a1), losses(&a2), "same seed, same run");
    assert!(w1 == w2, "same seed, same weights");
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let (_, w3) = one.install(|| fit(aug));
    assert!(w1 == w3, "the same weights on one thread");
    let mut m = quiet::<MlpArch>(9);
    let e = m.fit(&x, &y, FitOptions { augment: Augment { erase: 1.5, ..aug }, ..opts(1, 32) }).unwrap_err();
    assert!(e.to_string().contains("erase"), "{e}");
}

/// Label smoothing trains against `1 - ε + ε/10` and `ε/10`: the targets of a batch sum to one, a
/// smoothed fit moves the weights elsewhere and keeps its logits smaller, the validation loss stays plain
/// cross-entropy (the same as `evaluate`'s), and ε outside [0, 1) is refused.
#[test]
fn label_smoothing_softens_the_targets_only_while_training() {
    let dev = Dev::seed_from_u64(0);
    let (x, y) = toy(64, 23);
    let xs: Vec<f32> = x.iter().copied().collect();
    let ys: Vec<u8> = y.to_vec();
    let batch = step::Batch::gather_augmented(&dev, &xs, &ys, &[0, 1, 2], None, 0.1).unwrap();
    let t = batch.targets.as_vec();
    for (row, &label) in t.chunks(10).zip(&batch.labels) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(
            (row[label as usize] - 0.91).abs() < 1e-6 && row.iter().filter(|&&v| (v - 0.01).abs() < 1e-6).count() == 9
        );
    }
    let (vx, vy) = toy(64, 24);
    let fit = |eps: f64| {
        let mut m = quiet::<MlpArch>(4);
        let h = m
            .fit(&x, &y, FitOptions { label_smoothing: eps, validation_data: Some((&vx, &vy)), ..opts(8, 16) })
            .unwrap();
        let logits = m.logits(x.view()).unwrap();
        (h, m.evaluate(&vx, &vy).unwrap(), logits.iter().map(|v| v.abs()).fold(0f32, f32::max))
    };
    let (plain, _, plain_max) = fit(0.0);
    let (smooth, eval, smooth_max) = fit(0.1);
    assert_ne!(plain.epochs[0].loss, smooth.epochs[0].loss);
    assert!(smooth_max < plain_max, "smaller logits: {smooth_max} vs {plain_max}");
    let val = smooth.last().unwrap().val_loss.unwrap();
    assert!((val - eval.loss).abs() < 1e-6 * val.max(1.0), "validation loss {val} is evaluate's {}", eval.loss);
    let mut m = quiet::<MlpArch>(4);
    let e = m.fit(&x, &y, FitOptions { label_smoothing: 1.0, ..opts(1, 16) }).unwrap_err();
    assert!(e.to_string().contains("label_smoothing"), "{e}");
}
