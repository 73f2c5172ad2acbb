"""Issue 15 ("Reliability, second pass"): the library's side. Each test fails
on the code before the fix (29acb66):

- item 4: feature calls refuse finite pixels that overflow in the backbone
  (LWFM_ERR_NONFINITE, output untouched), as the episode calls do;
- item 5: weights that fold to infinity and a tiny config/std are refused
  at load, naming the tensor or key;
- item 6: an LWFM-SPM feature_size over LWFM_LIMIT_SPM_POSITIONS is refused
  at load with LWFM_ERR_LIMIT;
- item 11: a float32 temperature of 1e-6 loads, a bool format_version is
  refused, features may be computed in place;
- item 7: integer members are not widened to int64 against the limit
  (a file of bool arrays within the limit loads).
"""
import ctypes
import os

import numpy as np
import pytest

import lwfm_ref
from conftest import export

FORMAT, LIMIT, NONFINITE = 4, 8, 11


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = lwfm_ref.make_config(backbone="conv64f", hyperpixel_ids=[2, 3], feature_size=3,
                               image_size=32, resize=0)
    path, _ = export(tmp_path_factory.mktemp("tiny"), cfg, seed=3)
    with np.load(path) as z:
        return path, {k: z[k] for k in z.files}


def save(tmp_path, arrays, name="m.npz", **changes):
    a = dict(arrays)
    a.update(changes)
    p = tmp_path / name
    np.savez(p, **a)
    return p


def load_error(lib, path):
    with pytest.raises(lib.Error) as e:
        lib.Model(path)
    return e.value


# -- item 4 -------------------------------------------------------------------
def test_features_refuse_overflow_and_leave_output_untouched(lib, tiny):
    path, _ = tiny
    with lib.Model(path) as m:
        x = np.full((2, 3, 32, 32), 3e38, np.float32)
        x[1] = -3e38
        with pytest.raises(lib.Error) as e:
            m.features(x)
        assert e.value.status == NONFINITE and "overflowed" in str(e.value)
        # the raw calls: model features and a backbone handle, output canary
        c = lib._library()
        C, fh, fw = m.feature_shape()
        out = np.full(2 * C * fh * fw, 7.0, np.float32)
        fp = ctypes.POINTER(ctypes.c_float)
        with m._use() as h:
            st = c.lwfm_model_features(h, x.ctypes.data_as(fp), 2, 3, 32, 32,
                                       out.ctypes.data_as(fp), out.size)
            assert st == NONFINITE and (out == 7.0).all()
            bb = ctypes.c_void_p()
            c.lwfm_backbone_create.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p]
            c.lwfm_backbone_forward.argtypes = [ctypes.c_void_p, fp] + [ctypes.c_int64] * 4 + [
                fp, ctypes.c_size_t]
            c.lwfm_backbone_destroy.argtypes = [ctypes.c_void_p]
            assert c.lwfm_backbone_create(ctypes.byref(bb), h) == 0
            try:
                st = c.lwfm_backbone_forward(bb, x.ctypes.data_as(fp), 2, 3, 32, 32,
                                             out.ctypes.data_as(fp), out.size)
                assert st == NONFINITE and (out == 7.0).all()
            finally:
                c.lwfm_backbone_destroy(bb)
        # ordinary inputs still work
        assert np.isfinite(m.features(np.zeros((1, 3, 32, 32), np.float32))).all()


# -- item 11: in place -----------------------------------------------------------
def test_features_in_place(lib, tiny, tmp_path):
    """The features may overwrite the images: a batch larger than the
    backbone's 16-image chunk, with feature maps (128 x 8 x 8) larger than
    the images (3 x 32 x 32); before, the first chunk's features overwrote
    the inputs of the next ones."""
    _, a = tiny
    path = save(tmp_path, a, **{"config/feature_size": np.int32(8)})
    rng = np.random.default_rng(5)
    with lib.Model(path) as m:
        n = 40
        x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
        expect = m.features(x)
        buf = np.zeros(max(x.size, expect.size), np.float32)
        buf[:x.size] = x.ravel()
        fp = ctypes.POINTER(ctypes.c_float)
        with m._use() as h:
            st = lib._library().lwfm_model_features(h, buf.ctypes.data_as(fp), n, 3, 32, 32,
                                                    buf.ctypes.data_as(fp), buf.size)
        assert st == 0
        np.testing.assert_array_equal(buf[:expect.size].reshape(expect.shape), expect)


# -- item 5 -------------------------------------------------------------------
def test_weights_folding_to_infinity_are_refused(lib, tiny, tmp_path):
    _, a = tiny
    key = [k for k in a if k.endswith("running_var")][0]
    prefix = key[:-len(".running_var")]
    g = a[prefix + ".weight"].copy()
    var = a[key].copy()
    g[0], var[0] = 3e38, 0.0
    p = save(tmp_path, a, **{prefix + ".weight": g, key: var})
    err = load_error(lib, p)
    assert err.status == FORMAT, str(err)
    assert prefix in str(err) and "overflows" in str(err), str(err)


@pytest.mark.parametrize("key,value,needle", [
    ("config/std", np.full(3, 1e-45, np.float32), "config/std"),
    ("config/std", np.full(3, 1e-7, np.float32), "config/std"),
    ("config/mean", np.full(3, 3e38, np.float32), "config/mean"),
])
def test_normalisation_out_of_range_is_refused(lib, tiny, tmp_path, key, value, needle):
    _, a = tiny
    err = load_error(lib, save(tmp_path, a, **{key: value}))
    assert err.status == FORMAT and needle in str(err), str(err)


def test_preprocess_output_is_finite_at_the_std_bound(lib, tiny, tmp_path):
    _, a = tiny
    p = save(tmp_path, a, **{"config/std": np.full(3, 1e-6, np.float32)})
    with lib.Model(p) as m:
        img = np.full((40, 40, 3), 255, np.uint8)
        assert np.isfinite(m.preprocess(img)).all()


# -- item 6 -------------------------------------------------------------------
def test_spm_positions_limit(lib, tiny, tmp_path):
    _, a = tiny
    err = load_error(lib, save(tmp_path, a, **{"config/feature_size": np.int32(17)}))
    assert err.status == LIMIT and "LWFM_LIMIT_SPM_POSITIONS = 256" in str(err), str(err)
    # 16 x 16 = 256 positions is within the limit
    with lib.Model(save(tmp_path, a, "ok.npz", **{"config/feature_size": np.int32(16)})) as m:
        assert m.config["feature_size"] == 16
    # SPM off: no assignment, no limit
    with lib.Model(save(tmp_path, a, "off.npz", **{"config/feature_size": np.int32(17),
                                                   "config/matcher_prob": np.float32(0)})) as m:
        assert m.config["feature_size"] == 17


# -- item 11: configuration values ----------------------------------------------
def test_float32_temperature_at_the_bound_loads(lib, tiny, tmp_path):
    _, a = tiny
    for key in ("config/temperature", "config/temperature_attn"):
        with lib.Model(save(tmp_path, a, **{key: np.float32(1e-6)})) as m:
            assert m.config[key.split("/")[1]] == pytest.approx(1e-6)
    err = load_error(lib, save(tmp_path, a, **{"config/temperature": np.float32(9e-7)}))
    assert err.status == FORMAT and "8.99999975e-07" in str(err), str(err)


def test_bool_format_version_is_refused(lib, tiny, tmp_path):
    _, a = tiny
    err = load_error(lib, save(tmp_path, a, **{"config/format_version": np.bool_(True)}))
    assert err.status == FORMAT and "format_version" in str(err) and "bool" in str(err)
    err = load_error(lib, save(tmp_path, a, **{"config/top_k": np.bool_(True)}))
    assert err.status == FORMAT and "top_k" in str(err)
    # learnable_matcher takes a bool (docs/weight-format.md)
    with lib.Model(save(tmp_path, a, **{"config/learnable_matcher": np.bool_(True)})) as m:
        assert m.config["learnable_matcher"] is True


# -- item 7 -------------------------------------------------------------------
def test_integer_members_count_at_their_size(lib, tiny, tmp_path):
    """16 MiB of bool members (unused by the model) under a 24 MiB limit: they
    used to be widened to 128 MiB of int64 while loading; now they are kept
    at their size, and the limit counts what is kept."""
    _, a = tiny
    extra = {f"extra{i}": np.zeros(4 << 20, np.bool_) for i in range(4)}
    p = save(tmp_path, a, **extra)
    with lib.Model(p, max_total_bytes=24 << 20) as m:
        assert m.config["method"] == "lwfm-spm"
    # float16 members are widened to float32: the limit counts the float32 size
    half = {f"half{i}": np.zeros(2 << 20, np.float16) for i in range(4)}  # 16 MiB as float16
    p = save(tmp_path, a, "half.npz", **half)
    err = None
    with pytest.raises(lib.Error) as e:
        lib.Model(p, max_total_bytes=24 << 20)
    err = e.value
    assert err.status == LIMIT and "max_total_bytes" in str(err), str(err)


# -- item 1: close() during a call ---------------------------------------------------
def test_close_waits_for_calls_in_flight(lib, tiny):
    """A call holds the handle (``_use()``, as every method does): close()
    refuses later calls at once but frees the C handle only when the call in
    flight returns."""
    path, _ = tiny
    m = lib.Model(path)
    x = np.zeros((1, 3, 32, 32), np.float32)
    expect = m.features(x)
    sup = m.prepare_support(np.zeros((2, 3, 32, 32), np.float32), [0, 1])
    fp = ctypes.POINTER(ctypes.c_float)
    with m._use() as h, sup._guard.use() as hs:
        m.close()
        sup.close()
        assert m.closed and sup.closed
        with pytest.raises(ValueError, match="closed lwfm.Model"):
            m.features(x)
        with pytest.raises(ValueError, match="closed lwfm.SupportSet"):
            sup.score(x)
        # the handles in use are still valid (ASan would report a use after free)
        out = np.empty_like(expect)
        assert lib._library().lwfm_model_features(h, x.ctypes.data_as(fp), 1, 3, 32, 32,
                                                  out.ctypes.data_as(fp), out.size) == 0
        np.testing.assert_array_equal(out, expect)
        logits = np.empty(2, np.float32)
        assert lib._library().lwfm_support_score(hs, x.ctypes.data_as(fp), 1, 3, 32, 32,
                                                 logits.ctypes.data_as(fp), 2) == 0
    assert m._guard._handle is None and sup._guard._handle is None  # freed on leaving


CLOSE_RACE = r"""
import sys, threading
import numpy as np
import lwfm
m = lwfm.Model(sys.argv[1])
x = np.random.default_rng(0).standard_normal((48, 3, 32, 32)).astype(np.float32)
sup = m.prepare_support(x[:4], [0, 1, 0, 1])
results = {"ok": 0, "closed": 0}
started = threading.Barrier(3)
def work(fn):
    started.wait()
    while True:
        try:
            fn()
            results["ok"] += 1
        except ValueError:
            results["closed"] += 1
            return
ts = [threading.Thread(target=work, args=(lambda: m.features(x),)),
      threading.Thread(target=work, args=(lambda: sup.score(x),))]
for t in ts:
    t.start()
started.wait()
for _ in range(3):  # let some calls run, then close under them
    m.features(x[:1])
sup.close()
m.close()
for t in ts:
    t.join()
assert results["closed"] == 2, results
print("ok", results)
"""


def test_close_during_calls_on_other_threads(lib, tiny):
    """Closing a Model and a SupportSet while other threads are inside
    features() / score(): no crash (it was a segfault in 6 of 6 runs), the
    threads then get ValueError. In a subprocess, so that a crash fails this
    test only."""
    import subprocess
    import sys
    path, _ = tiny
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", CLOSE_RACE, str(path)], capture_output=True,
                           text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-2000:])


# -- item 3: values the C API would not see as given ----------------------------------
def test_labels_outside_int32_are_refused(lib, tiny):
    path, _ = tiny
    s = np.zeros((2, 3, 32, 32), np.float32)
    with lib.Model(path) as m:
        for labels in (np.array([0, 2**32 + 1], np.int64), np.array([0, 2**63 + 1], np.uint64),
                       np.array([0, -(2**32) + 1], np.int64), np.array([0, -1])):
            with pytest.raises(ValueError, match="support label"):
                m.episode_score(s, labels, s[:1])
            with pytest.raises(ValueError, match="support label"):
                m.prepare_support(s, labels)


def test_way_and_sizes_are_not_wrapped(lib, tiny):
    path, _ = tiny
    s = np.zeros((2, 3, 32, 32), np.float32)
    with lib.Model(path) as m:
        with pytest.raises(OverflowError):
            m.episode_score(s, [0, 1], s[:1], way=2**64 + 2)
        with pytest.raises(ValueError, match="LWFM_LIMIT_WAY"):
            m.episode_score(s, [0, 1], s[:1], way=2**32 + 2)
        with pytest.raises(TypeError):
            m.episode_score(s, [0, 1], s[:1], way=2.5)
        with pytest.raises(OverflowError):
            m.feature_shape(2**64 + 32, 32)
        assert m.episode_score(s, [0, 1], s[:1], way=np.int64(2)).shape == (1, 2)


def test_paths_and_limits_are_not_truncated(lib, tiny):
    path, _ = tiny
    with pytest.raises(ValueError, match="NUL"):
        lib.Model(str(path) + "\0x")
    for bad in (-1, 0, 2**64 + 10**9):
        with pytest.raises(OverflowError):
            lib.Model(path, max_total_bytes=bad)
    with lib.Model(path, max_total_bytes=2**64 - 1) as m:
        assert not m.closed


MEMORY_PROBE = r"""
import resource, sys
import lwfm
with lwfm.Model(sys.argv[1], max_total_bytes=int(sys.argv[2])) as m:
    pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's shadow memory and quarantine skew the peak RSS")
def test_load_memory_within_twice_the_limit(lib, tiny, tmp_path):
    """A compressed file of 64 MiB of bool members under an 80 MiB limit: the
    load's peak grows by at most about twice the limit (before: every member
    widened to int64, 512 MiB). Peak RSS of a subprocess, compared with the
    same load of the model alone."""
    import subprocess
    import sys
    path, a = tiny
    big = dict(a)
    big.update({f"flags{i}": np.ones(16 << 20, np.bool_) for i in range(4)})
    p = tmp_path / "bools.npz"
    np.savez_compressed(p, **big)
    assert p.stat().st_size < 2 << 20

    def peak(file):
        r = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(file), str(80 << 20)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        return int(r.stdout.split()[-1])

    base, loaded = peak(path), peak(p)
    assert loaded - base < 2 * (80 << 20), (base, loaded)


# -- item 2: fork ----------------------------------------------------------------------
_FORKED_MODEL = None


def _child_features(x):
    return _FORKED_MODEL.features(x)


def test_multiprocessing_fork_after_use(lib, tiny):
    """multiprocessing with the fork start method after the parent computed:
    the child's call used to block forever in libgomp."""
    import multiprocessing
    global _FORKED_MODEL
    path, _ = tiny
    x = np.random.default_rng(2).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with lib.Model(path) as m:
        expect = m.features(x)  # the parent's OpenMP pool is now in use
        _FORKED_MODEL = m
        pool = multiprocessing.get_context("fork").Pool(1)
        try:
            got = pool.apply_async(_child_features, (x,)).get(timeout=120)
        finally:
            pool.terminate()
            pool.join()
            _FORKED_MODEL = None
        np.testing.assert_array_equal(got, expect)
