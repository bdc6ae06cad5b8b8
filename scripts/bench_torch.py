"""The PyTorch side of `scripts/bench`: trains one of the tutorial's models with PyTorch (CPU) on the
same files, with the same architecture, optimizer, batch size and epochs as
`cargo run --release -p fashion --example bench`, and prints one JSON line with the same fields.

The loop is the fast idiomatic one, not a DataLoader per sample: the whole training set is one float32
tensor in memory, each epoch draws a permutation and slices batches by index; `zero_grad(set_to_none)`,
`F.cross_entropy` on logits, Adam (eps 1e-7, as Keras and ours). Threads: one per core, like ours.
Prediction runs under `torch.inference_mode()` in batches of 128 (as ours and Keras), softmax included.

Run by `scripts/bench --torch` in the venv it creates under target/; by hand:
    target/torch-venv/bin/python scripts/bench_torch.py --model mlp --epochs 3 --data /usr/share/datasets/fashion-mnist
"""

import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench_common import arguments, peak_rss_mb, read_idx


class Residual(nn.Module):
    """`x + F(x)`, as fashion's `Residual<F>`."""

    def __init__(self, f: nn.Module):
        super().__init__()
        self.f = f

    def forward(self, x):
        return x + self.f(x)


def block(c: int) -> nn.Module:
    """Notebook 7's residual block: two 3×3 convolutions, each with batch norm, the first with ReLU."""
    return Residual(nn.Sequential(
        nn.Conv2d(c, c, 3, padding=1), bn2d(c), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), bn2d(c),
    ))


def bn2d(c: int) -> nn.Module:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)  # Keras' (and ours) ε and momentum 0.99


def build(name: str) -> nn.Sequential:
    """The same layers as fashion::model::{LinearArch, MlpArch, CnnArch}, and notebook 7's ResNet."""
    if name == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    if name == "cnn":
        return nn.Sequential(  # input (n, 1, 28, 28): main() adds the channel axis once
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10),
        )
    if name == "resnet":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), bn2d(32),
            block(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), bn2d(64),
            block(64), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.BatchNorm1d(128, eps=1e-3, momentum=0.01), nn.ReLU(),
            nn.Linear(128, 10),
        )
    raise SystemExit(f"unknown model {name!r}: use linear, mlp, cnn or resnet")


def main():
    args = arguments()
    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count())

    def images(name):
        return torch.from_numpy(read_idx(args.data / name).astype(np.float32) / np.float32(255))

    x_train, x_test = images("train-images-idx3-ubyte"), images("t10k-images-idx3-ubyte")
    y_train = torch.from_numpy(read_idx(args.data / "train-labels-idx1-ubyte").astype(np.int64))
    y_test = torch.from_numpy(read_idx(args.data / "t10k-labels-idx1-ubyte").astype(np.int64))
    if args.model in ("cnn", "resnet"):
        x_train, x_test = x_train.unsqueeze(1), x_test.unsqueeze(1)  # (n, 1, 28, 28), a view

    model = build(args.model)
    if args.model == "resnet":  # notebook 7's optimizer, at a fixed rate
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=5e-4, eps=1e-7)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    n = x_train.shape[0]
    seconds = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(n)
        for i in range(0, n, args.batch_size):
            idx = order[i : i + args.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)

    model.eval()

    def predict():
        with torch.inference_mode():
            return torch.cat([F.softmax(model(x_test[i : i + 128]), dim=1) for i in range(0, len(x_test), 128)])

    probs = predict()  # warm-up, as for the others
    accuracy = (probs.argmax(dim=1) == y_test).float().mean().item()
    times = []
    for _ in range(args.predict_repeats):
        start = time.perf_counter()
        probs = predict()
        times.append(time.perf_counter() - start)
    assert tuple(probs.shape) == (10000, 10)
    print(json.dumps({
        "framework": f"PyTorch {torch.__version__} (CPU, {torch.get_num_threads()} threads)",
        "model": args.model,
        "batch_size": args.batch_size,
        "epoch_seconds": seconds,
        "predict_seconds": times,
        "peak_rss_mb": peak_rss_mb(),
        "test_accuracy": accuracy,
        "params": sum(p.numel() for p in model.parameters()),
    }))


if __name__ == "__main__":
    main()
