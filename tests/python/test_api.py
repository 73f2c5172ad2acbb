"""Behaviour of the Python API (bindings/python/lwfm): errors, lifetime,
information properties, input conversion, threads, the assignment solver.

One random-weight LWFM-SPM model (ResNet-18, taps [7, 8], fs 3) is exported
once for the module; scores need no accuracy here, only determinism."""
import ctypes
import gc
import subprocess
import sys
import threading
import weakref

import numpy as np
import pytest
import torch

import lwfm_ref
from conftest import export, rel_err

WAY, SHOT = 5, 1


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path, _ = export(tmp_path_factory.mktemp("api"), lwfm_ref.make_config(), seed=21)
    return path


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    s = rng.standard_normal((WAY * SHOT, 3, 84, 84)).astype(np.float32)
    labels = np.array([2, 0, 4, 1, 3], dtype=np.int32)
    q = rng.standard_normal((16, 3, 84, 84)).astype(np.float32)
    return s, labels, q


@pytest.fixture
def model(lib, model_path):
    with lib.Model(model_path) as m:
        yield m


# ---------------------------------------------------------------------------
# Errors: lwfm.Error carries the status and the library's message
# ---------------------------------------------------------------------------

def _with(arr, index, value):
    out = arr.copy()
    out[index] = value
    return out


IMAGE_CASES = {
    # name: (function of (s, labels, q) -> (s, labels, q, way), status, words in the message)
    "nan-support": (lambda s, l, q: (_with(s, (1, 2, 3, 4), np.nan), l, q, None), 11,
                    "support images contain NaN or infinite values"),
    "inf-query": (lambda s, l, q: (s, l, _with(q, (0, 0, 0, 0), np.inf), None), 11,
                  "query images contain NaN or infinite values"),
    "missing-class": (lambda s, l, q: (s, np.array([0, 1, 2, 3, 3]), q, 5), 1,
                      "class 4 has no support image"),
    "label-out-of-range": (lambda s, l, q: (s, l, q, 3), 1, "labels must be in 0..2"),
    "way-1": (lambda s, l, q: (s, np.zeros(5, np.int32), q, None), 1, "way must be"),
    "wrong-channels": (lambda s, l, q: (s[:, :1], l, q[:, :1], None), 6,
                       "3-channel images, got 1 channels"),
}


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_error_status_and_message(lib, model, data, case):
    make, status, words = IMAGE_CASES[case]
    s, labels, q, way = make(*data)
    with pytest.raises(lib.Error) as e:
        model.episode_score(s, labels, q[:2], way=way)
    err = e.value
    assert isinstance(err, RuntimeError)
    assert err.status == status
    lib_ = lib._library()
    assert err.status_name == lib_.lwfm_status_string(status).decode()
    assert words in str(err)
    # the message is the library's own detail for the failed call
    assert str(err) == lib_.lwfm_last_error().decode()


def test_feature_errors(lib, model, data):
    s, labels, q = data
    fs, fq = model.features(s), model.features(q[:2])
    with pytest.raises(lib.Error) as e:
        model.score_features(fs[:, :1000], labels, fq[:, :1000])
    assert e.value.status == 6
    assert "model features are (1024, 3, 3), got (1000, 3, 3)" in str(e.value)
    with pytest.raises(lib.Error) as e:
        model.score_features(fs, labels, _with(fq, (1, 5, 1, 1), np.nan))
    assert e.value.status == 11 and "query features contain NaN" in str(e.value)
    # mismatched support/query shapes are refused before the library is called
    with pytest.raises(ValueError, match="differ in shape"):
        model.score_features(fs, labels, fq[:, :, :2])
    with model.prepare_support(fs, labels, features=True) as sup:
        with pytest.raises(lib.Error) as e:
            sup.score(fq[:, :, :, :2])
        assert e.value.status == 6 and "got (1024, 3, 2)" in str(e.value)


def test_load_error(lib, tmp_path):
    missing = tmp_path / "no-such-model.npz"
    with pytest.raises(lib.Error) as e:
        lib.Model(missing)
    assert e.value.status == 3 and str(missing) in str(e.value)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(lib.Error) as e:
        lib.Model(junk)
    assert e.value.status == 4
    with pytest.raises(ValueError, match="precision"):
        lib.Model(junk, precision="fp16")


def test_python_side_validation(lib, model, data):
    s, labels, q = data
    with pytest.raises(ValueError, match="integers"):
        model.episode_score(s, labels.astype(np.float32), q[:1])
    with pytest.raises(ValueError, match="integers"):
        model.prepare_support(s, [0.0, 1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="1-D array of 5 labels"):
        model.episode_score(s, labels[:4], q[:1])
    with pytest.raises(ValueError, match="1-D array of 5 labels"):
        model.episode_score(s, labels[None], q[:1])
    with pytest.raises(ValueError, match=r"\(n, channels, height, width\)"):
        model.features(s[0, 0])
    with pytest.raises(ValueError, match=r"\(n, channels, height, width\)"):
        model.episode_score(s[None], labels, q[:1])


# ---------------------------------------------------------------------------
# Lifetime
# ---------------------------------------------------------------------------

def test_close_is_idempotent_and_later_calls_raise(lib, model_path, data):
    s, labels, q = data
    m = lib.Model(model_path)
    assert not m.closed
    assert m.config["method"] == "lwfm-spm"  # cached, yet must not outlive close()
    m.close()
    m.close()
    assert m.closed and "closed" in repr(m)
    for call in (lambda: m.features(s), lambda: m.episode_score(s, labels, q[:1]),
                 lambda: m.score_features(s, labels, s), lambda: m.input_shape,
                 lambda: m.feature_shape(), lambda: m.prepare_support(s, labels),
                 lambda: m.config):
        with pytest.raises(ValueError, match="closed lwfm.Model"):
            call()


def test_with_closes(lib, model_path, data):
    s, labels, q = data
    with lib.Model(model_path) as m:
        assert not m.closed
        with m.prepare_support(s, labels) as sup:
            assert len(sup) == WAY * SHOT and sup.way == WAY
    assert m.closed
    with pytest.raises(ValueError, match="closed lwfm.SupportSet"):
        sup.score(q[:1])
    with pytest.raises(ValueError, match="closed lwfm.SupportSet"):
        len(sup)
    sup.close()  # idempotent


def test_garbage_collection_releases(lib, model_path, data):
    s, labels, q = data
    for _ in range(3):
        m = lib.Model(model_path)
        sup = m.prepare_support(s, labels)
        ref_m, fin_m, fin_s = weakref.ref(m), m._finalizer, sup._finalizer
        del m  # the SupportSet keeps its Model alive ...
        gc.collect()
        assert ref_m() is not None and fin_m.alive
        sup.score(q[:1])
        del sup  # ... until it goes as well
        gc.collect()
        assert ref_m() is None
        assert not fin_m.alive and not fin_s.alive


def test_support_set_outlives_closed_model(lib, model_path, data):
    s, labels, q = data
    m = lib.Model(model_path)
    expect = m.episode_score(s, labels, q[:3])
    sup = m.prepare_support(s, labels)
    m.close()  # releases the caller's C reference; the prepared set holds its own
    got = sup.score(q[:3])
    np.testing.assert_array_equal(got, expect)
    assert len(sup) == WAY * SHOT
    sup.close()


# ---------------------------------------------------------------------------
# Information
# ---------------------------------------------------------------------------

def test_config_of_converted_model(lib, tmp_path):
    """A reference checkpoint through lwfm.convert with non-default options:
    the Model reports every option back."""
    cfg = lwfm_ref.make_config(backbone="conv64f", hyperpixel_ids=[2, 3], feature_size=5,
                               top_k=2, temperature=0.1, temperature_attn=2.0, matcher_prob=1.0,
                               mean=list(lwfm_ref.CIFARFS_MEAN), std=list(lwfm_ref.CIFARFS_STD))
    torch.manual_seed(5)
    ref = lwfm_ref.LWFMSPM(cfg).eval()
    ckpt, out = tmp_path / "max_acc.pth", tmp_path / "converted.npz"
    torch.save({"params": {"module." + k: v for k, v in ref.state_dict().items()}}, ckpt)
    argv = ["--method", "lwfm-spm", "--backbone", "conv64f", "--hyperpixel-ids", "2", "3",
            "--feature-size", "5", "--top-k", "2", "--temperature", "0.1",
            "--temperature-attn", "2.0", "--matcher-prob", "1.0",
            "--mean", *map(str, lwfm_ref.CIFARFS_MEAN), "--std", *map(str, lwfm_ref.CIFARFS_STD)]
    r = subprocess.run([sys.executable, "-m", "lwfm.convert", *argv, str(ckpt), str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with lib.Model(out) as m:
        c = m.config
        assert {k: c[k] for k in ("format_version", "method", "backbone", "input_channels",
                                  "hyperpixel_ids", "feature_size", "learnable_matcher",
                                  "top_k", "image_size", "resize")} == {
            "format_version": 1, "method": "lwfm-spm", "backbone": "conv64f",
            "input_channels": 3, "hyperpixel_ids": [2, 3], "feature_size": 5,
            "learnable_matcher": True, "top_k": 2, "image_size": 84, "resize": 92}
        for key, value in (("temperature", 0.1), ("temperature_attn", 2.0),
                           ("matcher_prob", 1.0)):
            assert c[key] == pytest.approx(value, rel=1e-6), key
        assert c["mean"] == pytest.approx(lwfm_ref.CIFARFS_MEAN, rel=1e-6)
        assert c["std"] == pytest.approx(lwfm_ref.CIFARFS_STD, rel=1e-6)
        c["top_k"] = 99  # a copy: the model's view does not change
        assert m.config["top_k"] == 2
        assert m.input_shape == (3, 84, 84)
        assert m.feature_shape() == (128, 5, 5)
        assert m.feature_shape(40, 60) == (128, 5, 5)
        assert "lwfm-spm" in repr(m) and "conv64f" in repr(m)


def test_shapes(lib, model):
    assert model.input_shape == (3, 84, 84)
    assert model.feature_shape() == (1024, 3, 3)
    assert model.feature_shape(120, 100) == (1024, 3, 3)
    with pytest.raises(lib.Error) as e:
        model.feature_shape(0, 84)
    assert e.value.status == 6 and "out of range" in str(e.value)
    c = model.config
    assert c["method"] == "lwfm-spm" and c["backbone"] == "resnet18"
    assert c["hyperpixel_ids"] == [7, 8] and c["feature_size"] == 3


# ---------------------------------------------------------------------------
# Input conversion
# ---------------------------------------------------------------------------

def test_features_of_a_single_image(model, data):
    s, _, _ = data
    one = model.features(s[1])
    assert one.shape == (1, 1024, 3, 3) and one.dtype == np.float32
    np.testing.assert_array_equal(one, model.features(s[1:2]))


def _non_contiguous(x):
    """The same values as a strided (not C-contiguous) view."""
    v = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    v = np.moveaxis(v, -1, 1)
    assert not v.flags.c_contiguous
    np.testing.assert_array_equal(v, x)
    return v


def test_float64_and_non_contiguous_inputs(model, data):
    s, labels, q = data
    feats = model.features(q[:3])
    np.testing.assert_array_equal(model.features(q[:3].astype(np.float64)), feats)
    np.testing.assert_array_equal(model.features(_non_contiguous(q[:3])), feats)
    np.testing.assert_array_equal(model.features(q[:6:2]), model.features(q[[0, 2, 4]]))

    expect = model.episode_score(s, labels, q[:3])
    got = model.episode_score(s.astype(np.float64), labels.astype(np.int64).tolist(),
                              _non_contiguous(q[:3]))
    np.testing.assert_array_equal(got, expect)
    with model.prepare_support(_non_contiguous(s), labels.astype(np.uint8)) as sup:
        np.testing.assert_array_equal(sup.score(q[:3].astype(np.float64)), expect)
    fs = model.features(s)
    np.testing.assert_array_equal(
        model.score_features(_non_contiguous(fs).astype(np.float64), labels, feats),
        model.score_features(fs, labels, feats))


# ---------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------

def test_threads_against_one_support_set(lib, model, data):
    s, labels, q = data
    # ctypes.CDLL (not PyDLL) releases the GIL around every C call
    assert type(lib._library()) is ctypes.CDLL
    n_threads, per = 8, 2
    with model.prepare_support(s, labels) as sup:
        serial = [sup.score(q[t * per:(t + 1) * per]) for t in range(n_threads)]
        assert not np.array_equal(serial[0], serial[1])
        results, errors = [None] * n_threads, []
        barrier = threading.Barrier(n_threads)

        def work(t):
            try:
                barrier.wait()
                out = [sup.score(q[t * per:(t + 1) * per]) for _ in range(2)]
                results[t] = out
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert not errors
    for t in range(n_threads):
        for got in results[t]:
            np.testing.assert_array_equal(got, serial[t])


# ---------------------------------------------------------------------------
# lwfm.linear_assignment against scipy
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 50])
@pytest.mark.parametrize("kind", ["int", "float", "ties"])
def test_linear_assignment_vs_scipy(lib, n, kind):
    scipy_opt = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(n * 7 + len(kind))
    if kind == "int":
        cost = rng.integers(-100, 100, (n, n)).astype(np.float64)
    elif kind == "float":
        cost = rng.standard_normal((n, n)) * 10
    else:
        cost = rng.integers(0, 3, (n, n)).astype(np.float64)
    a, total = lib.linear_assignment(cost)
    assert a.dtype == np.int64 and sorted(a.tolist()) == list(range(n))
    rows, cols = scipy_opt.linear_sum_assignment(cost)
    best = cost[rows, cols].sum()
    assert total == pytest.approx(cost[np.arange(n), a].sum(), rel=1e-12, abs=1e-9)
    if kind == "float":
        assert total == pytest.approx(best, rel=1e-9, abs=1e-9)
    else:
        assert total == best


def test_linear_assignment_errors(lib):
    with pytest.raises(ValueError, match="square"):
        lib.linear_assignment(np.zeros((2, 3)))
    cost = np.ones((4, 4))
    cost[2, 1] = np.nan
    with pytest.raises(lib.Error) as e:
        lib.linear_assignment(cost)
    assert e.value.status == 11 and "2" in str(e.value) and "1" in str(e.value)
    # a non-contiguous, integer matrix is converted
    m = np.arange(16, dtype=np.int32).reshape(4, 4).T
    a, total = lib.linear_assignment(m)
    assert total == m[np.arange(4), a].sum()


# ---------------------------------------------------------------------------
# Threads: image-parallel backbone (each thread runs whole chunks)
# ---------------------------------------------------------------------------

_THREADS_SCRIPT = r"""
import ctypes, os, sys
import numpy as np
import lwfm
gomp = ctypes.CDLL("libgomp.so.1")
x = np.random.default_rng(3).standard_normal((21, 3, 84, 84)).astype(np.float32)
def features(threads, image_parallel="1"):
    gomp.omp_set_num_threads(threads)   # this thread's count, before the model's contexts
    os.environ["LWFM_IMAGE_PARALLEL"] = image_parallel
    with lwfm.Model(sys.argv[1]) as m:
        return m.features(x)
one, two, layer = features(1), features(2), features(2, "0")
np.save(sys.argv[2], np.stack([one, two, layer]))
"""


def test_features_do_not_depend_on_threads(model_path, tmp_path):
    """21 images on 2 threads go image-parallel (2 chunks of 8 and one of 5,
    taken by whichever thread is free): the same single-threaded plans as on
    one thread, so bit-identical; the old per-primitive threading
    (LWFM_IMAGE_PARALLEL=0) agrees to rounding."""
    out = tmp_path / "f.npy"
    env = dict(__import__("os").environ, OMP_NUM_THREADS="2")
    subprocess.run([sys.executable, "-c", _THREADS_SCRIPT, str(model_path), str(out)],
                   check=True, env=env, timeout=300)
    one, two, layer = np.load(out)
    np.testing.assert_array_equal(two, one)
    assert rel_err(layer, one) < 1e-5
