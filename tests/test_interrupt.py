"""The stop button, through jupyter_client's real interrupt (the kernel spec's "interrupt_mode": "signal",
what JupyterLab, a plain `jupyter lab` and VS Code send): during `fit` it ends training and every variable
survives; on a cell that is not training (`loop {}`) it still ends the cell, and the kernel answers the next.

Run with: scripts/test (or `source scripts/notebook-env; python -m pytest tests/test_interrupt.py`).
"""
import json
import re
import time
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def kernel():
    km, kc = start_new_kernel(kernel_name="fashion-rust", cwd=str(ROOT / "notebooks"), startup_timeout=300)
    spec = json.loads((Path(km.kernel_spec.resource_dir) / "kernel.json").read_text())
    assert spec["interrupt_mode"] == "signal", spec
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def start(kc, code):
    """Sends `code`; returns the request's id."""
    return kc.execute(code)


def collect(kc, msg_id, timeout):
    """The stdout/stderr text, results and error of request `msg_id`, once it is idle."""
    out, deadline = {"stdout": "", "stderr": "", "result": "", "error": None}, time.time() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(1, deadline - time.time()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out[content["name"]] += content["text"]
        elif kind in ("execute_result", "display_data"):
            out["result"] += content["data"].get("text/plain", "")
        elif kind == "error":
            out["error"] = "\n".join(content.get("traceback", [])) + content.get("evalue", "")
        elif kind == "status" and content["execution_state"] == "idle":
            return out


def run(kc, code, timeout=600):
    out = collect(kc, start(kc, code), timeout)
    assert out["error"] is None, out
    assert "panicked" not in out["stderr"], out
    return out


def wait_for(kc, msg_id, text, timeout):
    """Reads the request's stdout until `text` appears; returns what was read."""
    seen, deadline = "", time.time() + timeout
    while text not in seen:
        msg = kc.get_iopub_msg(timeout=max(1, deadline - time.time()))
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            seen += msg["content"]["text"]
    return seen


def test_stop_during_fit_keeps_the_model_and_the_data(kernel):
    km, kc = kernel
    run(kc, ':dep fashion = { path = "../crate", default-features = false }\nuse fashion::prelude::*;\nsetup_notebook();')
    run(kc, "let data: FashionMnist = load_data()?.subset(12000, 10000);\n"
            "let x: Array3<f32> = data.train.normalized();\n"
            "let mut m: Model<MlpArch> = Model::new(42)?;\nm.compile(Adam::default());")
    fit = start(kc, "let h: History = m.fit(&x, &data.train.labels, FitOptions { epochs: 30, ..Default::default() })?;\n"
                    'println!("fit returned: {} epochs, interrupted: {}", h.epochs.len(), h.interrupted);')
    wait_for(kc, fit, "Epoch 3/30", 300)
    km.interrupt_kernel()
    out = collect(kc, fit, 120)
    assert out["error"] is None, out
    # The signal lands in epoch 3 or, on a fast machine, a little later: the epochs completed before it.
    stopped = re.search(r"Stopped in epoch (\d+)/30 after batch \d+/375", out["stdout"])
    assert stopped and int(stopped.group(1)) >= 3, out
    assert f"fit returned: {int(stopped.group(1)) - 1} epochs, interrupted: true" in out["stdout"], out
    after = run(kc, 'let e: Evaluation = m.evaluate(&data.test.normalized(), &data.test.labels)?;\n'
                    'println!("accuracy {:.4} on {} test images; {} training images", e.accuracy, data.test.len(), data.train.len());')
    assert "on 10000 test images; 12000 training images" in after["stdout"], after
    accuracy = float(after["stdout"].split("accuracy ")[1].split()[0])
    assert accuracy > 0.75, after  # two epochs and more of training survived
    # Training again continues from those weights, as in Keras.
    again = run(kc, "let h2: History = m.fit(&x, &data.train.labels, FitOptions { epochs: 1, ..Default::default() })?;\n"
                    'println!("again: {}", h2.epochs.len());')
    assert "again: 1" in again["stdout"], again


def test_stop_on_a_cell_that_does_not_train_ends_it(kernel):
    km, kc = kernel
    spin = start(kc, 'println!("spinning");\nloop { std::hint::spin_loop(); }')
    wait_for(kc, spin, "spinning", 120)
    time.sleep(1)
    km.interrupt_kernel()
    collect(kc, spin, 120)  # the cell ends (evcxr restarts the process that ran it)
    out = run(kc, 'println!("still here: {}", 6 * 7);')
    assert "still here: 42" in out["stdout"], out
