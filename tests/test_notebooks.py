"""Executes every notebook headless through the real evcxr Rust kernel and checks what it shows.

Each notebook runs top to bottom with small parameters (EPOCHS, TRAIN_SUBSET below), one at a time
(they share evcxr's build folder, see scripts/notebook-env). A notebook fails on:
  - any error output, except in the cell tagged `raises-exception` (which must fail),
  - any stderr output containing `panicked at` (evcxr reports panics as success),
  - a cell tagged `figure` without an image/png or text/html output,
  - facts it prints being wrong (shapes) or an accuracy below a floor suited to the reduced run,
  - the test set scored more than once (one `313/313 - …` line of `evaluate` at most: choices are made
    on validation data).
Notebook 05 runs twice with different EPOCHS into one runs folder and must list both runs.
The executed copies, with their outputs, are kept in tests/executed/ for a person to open.

Run with: scripts/test (or `source scripts/notebook-env; python -m pytest tests/`).
"""
import os
import re
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXECUTED = ROOT / "tests" / "executed"

# Reduced runs: (env, expected train rows, floor on every "... accuracy: X" line tagged `accuracy`).
PARAMS = {
    "01-explore-the-data": ({"TRAIN_SUBSET": "60000"}, 60000, None),
    "02-classify-clothing": ({"EPOCHS": "2", "TRAIN_SUBSET": "6000"}, 6000, 0.75),
    "03-linear-vs-deep": ({"EPOCHS": "2", "TRAIN_SUBSET": "6000"}, 6000, 0.72),
    "04-convolutional": ({"EPOCHS": "2", "TRAIN_SUBSET": "6000"}, 6000, 0.72),
    "05-epochs-experiment": ({"EPOCHS": "3", "TRAIN_SUBSET": "6000"}, 6000, 0.72),
}


def test_every_notebook_has_parameters():
    assert [p.stem for p in NOTEBOOKS] == list(PARAMS), "a notebook without test parameters, or one missing"


def text_of(output):
    if output.get("output_type") == "stream":
        return output.get("text", "")
    if output.get("output_type") == "error":
        return "\n".join(output.get("traceback", [])) + output.get("evalue", "")
    return output.get("data", {}).get("text/plain", "")


def execute(path, keep=True):
    """Runs the notebook in a fresh kernel; keeps the executed copy in tests/executed/."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="rust",
        timeout=3600,
        startup_timeout=300,
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_and_shows_its_results(path, monkeypatch, tmp_path):
    env, train_rows, floor = PARAMS[path.stem]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if path.stem == "05-epochs-experiment":
        # An earlier run with other epochs, in a kernel of its own: the second run must list both.
        monkeypatch.setenv("RUNS_DIR", str(tmp_path / "runs"))
        monkeypatch.setenv("EPOCHS", "2")
        execute(path, keep=False)
        monkeypatch.setenv("EPOCHS", env["EPOCHS"])
    nb = execute(path)

    problems = []
    all_text = []
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
            continue
        if errors:
            problems.append(f"{where}: error output:\n{text[-2000:]}")
        for o in outs:
            if o.get("output_type") == "stream" and o.get("name") == "stderr" and "panicked at" in o.get("text", ""):
                problems.append(f"{where}: panic:\n{o['text'][-2000:]}")
        if "figure" in tags:
            shown = [o for o in outs if o.get("output_type") in ("display_data", "execute_result")
                     and ({"image/png", "text/html"} & set(o.get("data", {})))]
            if not shown:
                problems.append(f"{where}: no image/png or text/html output")
        if "shapes" in tags:
            if f"Train Images Shape: ({train_rows}, 28, 28)" not in text:
                problems.append(f"{where}: train shape line missing: {text!r}")
            if "Test Images Shape: (10000, 28, 28)" not in text:
                problems.append(f"{where}: test shape line missing: {text!r}")
        if "accuracy" in tags and floor is not None:
            found = [float(x) for x in re.findall(r"accuracy: (\d\.\d+)", text)]
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
        joined = "\n".join(all_text)
        assert "Train Labels Shape: (60000,)" in joined
        assert "first image: Ankle boot" in joined
    assert not problems, "\n\n".join(problems)
