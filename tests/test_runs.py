"""Run logs written by `fashion train` (the same code as `fit` with a `RunLog` in a notebook), read by
other programs: TensorBoard's own event reader, and `fashion runs` after a run was killed.

Run with: scripts/test (or `source scripts/notebook-env; python -m pytest tests/test_runs.py`).
"""
import csv
import json
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
    while time.time() < deadline and not any(runs.glob(".killed.running/train")):
        time.sleep(0.1)
    time.sleep(1.0)  # some epochs in
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert any(runs.glob(".killed.running")), "the run was still being written"
    listed = subprocess.run([FASHION, "runs", "--dir", str(runs)], capture_output=True, text=True, check=True)
    assert "no runs" in listed.stdout, listed.stdout
    # A complete run next to the remains of the killed one is listed alone.
    p = train(runs / "done", "--epochs", "1", "--train-subset", "3000")
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
    listed = subprocess.run([FASHION, "runs", "--dir", str(runs)], capture_output=True, text=True, check=True)
    lines = listed.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("done"), listed.stdout


CNN = ["--model", "cnn", "--epochs", "4", "--train-subset", "2000", "--batch-size", "64", "--checkpoint"]


def columns(run):
    """history.csv without the seconds (wall-clock time differs from run to run)."""
    with open(run / "history.csv") as f:
        return [row[:-1] for row in csv.reader(f)]


def interrupted(out, sig):
    """Starts the checkpointed CNN run (it has dropout: a random stream to restore) and sends `sig` as
    soon as epoch 3 has started, that is after epoch 2's checkpoint. No sleep: on a fast machine an
    epoch of this run takes under 0.3 s, and a signal sent later lands in epoch 4."""
    p = subprocess.Popen([FASHION, "train", "--out", str(out), *CNN], stdout=subprocess.PIPE, text=True)
    seen = ""
    for line in p.stdout:
        seen += line
        if line.startswith("Epoch 3/4"):
            p.send_signal(sig)
    p.wait(timeout=600)
    return p.returncode, seen


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("whole") / "cnn"
    resume(run)  # the same command, with nothing to resume
    return run


def resume(run):
    p = subprocess.run([FASHION, "train", "--out", str(run), *CNN], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_a_killed_run_resumes_to_the_same_bytes(tmp_path, uninterrupted):
    run = tmp_path / "runs" / "cnn"
    rc, _ = interrupted(run, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    assert (tmp_path / "runs" / ".cnn.running" / "checkpoint.safetensors").is_file()
    out = resume(run)
    assert "Resuming run \"cnn\" from its checkpoint after epoch 2/4" in out, out
    assert (run / "model.safetensors").read_bytes() == (uninterrupted / "model.safetensors").read_bytes()
    assert columns(run) == columns(uninterrupted)
    assert not (run / "checkpoint.safetensors").exists(), "a completed run drops its checkpoint"
    listed = subprocess.run([FASHION, "runs", "--dir", str(tmp_path / "runs")], capture_output=True, text=True, check=True)
    assert len(listed.stdout.strip().splitlines()) == 2, listed.stdout  # one run, not two


def test_ctrl_c_stops_training_logs_the_run_as_interrupted_and_it_resumes(tmp_path, uninterrupted):
    run = tmp_path / "runs" / "cnn"
    rc, out = interrupted(run, signal.SIGINT)
    assert rc == 0, out
    assert "Stopped in epoch 3/4 after batch" in out, out
    record = json.loads((run / "run.json").read_text())
    assert (record["interrupted"], record["epochs_run"]) == (True, 2), record
    assert len(columns(run)) == 1 + 2
    out = resume(run)
    assert "from its checkpoint after epoch 2/4" in out, out
    assert (run / "model.safetensors").read_bytes() == (uninterrupted / "model.safetensors").read_bytes()
    assert columns(run) == columns(uninterrupted)
    assert json.loads((run / "run.json").read_text())["interrupted"] is False


def test_an_unwritable_out_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    p = train(blocker / "run", "--epochs", "50")
    out, _ = p.communicate(timeout=600)
    assert p.returncode != 0, out
    assert "Epoch 1/50" not in out and "cannot access" in out, out
