"""Side-by-side benchmark table: ours (examples/bench.rs) and, with --keras, Keras (scripts/bench_keras.py).

Run through `scripts/bench`, which builds the Rust side and creates the Keras venv. Each model is
trained in its own process (so peak memory is per model), ours then Keras, model after model.
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
KERAS_PY = ROOT / "target" / "keras-venv" / "bin" / "python"
BATCH = {"linear": 32, "mlp": 32, "cnn": 64}
# Targets from issue 6: ours / Keras, in the same run.
TARGETS = {"epoch": {"linear": 0.25, "mlp": 0.25, "cnn": 1.0}, "predict": 0.2, "rss": 0.5}
MLP_GFLOP = 6 * (784 * 128 + 128 * 10) * 60000 / 1e9


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
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--models", default="linear,mlp,cnn")
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
        keras = None
        if args.keras:
            print(f"… {model}: Keras", file=sys.stderr, flush=True)
            keras = run_json([KERAS_PY, ROOT / "scripts" / "bench_keras.py", *common, "--data", ours["data"]])
        raw["runs"].append({"ours": ours, "keras": keras})
    if args.json_out:
        args.json_out.write_text(json.dumps(raw, indent=1))
    report(raw)


def report(raw):
    runs = raw["runs"]
    print(f"Fashion-MNIST benchmark, {raw['date']}: {raw['cpu']}, {raw['cores']} cores; "
          f"{raw['epochs']} epochs, Adam 1e-3, data {runs[0]['ours']['data']}")
    if runs[0]["keras"]:
        print(f"ours: {runs[0]['ours']['framework']}; Keras: {runs[0]['keras']['framework']}")
    header = f"{'model':7} {'figure':26} {'ours':>15} {'Keras':>15} {'ours/Keras':>15} {'target':>8}"
    print(header)
    print("-" * len(header))
    for run in runs:
        ours, k = run["ours"], run["keras"] or {}
        model = ours["model"]
        table = [
            ("epoch s (min / median)", fmt_s, "epoch_seconds", TARGETS["epoch"][model]),
            ("predict 10k s (min / med)", fmt_s, "predict_seconds", TARGETS["predict"]),
            ("peak RSS MB", "{:.0f}".format, "peak_rss_mb", TARGETS["rss"]),
            ("test accuracy", "{:.4f}".format, "test_accuracy", None),
        ]
        for name, show, key, target in table:
            ratios = None
            if k and target is not None:
                if isinstance(ours[key], list):
                    # Of the minima and of the medians: the machine is shared, so both are shown and
                    # the target counts as met only when both meet it.
                    ratios = (min(ours[key]) / min(k[key]), statistics.median(ours[key]) / statistics.median(k[key]))
                else:
                    ratios = (ours[key] / k[key],)
            shown = " / ".join(f"{r:.3f}" for r in ratios) if ratios else ""
            print(f"{model:7} {name:26} {show(ours[key]):>15} {show(k[key]) if k else '':>15} "
                  f"{shown:>15} {verdict(max(ratios) if ratios else None, target):>8}")
    peak = raw["peak_gflops"]
    for run in runs:
        if run["ours"]["model"] == "mlp":
            achieved = MLP_GFLOP / statistics.median(run["ours"]["epoch_seconds"])
            print(f"MLP training: {MLP_GFLOP:.1f} GFLOP per epoch → {achieved:.1f} GFLOP/s = {achieved / peak:.0%} of "
                  f"this machine's peak, {peak:.1f} GFLOP/s (a 2048³ matrix product, same library, {raw['cores']} "
                  f"cores; CPU clock {raw['ghz']:.2f} GHz as reported)")


def verdict(ratio, target):
    if ratio is None:
        return ""
    return f"≤{target} " + ("ok" if ratio <= target else "MISS")


if __name__ == "__main__":
    main()
