"""Run logs written by `fashion train` (the same code as `fit` with a `RunLog` in a notebook), read by
other programs: TensorBoard's own event reader, and `fashion runs` after a run was killed.

Run with: scripts/test (or `source scripts/notebook-env; python -m pytest tests/test_runs.py`).
"""
import csv
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FASHION = ROOT / "target" / "release" / "fashion"


@pytest.fixture(scope="module", autouse=True)
def built():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "fashion"], cwd=ROOT, check=True)


def train(out, *args, **kw):
    return subprocess.Popen(
        [FASHION, "train", "--model", "linear", "--out", str(out), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw,
    )


def test_tensorboard_reads_the_same_values_as_history_csv(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "runs" / "linear"
    p = train(run, "--epochs", "3", "--train-subset", "6000")
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
    with open(run / "history.csv") as f:
        history = list(csv.DictReader(f))
    assert len(history) == 3
    for sub, prefix in [("train", ""), ("validation", "val_")]:
        acc = EventAccumulator(str(run / sub))
        acc.Reload()
        for tag, column in [("epoch_loss", "loss"), ("epoch_accuracy", "accuracy")]:
            events = acc.Scalars(tag)
            assert [e.step for e in events] == [1, 2, 3]
            for e, row in zip(events, history):
                assert e.value == pytest.approx(float(row[prefix + column]), abs=1e-5), (sub, tag)
    batches = EventAccumulator(str(run / "train"))
    batches.Reload()
    steps = [e.step for e in batches.Scalars("batch_loss")]
    # 6000 images less the 10 % validation split, batches of 32: 169 per epoch; a point per 100 batches.
    assert steps == list(range(100, 3 * 169 + 1, 100))


def test_a_killed_run_is_never_listed_as_complete(tmp_path):
    runs = tmp_path / "runs"
    p = train(runs / "killed", "--epochs", "1000", "--train-subset", "3000")
    deadline = time.time() + 120
    while time.time() < deadline and not any(runs.glob(".killed.tmp-*/train")):
        time.sleep(0.1)
    time.sleep(1.0)  # some epochs in
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert any(runs.glob(".killed.tmp-*")), "the run was still being written"
    listed = subprocess.run([FASHION, "runs", "--dir", str(runs)], capture_output=True, text=True, check=True)
    assert "no runs" in listed.stdout, listed.stdout
    # A complete run next to the remains of the killed one is listed alone.
    p = train(runs / "done", "--epochs", "1", "--train-subset", "3000")
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
    listed = subprocess.run([FASHION, "runs", "--dir", str(runs)], capture_output=True, text=True, check=True)
    lines = listed.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("done"), listed.stdout


def test_an_unwritable_out_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    p = train(blocker / "run", "--epochs", "50")
    out, _ = p.communicate(timeout=600)
    assert p.returncode != 0, out
    assert "Epoch 1/50" not in out and "cannot access" in out, out
