"""Models and prepared support sets that persist (issue 18): the model
fingerprint, pickling by value, saved support sets."""
import pickle
import shutil
import subprocess
import sys
import hashlib
import struct

import numpy as np
import pytest

from conftest import ROOT

BUILD_TESTS = ROOT / "build" / "tests"
SMALL = BUILD_TESTS / "lwfm_small.npz"
TINY = BUILD_TESTS / "lwfm_tiny.npz"


def canonical_fingerprint(path):
    """The fingerprint as docs/weight-format.md defines it, from NumPy alone."""
    h = hashlib.sha256(b"lwfm-weights-v1\0")
    with np.load(path) as z:
        for name in sorted(z.files, key=lambda k: k.encode()):
            a = z[name]
            h.update(name.encode() + b"\0")
            floating = a.dtype.kind == "f"
            h.update(b"f" if floating else b"i")
            h.update(struct.pack("<I", a.ndim) + b"".join(struct.pack("<q", d) for d in a.shape))
            h.update(np.ascontiguousarray(a, "<f4" if floating else "<i8").tobytes())
    return h.hexdigest()


@pytest.fixture
def small(lib):
    if not SMALL.exists():
        pytest.skip("build/tests/lwfm_small.npz is made by the build")
    return SMALL


def test_fingerprint_is_the_documented_digest_of_the_arrays(lib, small, tmp_path):
    """The fingerprint is the SHA-256 of the arrays as docs/weight-format.md
    says: NumPy reproduces it; the same arrays re-saved compressed keep it,
    one changed value changes it."""
    with lib.Model(small) as m:
        fp = m.fingerprint
    assert len(fp) == 64 and fp == canonical_fingerprint(small)
    with np.load(small) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez_compressed(tmp_path / "same.npz", **arrays)
    with lib.Model(tmp_path / "same.npz") as m:
        assert m.fingerprint == fp
    key = next(k for k in sorted(arrays) if arrays[k].dtype == np.float32 and arrays[k].size)
    arrays[key] = arrays[key].copy()
    arrays[key].flat[0] += 1.0
    np.savez(tmp_path / "other.npz", **arrays)
    with lib.Model(tmp_path / "other.npz") as m:
        assert m.fingerprint != fp
        assert m.fingerprint == canonical_fingerprint(tmp_path / "other.npz")


def test_model_pickles_by_value(lib, small, tmp_path):
    """A pickled model carries the file's bytes and its precision: it loads
    after the file is gone, with the same fingerprint and the same logits."""
    shutil.copy(small, tmp_path / "w.npz")
    rng = np.random.default_rng(0)
    with lib.Model(tmp_path / "w.npz") as m:
        c, h, w = m.input_shape
        s = rng.standard_normal((4, c, h, w)).astype(np.float32)
        q = rng.standard_normal((3, c, h, w)).astype(np.float32)
        want = m.episode_score(s, [0, 1, 0, 1], q)
        data = pickle.dumps(m)
        fp = m.fingerprint
    (tmp_path / "w.npz").unlink()
    m2 = pickle.loads(data)
    assert m2.fingerprint == fp and m2.precision == "fp32"
    assert np.array_equal(m2.episode_score(s, [0, 1, 0, 1], q), want)
    assert pickle.loads(pickle.dumps(m2)).fingerprint == fp  # again, without the file


def test_model_pickling_refuses_a_file_changed_on_disk(lib, small, tmp_path):
    """Weights replaced on disk after loading: pickling refuses, naming both
    fingerprints, instead of shipping other weights; a vanished file too."""
    if not TINY.exists():
        pytest.skip("build/tests/lwfm_tiny.npz is made by the build")
    shutil.copy(small, tmp_path / "w.npz")
    m = lib.Model(tmp_path / "w.npz")
    shutil.copy(TINY, tmp_path / "w.npz")
    with pytest.raises(pickle.PicklingError, match="changed on disk") as e:
        pickle.dumps(m)
    assert m.fingerprint in str(e.value)
    (tmp_path / "w.npz").unlink()
    with pytest.raises(pickle.PicklingError, match="cannot be read"):
        pickle.dumps(m)


def test_model_pickle_loads_in_a_fresh_process(lib, small, tmp_path):
    with lib.Model(small) as m:
        (tmp_path / "m.pickle").write_bytes(pickle.dumps(m))
        fp = m.fingerprint
    code = ("import pickle, sys; m = pickle.load(open(sys.argv[1], 'rb')); "
            "print(m.fingerprint, m.precision)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.pickle")],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [fp, "fp32"]
