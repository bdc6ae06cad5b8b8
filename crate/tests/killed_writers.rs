//! Files are replaced whole or not at all: a child process that keeps saving model weights (two models
//! in turn) and writing a history is killed with SIGKILL at random moments, many times; after each kill
//! the files load and hold one of the complete versions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fashion::prelude::*;

fn models() -> [Model<MlpArch>; 2] {
    [Model::new(1).unwrap(), Model::new(2).unwrap()]
}

fn history(n: usize) -> History {
    let row = |e| fashion::train::EpochLog {
        epoch: e,
        loss: 1.0,
        accuracy: 0.5,
        val_loss: None,
        val_accuracy: None,
        seconds: 0.1,
        learning_rate: None,
    };
    History { epochs: (1..=n).map(row).collect(), ..Default::default() }
}

/// The child: saves the two models and two histories in turn, forever (until killed).
#[test]
#[ignore = "run by killed_writers_leave_whole_files, in a child process"]
fn child_writer() {
    let Some(dir) = std::env::var_os("KILLED_WRITERS_DIR").map(PathBuf::from) else { return };
    let models = models();
    for i in 0.. {
        models[i % 2].save(dir.join("model.safetensors")).unwrap();
        history(1000 + 1000 * (i % 2)).write_csv(dir.join("history.csv")).unwrap();
    }
}

fn check(dir: &Path, x: &Array3<f32>, want: &[Array2<f32>; 2]) {
    let loaded = Model::<MlpArch>::load(dir.join("model.safetensors")).expect("the weights load");
    let p = loaded.predict(x).unwrap();
    assert!(p == want[0] || p == want[1], "the weights are one of the two saved models");
    let csv = dir.join("history.csv");
    let h = History::from_csv(&std::fs::read_to_string(&csv).unwrap(), &csv).expect("the history parses");
    assert!(h.epochs.len() == 1000 || h.epochs.len() == 2000, "{} rows", h.epochs.len());
}

#[test]
fn killed_writers_leave_whole_files() {
    let dir = tempfile::tempdir().unwrap();
    let x = Array3::<f32>::from_shape_fn((4, 28, 28), |(i, r, c)| ((i + r * c) % 7) as f32 / 7.0);
    let want = models().map(|m| m.predict(&x).unwrap());
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..15 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "child_writer", "--nocapture"])
            .env("KILLED_WRITERS_DIR", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait for the first complete save, then a pseudo-random 0–200 ms more.
        while !(dir.path().join("model.safetensors").exists() && dir.path().join("history.csv").exists()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 200));
        child.kill().unwrap();
        child.wait().unwrap();
        check(dir.path(), &x, &want);
    }
}
