"""What the anchors of `scripts/bench` (bench_keras.py, bench_torch.py) share: their command line,
reading the data files as keras.datasets.fashion_mnist does, and the peak memory of the process."""

import argparse
import gzip
from pathlib import Path

import numpy as np


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally .gz) as a numpy array, as keras.datasets.fashion_mnist reads it."""
    for candidate in (path.with_name(path.name + ".gz"), path):
        if candidate.exists():
            opener = gzip.open if candidate.suffix == ".gz" else open
            with opener(candidate, "rb") as f:
                raw = f.read()
            dims = raw[3]
            shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
            return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
    raise FileNotFoundError(path)


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def arguments():
    """The command line both anchors take (the same as examples/bench.rs)."""
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--predict-repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args()
