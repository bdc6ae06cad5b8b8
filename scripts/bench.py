"""Side-by-side benchmark table: ours (examples/bench.rs) and, with --keras / --torch, Keras
(scripts/bench_keras.py) and PyTorch (scripts/bench_torch.py) on the same data, models and settings.

Run through `scripts/bench`, which builds the Rust side and creates the venvs. Each model is trained
in its own process (so peak memory is per model), ours then Keras then PyTorch, model after model.
Ratios are ours / anchor from this one run, of the minima and of the medians; a target counts as met
only when both meet it.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ROOT / "target" / "release" / "examples" / "bench"
ANCHORS = {  # name: (python of its venv, script, column title)
    "keras": (ROOT / "target" / "keras-venv" / "bin" / "python", ROOT / "scripts" / "bench_keras.py", "Keras"),
    "torch": (ROOT / "target" / "torch-venv" / "bin" / "python", ROOT / "scripts" / "bench_torch.py", "PyTorch"),
}
BATCH = {"linear": 32, "mlp": 32, "cnn": 64, "resnet": 128}
# Targets, ours / anchor in the same run (None: shown, no target).
TARGETS = {
    "keras": {"epoch_seconds": {"linear": 0.25, "mlp": 0.15, "cnn": 0.65, "resnet": 0.5},
              "predict_seconds": {"linear": 0.2, "mlp": 0.2, "cnn": 0.25},
              "peak_rss_mb": {"linear": 0.5, "mlp": 0.5, "cnn": 0.5}},
    "torch": {"epoch_seconds": {"cnn": 0.5, "resnet": 0.5}},
}
PEAK_SHARE = {"mlp": 0.40}  # training at least this share of the machine's measured peak


def flops_per_image(model):
    """Multiply-adds × 2 of one forward pass, as a direct convolution / dense product computes them."""
    conv1 = 28 * 28 * 32 * 9 * 1 * 2
    conv2 = 14 * 14 * 64 * 9 * 32 * 2
    if model == "resnet":  # stem, two 32-convolutions at 14×14, widening, two 64-convolutions at 7×7, head
        rest = 2 * (14 * 14 * 32 * 9 * 32 * 2) + conv2 + 2 * (7 * 7 * 64 * 9 * 64 * 2) + (3136 * 128 + 128 * 10) * 2
        return conv1 + rest, 2 * conv1 + 3 * rest
    dense = {"linear": 784 * 10 * 2, "mlp": (784 * 128 + 128 * 10) * 2, "cnn": (3136 * 128 + 128 * 10) * 2}[model]
    if model != "cnn":
        return dense, 3 * dense - 2 * 784 * (10 if model == "linear" else 128)  # no gradient for the images
    return conv1 + conv2 + dense, 2 * conv1 + 3 * conv2 + 3 * dense  # conv1: no input gradient


def run_json(cmd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(map(str, cmd))}")
    return json.loads(lines[-1])


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def cpu_ghz():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":", 1)[1]) / 1000
    return float("nan")


def fmt_s(values):
    return f"{min(values):.3f} / {statistics.median(values):.3f}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--keras", action="store_true")
    p.add_argument("--torch", action="store_true")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--models", default="linear,mlp,cnn,resnet")
    p.add_argument("--json-out", type=Path, help="also write all measurements to this file")
    p.add_argument("--from-json", type=Path, help="print the table of a run saved with --json-out")
    args = p.parse_args()
    if args.from_json:
        report(json.loads(args.from_json.read_text()))
        return
    models = [m for m in args.models.split(",") if m]
    raw = {
        "date": str(datetime.date.today()),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ghz": cpu_ghz(),
        "epochs": args.epochs,
        "peak_gflops": run_json([OURS, "--peak", "--json"])["gemm_gflops"],
        "runs": [],
    }
    for model in models:
        common = ["--model", model, "--epochs", str(args.epochs), "--batch-size", str(BATCH[model])]
        print(f"… {model}: ours", file=sys.stderr, flush=True)
        ours = run_json([OURS, *common, "--json"])
        run = {"ours": ours}
        for name, (python, script, title) in ANCHORS.items():
            if getattr(args, name):
                print(f"… {model}: {title}", file=sys.stderr, flush=True)
                run[name] = run_json([python, script, *common, "--data", ours["data"]])
        raw["runs"].append(run)
    if args.json_out:
        args.json_out.write_text(json.dumps(raw, indent=1))
    report(raw)


def report(raw):
    runs = raw["runs"]
    anchors = [a for a in ANCHORS if runs[0].get(a)]
    print(f"Fashion-MNIST benchmark, {raw['date']}: {raw['cpu']}, {raw['cores']} cores; "
          f"{raw['epochs']} epochs, Adam 1e-3 (resnet: AdamW 1e-3, weight decay 5e-4), data {runs[0]['ours']['data']}")
    print("ours: " + runs[0]["ours"]["framework"] + "".join(f"; {ANCHORS[a][2]}: {runs[0][a]['framework']}" for a in anchors))
    header = f"{'model':7} {'figure':26} {'ours':>15}" + "".join(f" {ANCHORS[a][2]:>15}" for a in anchors) \
        + "".join(f" {'ours/' + ANCHORS[a][2]:>17} {'target':>9}" for a in anchors)
    print(header)
    print("-" * len(header))
    for run in runs:
        ours = run["ours"]
        model = ours["model"]
        table = [
            ("epoch s (min / median)", fmt_s, "epoch_seconds"),
            ("predict 10k s (min / med)", fmt_s, "predict_seconds"),
            ("peak RSS MB", "{:.0f}".format, "peak_rss_mb"),
            ("test accuracy", "{:.4f}".format, "test_accuracy"),
        ]
        for name, show, key in table:
            line = f"{model:7} {name:26} {show(ours[key]):>15}" + "".join(f" {show(run[a][key]):>15}" for a in anchors)
            for a in anchors:
                target = TARGETS.get(a, {}).get(key, {}).get(model)
                ratios = ratio(ours[key], run[a][key]) if key != "test_accuracy" else None
                shown = " / ".join(f"{r:.3f}" for r in ratios) if ratios else ""
                line += f" {shown:>17} {verdict(max(ratios) if ratios else None, target):>9}"
            print(line)
    peak = raw["peak_gflops"]
    print(f"Peak: {peak:.1f} GFLOP/s (a 2048³ matrix product, same library, {raw['cores']} cores; CPU clock "
          f"{raw['ghz']:.2f} GHz as reported). Effective speed = the FLOPs of a direct convolution / dense "
          f"product ÷ time:")
    for run in runs:
        ours = run["ours"]
        model = ours["model"]
        forward, train = flops_per_image(model)
        epoch_gflop = train * 60000 / 1e9
        achieved = [epoch_gflop / min(ours["epoch_seconds"]), epoch_gflop / statistics.median(ours["epoch_seconds"])]
        predicted = forward * 10000 / 1e9 / statistics.median(ours["predict_seconds"])
        share = achieved[1] / peak
        goal = PEAK_SHARE.get(model)
        print(f"  {model:6} training {epoch_gflop:7.1f} GFLOP/epoch → {achieved[0]:6.1f} / {achieved[1]:6.1f} GFLOP/s "
              f"(min / median) = {achieved[0] / peak:.0%} / {share:.0%} of peak"
              + (f" [≥{goal:.0%} " + ("ok" if min(achieved) / peak >= goal else "MISS") + "]" if goal else "")
              + f"; predict {forward * 10000 / 1e9:.1f} GFLOP → {predicted:.1f} GFLOP/s")


def ratio(ours, theirs):
    if isinstance(ours, list):
        return (min(ours) / min(theirs), statistics.median(ours) / statistics.median(theirs))
    return (ours / theirs,)


def verdict(ratio, target):
    if ratio is None or target is None:
        return ""
    return f"≤{target} " + ("ok" if ratio <= target else "MISS")


if __name__ == "__main__":
    main()
