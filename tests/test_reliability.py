"""`fashion info` on hostile inputs: it fails with a clear message (or succeeds on the real data) and
its peak memory stays under 400 MB, measured with /usr/bin/time -v.

Run with: scripts/test (or `source scripts/notebook-env; python -m pytest tests/test_reliability.py`).
"""
import fcntl
import gzip
import http.server
import os
import signal
import threading
import time
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FASHION = ROOT / "target" / "release" / "fashion"
REAL = Path("/usr/share/datasets/fashion-mnist")
NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@pytest.fixture(scope="module", autouse=True)
def built():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "fashion"], cwd=ROOT, check=True)


def info(data_dir):
    """Runs `fashion info` on `data_dir`; returns (exit code, output, peak RSS in MB)."""
    p = subprocess.run(
        ["/usr/bin/time", "-v", str(FASHION), "info"],
        env={**os.environ, "FASHION_MNIST_DIR": str(data_dir)},
        capture_output=True, text=True, timeout=300,
    )
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return p.returncode, p.stdout + p.stderr, rss_kb / 1024


def dataset_with(tmp_path, name, content=None, link=None):
    """A copy of the real dataset whose file `name` is replaced."""
    d = tmp_path / "data"
    d.mkdir()
    for n in NAMES:
        if n != name:
            shutil.copy(REAL / f"{n}.gz", d / f"{n}.gz")
    if link:
        os.symlink(link, d / name)
    else:
        (d / f"{name}.gz").write_bytes(gzip.compress(content, 9))
    return d


needs_data = pytest.mark.skipif(not REAL.is_dir() or not Path("/usr/bin/time").exists(),
                                reason="needs the dataset package and /usr/bin/time")


@needs_data
def test_real_data_loads_within_the_memory_bound():
    rc, out, mb = info(REAL)
    assert rc == 0 and "Train Images Shape: (60000, 28, 28)" in out, out
    assert mb < 400, f"{mb:.0f} MB"


@needs_data
@pytest.mark.parametrize("case", ["zeros", "huge-header", "big-body", "device"])
def test_hostile_inputs_fail_clearly_within_the_memory_bound(tmp_path, case):
    images = NAMES[0]
    if case == "zeros":  # 64 MiB of zeros in a 64 KB .gz
        d = dataset_with(tmp_path, images, bytes(1 << 26))
        want = "magic number"
    elif case == "huge-header":  # a header announcing 4 GB
        d = dataset_with(tmp_path, images, struct.pack(">IIII", 2051, 65536, 256, 256))
        want = "more than any Fashion-MNIST file"
    elif case == "big-body":  # a header announcing 64 MB, and a body of that size: read, then refused
        d = dataset_with(tmp_path, images, struct.pack(">IIII", 2051, 1, 8000, 8000) + bytes(64_000_000))
        want = "expected 28×28"
    else:  # the images "file" is /dev/zero
        d = dataset_with(tmp_path, images, link="/dev/zero")
        want = "not a regular file"
    rc, out, mb = info(d)
    assert rc != 0 and want in out, out
    assert mb < 400, f"{case}: {mb:.0f} MB"
    print(f"{case}: {mb:.0f} MB peak")


def test_ctrl_c_during_a_download_leaves_no_part_file(tmp_path):
    """A server on 127.0.0.1 that sends a file slowly; Ctrl-C (SIGINT) mid-way."""
    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(bytes(1000))
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = tmp_path / "data"
    p = subprocess.Popen([FASHION, "download", "--dir", str(target)],
                         env={**os.environ, "FASHION_MNIST_URL": f"http://127.0.0.1:{server.server_port}"},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list(target.glob("*.part-*")):
        time.sleep(0.05)
    assert list(target.glob("*.part-*")), "the download started"
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=30)
    server.shutdown()
    assert p.returncode == 130
    assert sorted(f.name for f in target.iterdir() if f.name != ".download.lock") == [], "no part file"
    # The lock file may stay (a file lock, released by the OS with its process); nobody holds it.
    with open(target / ".download.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
