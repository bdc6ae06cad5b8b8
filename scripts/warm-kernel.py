"""Starts the project's kernel ("Rust (fashion)") once and runs the notebooks' set-up cell, so the
dependencies are compiled into the kernel's first build folder (target/evcxr/1) and into evcxr's cache
before a learner opens a notebook. Called by scripts/setup; prints a line per minute while it works."""
import sys
import threading
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
# The set-up cell every notebook starts with, taken from notebook 1 so there is one copy of it.
first = nbformat.read(ROOT / "notebooks" / "01-explore-the-data.ipynb", as_version=4)
SETUP_CELL = next(c.source for c in first.cells if c.cell_type == "code")

nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SETUP_CELL)])
client = NotebookClient(nb, kernel_name="fashion-rust", timeout=3600, startup_timeout=600,
                        resources={"metadata": {"path": str(ROOT / "notebooks")}})
done = threading.Event()
start = time.time()


def ticker():
    while not done.wait(60):
        print(f"    still compiling ({(time.time() - start) / 60:.0f} min)", flush=True)


threading.Thread(target=ticker, daemon=True).start()
try:
    client.execute()
finally:
    done.set()
outputs = nb.cells[0].outputs
text = "".join(o.get("text", "") for o in outputs)
errors = [o for o in outputs if o.get("output_type") == "error"]
if errors or "ready" not in text:
    print("the set-up cell failed:\n" + text + "\n".join("\n".join(e.get("traceback", [])) for e in errors), file=sys.stderr)
    sys.exit(1)
print("    " + text.strip().splitlines()[-1])
