"""Issue 15 ("Reliability, second pass"): the `lwfm` command's side. Each
test fails on the code before the fix (29acb66):

- item 8: a FIFO named *.png in a support folder, as --query, or as --data
  is refused at once instead of blocking in fopen() / zip_open();
- item 9: tabs and newlines in class folders and query paths are escaped in
  the tab-separated output (one line per query, 2 + way fields); --json
  output is valid UTF-8 (invalid bytes as U+FFFD);
- item 10: the Omniglot .npz reader follows the library's rules: a strict
  header ('fortran_order': 1 refused, no 'shape' picked out of a string),
  the library's limits on classes and pixels.

Run by the meson test `cli` (LWFM_CLI, LWFM_TEST_MODELS)."""
import io
import json
import os
import struct
import subprocess
import zipfile

import numpy as np
import pytest

from test_cli import cli, make_images, run, tiny  # noqa: F401 (fixtures)


def run_bytes(cli, *args, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([cli, *[os.fsencode(str(a)) if not isinstance(a, bytes) else a
                                  for a in args]],
                          capture_output=True, env=env, timeout=timeout)


@pytest.fixture
def support(tmp_path):
    rng = np.random.default_rng(11)
    root = tmp_path / "support"
    make_images(root / "apple", rng, ["rgb8", "jpeg_rgb"])
    make_images(root / "pear", rng, ["rgb8"])
    return root


# -- item 8 ---------------------------------------------------------------------
def test_fifo_is_refused_not_waited_for(cli, tiny, support, tmp_path):  # noqa: F811
    fifo = support / "pear" / "zz_fifo.png"
    os.mkfifo(fifo)
    q = next((support / "apple").iterdir())
    # timeout: before, each of these blocked forever
    res = run_bytes(cli, "classify", "--model", tiny, "--support", support, "--query", q)
    assert res.returncode == 1 and b"not a regular file" in res.stderr, res.stderr
    res = run_bytes(cli, "classify", "--model", tiny, "--support", support, "--query", q,
                    "--on-bad", "skip", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["support_counts"] == [2, 1]
    os.unlink(fifo)
    # a FIFO without an image's name: its first bytes are not read (that blocked)
    fifo = support / "pear" / "notes"
    os.mkfifo(fifo)
    res = run_bytes(cli, "classify", "--model", tiny, "--support", support, "--query", q,
                    "--json")
    assert res.returncode == 0 and b"pear/notes): not an image" in res.stderr, res.stderr
    os.unlink(fifo)
    qfifo = tmp_path / "query.png"
    os.mkfifo(qfifo)
    res = run_bytes(cli, "classify", "--model", tiny, "--support", support, "--query", qfifo)
    assert res.returncode == 1 and b"not a regular file" in res.stderr, res.stderr
    data = tmp_path / "data.npz"
    os.mkfifo(data)
    res = run_bytes(cli, "eval", "--data", data, "--list-episodes")
    assert res.returncode == 1 and b"not a regular file" in res.stderr, res.stderr


# -- item 9 ---------------------------------------------------------------------
def test_text_output_escapes_tabs_and_newlines(cli, tiny, support, tmp_path):  # noqa: F811
    (support / "apple").rename(support / "app\tle")
    (support / "pear").rename(support / "pe\nar")
    q = tmp_path / "q\tx\ny.png"
    q.write_bytes(next((support / "app\tle").iterdir()).read_bytes())
    res = run_bytes(cli, "classify", "--model", tiny, "--support", support, "--query", q, q)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.decode().split("\n")
    assert lines[-1] == "" and len(lines) == 3, lines  # one line per query
    for line in lines[:2]:
        fields = line.split("\t")
        assert len(fields) == 4, fields  # path, prediction, one per class
        assert fields[0] == str(q).replace("\t", "\\t").replace("\n", "\\n")
        assert [f.rsplit("=", 1)[0] for f in fields[2:]] == ["app\\tle", "pe\\nar"]


def test_json_output_is_utf8(cli, tiny, support, tmp_path):  # noqa: F811
    bad = os.fsencode(str(support)) + b"/caf\xe9"  # Latin-1, not UTF-8
    os.rename(os.fsencode(str(support / "pear")), bad)
    good = "caf\u00e9 \U0001F34E"
    (support / "apple").rename(support / good)
    res = run_bytes(cli, "classify", "--model", tiny, "--support", support, "--query",
                    next((support / good).iterdir()), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.decode("utf-8"))  # strict: fails on a raw \xe9
    assert out["classes"] == ["caf\ufffd", good] or out["classes"] == [good, "caf\ufffd"]


# -- item 10 --------------------------------------------------------------------
def npy_bytes(header, data=b""):
    h = header.encode()
    pad = 64 - (10 + len(h) + 1) % 64
    h = h + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + data


def npz(path, members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    path.write_bytes(buf.getvalue())
    return path


def test_omniglot_reader_rules(cli, tmp_path):  # noqa: F811
    px = np.zeros((4, 3, 8, 8), np.uint8).tobytes()
    ok = npz(tmp_path / "ok.npz", {"images.npy": npy_bytes(
        "{'descr': '|u1', 'fortran_order': False, 'shape': (4, 3, 8, 8), }", px)})
    assert run(cli, "eval", "--data", ok, "--way", 2, "--shot", 1, "--query", 1,
               "--list-episodes", check=0).stdout
    cases = {
        "fortran1": "{'descr': '|u1', 'fortran_order': 1, 'shape': (4, 3, 8, 8), }",
        "shape-in-string": "{'descr': '|u1', 'fortran_order': False, "
                           "'note': \"'shape': (4, 3, 8, 8)\", 'shape': (4, 3, 8, 8), }",
        "shape-twice": "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 3, 8, 8), "
                       "'shape': (4, 3, 8, 8), }",
        "trailing": "{'descr': '|u1', 'fortran_order': False, 'shape': (4, 3, 8, 8), } x",
    }
    for name, header in cases.items():
        p = npz(tmp_path / f"{name}.npz", {"images.npy": npy_bytes(header, px)})
        res = run(cli, "eval", "--data", p, "--list-episodes", check=1)
        assert "malformed .npy header" in res.stderr, (name, res.stderr)


def test_omniglot_reader_limits(cli, tmp_path):  # noqa: F811
    # 16M classes of one 1x1 drawing: 16 MiB of zeros, a 16 KB file
    n = 1 << 24
    p = npz(tmp_path / "classes.npz", {"images.npy": npy_bytes(
        f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({n}, 1, 1, 1), }}",
        bytes(n))})
    assert p.stat().st_size < 64 << 10
    res = run(cli, "eval", "--data", p, "--list-episodes", check=1)
    assert "exceeds the limits" in res.stderr, res.stderr
