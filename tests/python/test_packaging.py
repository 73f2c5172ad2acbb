"""Python packaging (issue 17, item 1): version, type hints, the library
found without LWFM_LIBRARY, models by name, and `pip install` of
bindings/python into a virtual environment (offline, Debian's pip)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lwfm

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "bindings" / "python"
HERE = Path(__file__).resolve().parent


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "LWFM_LIBRARY", "LWFM_MODEL_PATH")}
    env.update(extra)
    return env


def test_version_matches_header_and_library():
    header = (ROOT / "include" / "lwfm" / "lwfm.h").read_text()
    want = re.search(r'#define LWFM_VERSION_STRING "([^"]+)"', header).group(1)
    assert lwfm.__version__ == want
    assert lwfm.library_version() == want


def test_type_hints_shipped_and_match_module(tmp_path):
    assert (PKG / "lwfm" / "py.typed").is_file()
    assert (PKG / "lwfm" / "__init__.pyi").is_file()
    res = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--mypy-config-file", str(HERE / "stubtest.ini"),
         "--allowlist", str(HERE / "stubtest-allowlist.txt"), "lwfm"],
        cwd=tmp_path, env=_clean_env(PYTHONPATH=str(PKG)), capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_library_env_is_honoured(tmp_path):
    code = "import lwfm; lwfm.library_version()"
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env=_clean_env(PYTHONPATH=str(PKG),
                                                   LWFM_LIBRARY=str(tmp_path / "nope.so")))
    assert res.returncode != 0 and "nope.so" in res.stderr


def test_installed_library_found_without_env(tmp_path):
    """A package with lwfm/_install.py (as meson install writes it) loads the
    library it names, relative to the package, with no LWFM_LIBRARY."""
    lib = os.environ["LWFM_LIBRARY"]
    pkg = tmp_path / "site"
    shutil.copytree(PKG / "lwfm", pkg / "lwfm", ignore=shutil.ignore_patterns("__pycache__"))
    rel = os.path.relpath(lib, pkg / "lwfm")
    (pkg / "lwfm" / "_install.py").write_text(f'LIBRARY = "{rel}"\nMODELS = "../models"\n')
    (pkg / "models").mkdir()
    shutil.copy(ROOT / "models" / "omniglot.npz", pkg / "models" / "omniglot.npz")
    code = ("import lwfm; m = lwfm.Model('omniglot'); print(lwfm.library_version(), m.path, "
            "m.input_shape)")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env=_clean_env(PYTHONPATH=str(pkg)))
    assert res.returncode == 0, res.stderr
    assert lwfm.__version__ in res.stdout and "(1, 28, 28)" in res.stdout
    assert str(pkg / "models" / "omniglot.npz") in res.stdout


def test_find_model_by_name(tmp_path, monkeypatch):
    (tmp_path / "mine.npz").write_bytes(b"")
    monkeypatch.setenv("LWFM_MODEL_PATH", f"{tmp_path / 'nothing'}:{tmp_path}")
    assert lwfm.find_model("mine") == str(tmp_path / "mine.npz")
    assert lwfm.find_model("mine.npz") == str(tmp_path / "mine.npz")
    # a path is a path, even when a model of that name is installed
    assert lwfm.find_model("./mine") == "./mine"
    with pytest.raises(FileNotFoundError, match="looked in .*nothing"):
        lwfm.find_model("no-such-model")
    monkeypatch.setenv("LWFM_MODEL_PATH", str(ROOT / "models"))
    with lwfm.Model("omniglot") as m:
        assert m.input_shape == (1, 28, 28)
        assert m.path == str(ROOT / "models" / "omniglot.npz")


def test_pip_install_into_venv(tmp_path):
    """pip install ./bindings/python in a venv with the system's packages
    (numpy, torch), offline: the whole package, lwfm_ref included."""
    src = tmp_path / "src"  # a copy: pip writes build/ and *.egg-info beside the sources
    shutil.copytree(PKG, src, ignore=shutil.ignore_patterns("__pycache__", "build",
                                                            "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, env=_clean_env())
    py = str(venv / "bin" / "python")
    res = subprocess.run([py, "-m", "pip", "install", "--no-build-isolation", "--no-index",
                          "--disable-pip-version-check", str(src)],
                         capture_output=True, text=True, env=_clean_env(), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    code = ("import lwfm, lwfm_ref, lwfm.evaluate, lwfm.convert, os; "
            "print(lwfm.__version__); print(os.path.dirname(lwfm.__file__)); "
            "print(os.path.isfile(os.path.join(os.path.dirname(lwfm.__file__), 'py.typed')))")
    res = subprocess.run([py, "-c", code], capture_output=True, text=True, env=_clean_env(),
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    version, where, typed = res.stdout.split()
    assert version == lwfm.__version__
    assert where.startswith(str(venv)), where
    assert typed == "True"
    res = subprocess.run([py, "-m", "lwfm.convert", "--help"], capture_output=True, text=True,
                         env=_clean_env(), cwd=tmp_path)
    assert res.returncode == 0 and "usage" in res.stdout.lower(), res.stderr
    # the library from LWFM_LIBRARY, the model by name from LWFM_MODEL_PATH
    code = "import lwfm; print(lwfm.Model('omniglot').input_shape)"
    res = subprocess.run([py, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env=_clean_env(LWFM_LIBRARY=os.environ["LWFM_LIBRARY"],
                                        LWFM_MODEL_PATH=str(ROOT / "models")))
    assert res.returncode == 0 and "(1, 28, 28)" in res.stdout, res.stderr
