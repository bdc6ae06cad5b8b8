//! Same seed, same bytes — whatever the number of threads: a short CNN and MLP training run in a
//! child process with 1, 2 and 3 rayon threads must write identical weights and identical losses.
//! (Needs the real dataset, as `real_data.rs`.)

use std::path::Path;
use std::process::Command;

fn train(model: &str, threads: usize, out: &Path) -> (Vec<u8>, Vec<String>) {
    let status = Command::new(env!("CARGO_BIN_EXE_fashion"))
        .args([
            "train",
            "--model",
            model,
            "--epochs",
            "2",
            "--train-subset",
            "640",
            "--validation-split",
            "0.25",
            "--out",
        ])
        .arg(out)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let weights = std::fs::read(out.join("model.safetensors")).unwrap();
    // history.csv without the seconds column.
    let history = std::fs::read_to_string(out.join("history.csv")).unwrap();
    let rows = history.lines().map(|l| l.rsplit_once(',').unwrap().0.to_string()).collect();
    (weights, rows)
}

#[test]
fn same_seed_same_weights_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    for model in ["cnn", "mlp"] {
        let runs: Vec<_> =
            [1, 2, 3].iter().map(|&t| train(model, t, &dir.path().join(format!("{model}-{t}")))).collect();
        assert_eq!(runs[0].1.len(), 3, "{model}: header and two epochs");
        for (t, run) in [2, 3].iter().zip(&runs[1..]) {
            assert_eq!(run.1, runs[0].1, "{model}: history with {t} threads differs from 1 thread");
            assert!(run.0 == runs[0].0, "{model}: weights with {t} threads differ from 1 thread");
        }
    }
}
