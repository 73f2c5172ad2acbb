"""ONNX Runtime as a benchmark anchor: the engine people deploy on CPUs.

Not a dependency of the library or its tests. To enable it (Debian's node and
npm; the install script of the package would download from a host that is
not needed, its CPU binaries ship inside the package):

    sudo apt-get install nodejs npm
    npm install --prefix bench/ort --ignore-scripts onnxruntime-node

or point LWFM_ORT_NODE at any folder holding node_modules/onnxruntime-node.

`OrtWorker` runs the model in a node process (bench/ort_worker.js) and times
one inference per `run()` inside that process, so a benchmark can alternate
ONNX Runtime, libLWFM and PyTorch rep by rep in one run.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
INSTALL_HINT = ("ONNX Runtime anchor skipped: needs node and onnxruntime-node "
                "(npm install --prefix bench/ort --ignore-scripts onnxruntime-node)")


def module_dir():
    """The onnxruntime-node package folder, or None when it is not installed."""
    roots = [os.environ.get("LWFM_ORT_NODE"), str(BENCH / "ort")]
    for root in filter(None, roots):
        d = Path(root) / "node_modules" / "onnxruntime-node"
        if (d / "package.json").is_file():
            return d
    return None


def available():
    return shutil.which("node") is not None and module_dir() is not None


def version():
    import json
    d = module_dir()
    return json.loads((d / "package.json").read_text())["version"] if d else None


def export(torch, model, x, path):
    """torch.onnx.export at opset 13, fixed batch: what the issue measured."""
    with torch.no_grad():
        torch.onnx.export(model, x, str(path), opset_version=13,
                          input_names=["images"], output_names=["features"])


class OrtWorker:
    """One ONNX Runtime session on `threads` intra-op threads, in node."""

    def __init__(self, onnx_path, x, threads, affinity=None):
        import numpy as np
        self._tmp = tempfile.TemporaryDirectory()
        inp = Path(self._tmp.name) / "input.f32"
        np.ascontiguousarray(x, dtype=np.float32).tofile(inp)
        args = ["node", str(BENCH / "ort_worker.js"), str(module_dir()), str(onnx_path),
                str(inp), *(str(d) for d in x.shape), str(threads)]
        pre = (lambda: os.sched_setaffinity(0, affinity)) if affinity else None
        self._p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=True, preexec_fn=pre)
        first = self._p.stdout.readline().split()
        if not first or first[0] != "ready":
            self.close()
            raise RuntimeError(f"onnxruntime-node did not start: {' '.join(first)}")
        self.version = first[1]

    def _ask(self, line):
        self._p.stdin.write(line + "\n")
        self._p.stdin.flush()
        answer = self._p.stdout.readline().strip()
        if not answer.startswith("ok "):
            raise RuntimeError(f"onnxruntime-node: {answer or 'worker exited'}")
        return answer[3:]

    def run(self):
        """Seconds of one inference (timed inside the worker)."""
        return float(self._ask("run"))

    def output(self, shape):
        import numpy as np
        path = Path(self._tmp.name) / "output.f32"
        self._ask(f"dump {path}")
        return np.fromfile(path, dtype=np.float32).reshape(shape)

    def close(self):
        if self._p.poll() is None:
            try:
                self._p.stdin.write("quit\n")
                self._p.stdin.flush()
                self._p.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._p.kill()
                self._p.wait()
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
