"""Executes every notebook headless through the project's kernel ("Rust (fashion)", scripts/kernel) at
its default parameters — what a learner runs — and checks what it shows and that the outputs committed
in notebooks/ are those of such a run.

A notebook fails on:
  - any error output, except in the cell tagged `raises-exception` (which must fail, and in notebook 2
    with a message naming both sizes),
  - a panic (evcxr reports panics as success; setup_notebook() prints them on stdout), except in the cell tagged `panics`, which must print
    one line and a hint — and the cells after it must still see the earlier variables,
  - a set-up cell that does not report an optimised kernel,
  - a cell tagged `figure` without an image/png or text/html output,
  - facts it prints being wrong (shapes) or an accuracy below a floor,
  - the test set scored more than once (one `313/313 - …` line of `evaluate` at most: choices are made
    on validation data),
  - committed outputs that are stale: another set of code cells, a missing output, another number of
    accuracies, or a notebook over 1.5 MB; and, when this machine is the kind the committed notebook
    was executed on (`machine()`, kept in the notebook's metadata), an accuracy more than 0.01 away from
    this run's. Runs are deterministic on one kind of CPU, not across kinds: another CPU sums in
    another order (gemm sizes its blocks by the caches, the kernels pick AVX-512 or AVX2), and over
    epochs the rounding grows into accuracies percents apart, so on another kind only the floors hold.
Notebooks 1 and 2 run at the same time, in two kernels (each gets a build folder of its own). Notebook 5
runs twice (2 epochs, then its default) into one runs folder and must list both runs. Notebook 1 runs
once more through plain `jupyter execute` without the scripts' environment: the notebook's own kernel
spec must give the same optimised kernel.

The executed copies are kept in tests/executed/; scripts/refresh-notebooks copies them into notebooks/.
Run with: scripts/test (or `source scripts/notebook-env; python -m pytest tests/test_notebooks.py`).
"""
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXECUTED = ROOT / "tests" / "executed"
RUNS_DIR = "../target/notebook-runs/epochs-experiment"  # notebook 5's runs, relative to notebooks/
MAX_BYTES = 1_500_000
REFRESHING = os.environ.get("FASHION_REFRESH") == "1"  # scripts/refresh-notebooks: no comparison

# Floor on every "accuracy: X" line of a cell tagged `accuracy`, at the default parameters.
FLOORS = {
    "01-explore-the-data": None,
    "02-classify-clothing": 0.85,
    "03-linear-vs-deep": 0.82,
    "04-convolutional": 0.85,
    "05-epochs-experiment": 0.85,
    "06-overfit-and-underfit": 0.75,
    "07-modern-convnets": 0.93,
}


def test_every_notebook_has_a_floor():
    assert [p.stem for p in NOTEBOOKS] == list(FLOORS), "a notebook without a floor here, or one missing"


def text_of(output):
    if output.get("output_type") == "stream":
        return output.get("text", "")
    if output.get("output_type") == "error":
        return "\n".join(output.get("traceback", [])) + output.get("evalue", "")
    return output.get("data", {}).get("text/plain", "")


def strip_ansi(s):
    return re.sub(r"\x1b\[[0-9;]*m", "", s)


def machine():
    """The kind of CPU, as far as it decides the float results: its model, the vector instructions
    the kernels pick, and the cache sizes gemm sizes its blocks by."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, flags=re.M)
    flags = set(re.search(r"^flags\s*:\s*(.*)$", cpuinfo, flags=re.M).group(1).split())
    caches = [
        (d / "level").read_text().strip() + (d / "type").read_text().strip()[0] + " " + (d / "size").read_text().strip()
        for d in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"))
    ]
    isa = [f for f in ("avx512f", "avx512vl", "avx512bw", "avx512dq", "avx2", "fma") if f in flags]
    return "; ".join([model.group(1) if model else "unknown CPU", " ".join(isa) or "sse2", ", ".join(caches)])


def execute(path, keep=True):
    """Runs the notebook in a fresh kernel of its own; keeps the executed copy in tests/executed/, with
    the kind of machine it ran on in its metadata."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata["fashion"] = {"executed_on": machine()}
    client = NotebookClient(
        nb,
        kernel_name="fashion-rust",
        timeout=3600,
        startup_timeout=300,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.time()
    try:
        client.execute()
    finally:
        if keep:
            EXECUTED.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, EXECUTED / path.name)
    print(f"{path.name}: {time.time() - start:.0f} s")
    return nb


def accuracies(text):
    """Every "accuracy: X" printed, except on the lines partway through a long epoch (`211/844 [===>…`):
    whether an epoch gets those depends on the machine's speed."""
    partway = re.compile(r"^\s*(\d+)/(\d+) \[")
    lines = [l for l in text.splitlines() if not ((m := partway.match(l)) and m.group(1) != m.group(2))]
    return [float(x) for x in re.findall(r"accuracy: (\d\.\d+)", "\n".join(lines))]


def check(path, nb):
    """Every problem the executed notebook `nb` shows, as a list of sentences."""
    floor = FLOORS[path.stem]
    problems = []
    all_text = []
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    setup = "".join(text_of(o) for o in code_cells[0].get("outputs", []))
    if "ready: dependencies optimised" not in setup:
        problems.append(f"the set-up cell does not report an optimised kernel: {setup!r}")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        outs = cell.get("outputs", [])
        text = "".join(text_of(o) for o in outs)
        all_text.append(text)
        where = f"cell {i} ({cell.source.splitlines()[0][:60]!r})"
        errors = [o for o in outs if o.get("output_type") == "error"]
        if "raises-exception" in tags:
            if not errors:
                problems.append(f"{where}: expected a compile error, got none")
            elif path.stem == "02-classify-clothing" and "expected `64`, found `128`" not in strip_ansi(text):
                problems.append(f"{where}: the compile error does not name both sizes:\n{strip_ansi(text)[-1500:]}")
            continue
        if errors:
            problems.append(f"{where}: error output:\n{text[-2000:]}")
        streams = "".join(o.get("text", "") for o in outs if o.get("output_type") == "stream")
        if "panics" in tags:
            if "panicked at" not in streams or len(streams.strip().splitlines()) > 2 or "take_hook" not in streams:
                problems.append(f"{where}: expected a one-line panic and a hint, got:\n{streams[-2000:]}")
        elif "panicked at" in streams:
            problems.append(f"{where}: panic:\n{streams[-2000:]}")
        if "figure" in tags:
            shown = [o for o in outs if o.get("output_type") in ("display_data", "execute_result")
                     and ({"image/png", "text/html"} & set(o.get("data", {})))]
            if not shown:
                problems.append(f"{where}: no image/png or text/html output")
        if "shapes" in tags:
            if "Train Images Shape: (60000, 28, 28)" not in text:
                problems.append(f"{where}: train shape line missing: {text!r}")
            if "Test Images Shape: (10000, 28, 28)" not in text:
                problems.append(f"{where}: test shape line missing: {text!r}")
        if "accuracy" in tags and floor is not None:
            found = accuracies(text)
            if not found:
                problems.append(f"{where}: no accuracy printed: {text!r}")
            for acc in found:
                if acc < floor:
                    problems.append(f"{where}: accuracy {acc} below the floor {floor}")
    joined = "\n".join(all_text)
    scored = re.findall(r"^313/313 - ", joined, flags=re.M)
    if len(scored) > 1:
        problems.append(f"the test set was scored {len(scored)} times; score it once, at the end")
    if path.stem == "05-epochs-experiment" and "2 runs logged" not in joined:
        problems.append("notebook 05 run twice does not list both runs")
    if path.stem == "01-explore-the-data":
        for line in ["Train Labels Shape: (60000,)", "first image: Ankle boot", "still here: 60000 training images"]:
            if line not in joined:
                problems.append(f"missing: {line!r}")
    if not REFRESHING:
        problems += stale(path, nb)
    return problems


def stale(path, fresh):
    """How the committed notebook at `path` differs from the fresh run `fresh`."""
    problems = []
    size = path.stat().st_size
    if size > MAX_BYTES:
        problems.append(f"{path.name} is {size / 1e6:.2f} MB; at most {MAX_BYTES / 1e6} MB (size the figures down)")
    committed = nbformat.read(path, as_version=4)
    made_on, here = committed.metadata.get("fashion", {}).get("executed_on"), machine()
    compare = made_on == here
    if not compare:
        print(f"{path.name}: executed on {made_on!r}, this is {here!r}: accuracies not compared")
    pairs = list(zip([c for c in committed.cells if c.cell_type == "code"], [c for c in fresh.cells if c.cell_type == "code"]))
    fix = "run scripts/refresh-notebooks and commit notebooks/"
    for i, (old, new) in enumerate(pairs):
        if old.source != new.source:
            problems.append(f"code cell {i} differs from the run: {fix}")
            continue
        if new.outputs and not old.outputs:
            problems.append(f"code cell {i} ({old.source.splitlines()[0][:50]!r}) has no committed output: {fix}")
            continue
        a = accuracies("".join(text_of(o) for o in old.outputs))
        b = accuracies("".join(text_of(o) for o in new.outputs))
        if len(a) != len(b) or compare and any(abs(x - y) > 0.01 for x, y in zip(a, b)):
            problems.append(f"code cell {i}: committed accuracies {a[:6]} but this run printed {b[:6]}: {fix}")
    return problems


def test_two_notebooks_at_once():
    """Notebooks 1 and 2 in two kernels at the same time, as a learner with two tabs open."""
    paths = [p for p in NOTEBOOKS if p.stem in ("01-explore-the-data", "02-classify-clothing")]
    results, failures = {}, {}

    def run(path):
        try:
            results[path] = execute(path)
        except Exception as e:  # reported below, with the other notebook's outcome
            failures[path.name] = repr(e)

    threads = [threading.Thread(target=run, args=(p,)) for p in paths]
    for t in threads:
        t.start()
        time.sleep(2)  # both kernels start while the other is alive
    for t in threads:
        t.join()
    assert not failures, failures
    problems = {p.name: check(p, nb) for p, nb in results.items()}
    assert not any(problems.values()), "\n\n".join(f"{k}:\n" + "\n".join(v) for k, v in problems.items() if v)


@pytest.mark.parametrize(
    "stem", ["03-linear-vs-deep", "04-convolutional", "05-epochs-experiment", "06-overfit-and-underfit", "07-modern-convnets"]
)
def test_notebook_executes_and_shows_its_results(stem, monkeypatch):
    path = ROOT / "notebooks" / f"{stem}.ipynb"
    if stem == "05-epochs-experiment":
        # An earlier run with other epochs, in a kernel of its own: the second run must list both.
        shutil.rmtree((path.parent / RUNS_DIR).resolve(), ignore_errors=True)
        monkeypatch.setenv("RUNS_DIR", RUNS_DIR)
        monkeypatch.setenv("EPOCHS", "2")
        execute(path, keep=False)
        monkeypatch.delenv("EPOCHS")
    nb = execute(path)
    problems = check(path, nb)
    assert not problems, "\n\n".join(problems)


def test_plain_jupyter_gets_the_project_kernel():
    """Notebook 1 run by the venv's Python with none of the scripts' environment (as VS Code or a plain
    `.venv/bin/jupyter lab` start it): Jupyter picks the kernel named in the notebook and the kernel
    is the same optimised one."""
    env = {"HOME": os.environ["HOME"], "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    script = (
        "import nbformat, sys; from nbclient import NotebookClient\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "NotebookClient(nb, timeout=1800, startup_timeout=300, resources={'metadata': {'path': 'notebooks'}}).execute()\n"
        "print(''.join(o.get('text', '') for o in nb.cells[2].outputs))\n"
    )
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", script, "notebooks/01-explore-the-data.ipynb"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ready: dependencies optimised" in proc.stdout, proc.stdout + proc.stderr[-2000:]
