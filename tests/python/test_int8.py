"""int8 backbone (LWFM_PRECISION_INT8 / Model(precision='int8')) and its
calibration (lwfm_model_convolution_ranges, python3 -m lwfm.quantize).

int8 quantises each convolution's input to 8 bits with the file's calibrated
range and its (BatchNorm-folded) weights to 63 levels per output channel
(lib/backbone/quant.c). Two kinds of checks, with these tolerances:

  against a plain reference of those semantics (PyTorch reference model,
  float64, inputs and folded weights fake-quantised the same way): the
  largest and the mean |int8 - reference|, relative to the reference's
  largest and mean magnitude, far below int8's own distance from fp32 for
  one convolution and one ResNet block (only float rounding differs: a
  value on a rounding boundary may land one step away), looser for whole
  backbones (tolerances and measurements at the test);
  against fp32: relative L2 error of the features <= 0.15 per image
      (measured 0.03-0.09 on random and real weights); LWFM-SPM logits
      within 1e-3 of their largest magnitude (measured 3e-5 - 4e-5) with
      >= 90% of predictions equal (measured 100%); on real Omniglot
      episodes with the bundled model logits within 0.1 (measured 0.056)
      and predictions equal on >= 95% of the queries (docs/benchmarks.md:
      600 episodes, accuracy within 1 point).
"""
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

import lwfm_ref
from conftest import ROOT, SHARED, export, rel_err

BUNDLED = ROOT / "models" / "omniglot.npz"
BACKGROUND = SHARED / "data" / "omniglot" / "images_background.npz"
EVALUATION = SHARED / "data" / "omniglot" / "images_evaluation.npz"

FEATURE_L2_MAX = 0.15
LOGIT_REL_MAX = 1e-3
REAL_LOGIT_REL_MAX = 0.1


@pytest.fixture(scope="module")
def lwfm():
    if not os.environ.get("LWFM_LIBRARY"):
        pytest.skip("LWFM_LIBRARY is not set (run through 'make test')")
    import lwfm as mod
    return mod


def calibrate(lwfm, src, dst, x, percentile=100.0):
    """The quantize tool's steps on images x: ranges, members, file."""
    from lwfm.quantize import quant_members, write_with_members
    with lwfm.Model(src) as m:
        names = m.convolution_names()
        ranges = m.convolution_ranges(x)
    members = quant_members(names, ranges, percentile)
    write_with_members(str(src), str(dst), members)
    return {k[len("quant/"):]: float(v) for k, v in members.items()}


CONFIGS = {
    "conv64f-one-conv": dict(backbone="conv64f", hyperpixel_ids=[0], feature_size=3),
    "conv64f": dict(backbone="conv64f", hyperpixel_ids=[2, 3], feature_size=5),
    "resnet18-first-block": dict(hyperpixel_ids=[1], feature_size=3),
    "resnet18": dict(),
}


@pytest.fixture(scope="module")
def models(lwfm, tmp_path_factory):
    """name -> (calibrated path, reference model, ranges), random weights,
    calibrated on 8 random images other than the ones tested."""
    tmp = tmp_path_factory.mktemp("int8")
    out = {}
    for i, (name, over) in enumerate(CONFIGS.items()):
        path, ref = export(tmp, lwfm_ref.make_config(**over), seed=10 + i, name=f"{name}.npz")
        x = np.random.default_rng(100 + i).standard_normal((8, 3, 84, 84)).astype(np.float32)
        qpath = tmp / f"{name}-int8.npz"
        out[name] = (qpath, ref, calibrate(lwfm, path, qpath, x))
    return out


def _fake_quant_reference(ref, ranges, x):
    """The reference backbone in float64 with every convolution's input and
    folded weights quantised as quant.c does."""
    model = ref.double()
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    mods = list(model.named_modules())
    saved, hooks = {}, []
    convs = [(n, m) for n, m in convs if n + ".weight" in ranges]  # those the taps need
    for name, conv in convs:
        idx = next(i for i, (n, _) in enumerate(mods) if n == name)
        bn = next(m for _, m in mods[idx + 1:] if isinstance(m, torch.nn.BatchNorm2d))
        fold = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
        w = conv.weight.detach() * fold[:, None, None, None]
        wmax = w.abs().amax(dim=(1, 2, 3)).clamp_min(1e-30)
        wq = torch.round(w * (63.0 / wmax)[:, None, None, None]) * (wmax / 63.0)[:, None, None, None]
        saved[name] = conv.weight.detach().clone()
        conv.weight.data = wq / fold[:, None, None, None]
        r = ranges[name + ".weight"]

        def pre(mod, inp, r=r):
            # the product and its rounding in float32, as the library's
            # reorder (scale = levels / r in float32, round half to even)
            t = inp[0]
            lo, hi = (0, 255) if float(t.min()) >= 0 else (-127, 127)  # u8 after ReLU
            scale = np.float32(hi) / np.float32(r)
            q = torch.clamp(torch.round(t.float() * float(scale)), lo, hi)
            return (q.double() / float(scale),)
        hooks.append(conv.register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            return model.features(torch.from_numpy(x).double()).numpy()
    finally:
        for h in hooks:
            h.remove()
        for name, conv in convs:
            conv.weight.data = saved[name]
        model.float()


# (max, mean) tolerances: measured (9.9e-5, 2.2e-6), (1.7e-4, 4.2e-6),
# (6.2e-4, 1.7e-5), (5.8e-3, 2.9e-3); int8 against fp32 on the same inputs:
# (3.1e-3, 1.3e-3), (4.8e-3, 2.7e-3), (1.8e-2, 7.8e-3), (1.2e-2, 7.4e-3).
# The whole ResNet-18 check is the weak one: over 20 convolutions, values
# that float rounding puts on the other side of a step cascade; its first
# block (s8 stem, u8 pooling chain, u8 convolutions, residual sum) is exact.
@pytest.mark.parametrize("name,max_tol,mean_tol", [
    ("conv64f-one-conv", 3e-4, 2e-5), ("resnet18-first-block", 1e-3, 5e-5),
    ("conv64f", 5e-3, 2e-4), ("resnet18", 1e-2, 5e-3)])
def test_int8_matches_fake_quant_reference(lwfm, models, name, max_tol, mean_tol):
    path, ref, ranges = models[name]
    x = np.random.default_rng(7).standard_normal((3, 3, 84, 84)).astype(np.float32)
    with lwfm.Model(path, precision="int8") as m:
        got = m.features(x)
    want = _fake_quant_reference(ref, ranges, x)
    assert got.shape == want.shape
    mean = float(np.abs(got - want).mean() / np.abs(want).mean())
    assert rel_err(got, want) <= max_tol and mean <= mean_tol, (rel_err(got, want), mean)


def _l2(a, b):
    n = len(a)
    return np.linalg.norm((a - b).reshape(n, -1), axis=1) / np.linalg.norm(b.reshape(n, -1), axis=1)


@pytest.mark.parametrize("name", ["conv64f", "resnet18"])
def test_int8_features_close_to_fp32(lwfm, models, name):
    path = models[name][0]
    x = np.random.default_rng(8).standard_normal((6, 3, 84, 84)).astype(np.float32)
    with lwfm.Model(path) as m32, lwfm.Model(path, precision="int8") as m8:
        assert m8.precision == "int8" and m8.config == m32.config
        f32, f8 = m32.features(x), m8.features(x)
    err = _l2(f8, f32)
    assert err.max() <= FEATURE_L2_MAX, err
    assert err.min() > 0  # int8 really ran


@pytest.mark.parametrize("name", ["conv64f", "resnet18"])
def test_int8_logits_close_to_fp32(lwfm, models, name):
    """LWFM-SPM episode logits (5-way 1-shot, 15 queries, random weights and
    images): max |int8 - fp32| <= 1e-3 of max |fp32| (measured 3e-5 and 4e-5)
    and the same predictions on >= 90% of the queries (measured 100%)."""
    from conftest import random_episode
    path = models[name][0]
    support, labels, query = random_episode(np.random.default_rng(1), [1] * 5, 15, 84)
    with lwfm.Model(path) as m32, lwfm.Model(path, precision="int8") as m8:
        l32 = m32.episode_score(support, labels, query)
        l8 = m8.episode_score(support, labels, query)
    assert rel_err(l8, l32) <= LOGIT_REL_MAX, rel_err(l8, l32)
    assert (l8.argmax(1) == l32.argmax(1)).mean() >= 0.9
    assert not np.array_equal(l8, l32)


def test_quant_members_leave_fp32_bit_identical(lwfm, tmp_path):
    path, _ = export(tmp_path, lwfm_ref.make_config(backbone="conv64f", hyperpixel_ids=[3]),
                     seed=5)
    x = np.random.default_rng(9).standard_normal((4, 3, 84, 84)).astype(np.float32)
    calibrate(lwfm, path, tmp_path / "q.npz", x)
    with lwfm.Model(path) as a, lwfm.Model(tmp_path / "q.npz") as b:
        np.testing.assert_array_equal(a.features(x), b.features(x))


def test_convolution_names_and_ranges(lwfm, models):
    path = models["resnet18"][0]
    with lwfm.Model(path) as m:
        names = m.convolution_names()
        assert names[0] == "feature_extractor.initial_block.conv1.weight"
        assert len(names) == len(set(names)) == 20  # stem, 16 in blocks, 3 downsamples
        x = np.random.default_rng(1).standard_normal((2, 3, 84, 84)).astype(np.float32)
        r = m.convolution_ranges(x)
        assert r.shape == (2, 20)
        np.testing.assert_allclose(r[:, 0], np.abs(x).reshape(2, -1).max(1), rtol=0)
        assert np.all(r > 0)
    with lwfm.Model(path, precision="int8") as m8:
        with pytest.raises(lwfm.Error, match="fp32"):
            m8.convolution_ranges(x)


def test_int8_refused_without_calibration(lwfm, tmp_path):
    path, _ = export(tmp_path, lwfm_ref.make_config(backbone="conv64f", hyperpixel_ids=[3]))
    with pytest.raises(lwfm.Error, match="lwfm.quantize") as e:
        lwfm.Model(path, precision="int8")
    assert e.value.status_name == "missing tensor in weight file"
    lwfm.Model(path).close()  # fp32 needs none


def _with_member(src, dst, key, arr):
    from lwfm.quantize import write_with_members
    with zipfile.ZipFile(src) as z:
        keep = {n[:-4]: np.load(z.open(n)) for n in z.namelist() if n.startswith("quant/")}
    keep[key] = arr
    write_with_members(str(src), str(dst), keep)


@pytest.mark.parametrize("value,match", [
    (np.float32(np.nan), "non-finite"), (np.float32(np.inf), "non-finite"),
    (np.float32(0), "finite and > 0"), (np.float32(-1), "finite and > 0"),
    (np.ones(2, np.float32), "shape"), (np.ones((1, 1), np.float32), "shape"),
    (np.int32(3), "expected a float array"), (np.float32(1e-38), "too small for int8"),
])
def test_bad_quant_members_refused(lwfm, models, tmp_path, value, match):
    path = models["conv64f"][0]
    with lwfm.Model(path) as m:
        key = "quant/" + m.convolution_names()[1]
    bad = tmp_path / "bad.npz"
    _with_member(path, bad, key, np.asarray(value))
    with pytest.raises(lwfm.Error, match=match):
        lwfm.Model(bad, precision="int8")
    if match != "too small for int8":  # an int8-only failure: fp32 never rescales the bias
        with pytest.raises(lwfm.Error, match=match):
            lwfm.Model(bad)


_THREADS_SCRIPT = r"""
import ctypes, os, sys
import numpy as np
import lwfm
gomp = ctypes.CDLL("libgomp.so.1")
x = np.random.default_rng(3).standard_normal((21, 3, 84, 84)).astype(np.float32)
def features(threads, image_parallel="1"):
    gomp.omp_set_num_threads(threads)
    os.environ["LWFM_IMAGE_PARALLEL"] = image_parallel
    with lwfm.Model(sys.argv[1], precision="int8") as m:
        return m.features(x)
np.save(sys.argv[2], np.stack([features(1), features(2), features(2, "0")]))
"""


def test_int8_features_do_not_depend_on_threads(lwfm, models, tmp_path):
    """Integer accumulation and the same f32 epilogue: bit-identical on 1 and
    2 threads, image-parallel or not."""
    out = tmp_path / "f.npy"
    env = dict(os.environ, OMP_NUM_THREADS="2")
    subprocess.run([sys.executable, "-c", _THREADS_SCRIPT, str(models["resnet18"][0]), str(out)],
                   check=True, env=env, timeout=300)
    one, two, layer = np.load(out)
    np.testing.assert_array_equal(two, one)
    np.testing.assert_array_equal(layer, one)


@pytest.mark.skipif(not (BACKGROUND.exists() and EVALUATION.exists()),
                    reason="Omniglot is not in ../shared/data")
def test_int8_bundled_omniglot(lwfm, tmp_path):
    """The quantize command on Omniglot's training images, then 20 test
    episodes (5-way 1-shot, 15 queries): logits within 0.1 of their largest
    magnitude (measured <= 0.056, median 0.04, with the bundled model's
    ranges) and predictions as fp32's on >= 95% of the queries."""
    from lwfm.episodes import EpisodeSampler, OmniglotSet
    out = tmp_path / "omniglot-int8.npz"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "bindings" / "python"))
    r = subprocess.run([sys.executable, "-m", "lwfm.quantize", str(BUNDLED), "--data",
                        str(BACKGROUND), "--images", "32", "--output", str(out)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ds = OmniglotSet(str(EVALUATION))
    sampler = EpisodeSampler(ds.class_sizes, 5, 1, 15, seed=1)
    same = total = 0
    with lwfm.Model(out) as m32, lwfm.Model(out, precision="int8") as m8:
        for _ in range(20):
            s_items, s_lab, q_items, _ = sampler.episode()
            s = m32.preprocess(list(ds.load(s_items)))
            q = m32.preprocess(list(ds.load(q_items)))
            la = m32.episode_score(s, np.array(s_lab, np.int32), q)
            lb = m8.episode_score(s, np.array(s_lab, np.int32), q)
            assert rel_err(lb, la) <= REAL_LOGIT_REL_MAX, rel_err(lb, la)
            a, b = la.argmax(1), lb.argmax(1)
            same += int((a == b).sum())
            total += len(a)
    assert same >= 0.95 * total, (same, total)


def test_quant_member_as_one_element_vector(lwfm, models, tmp_path):
    """lwfm.weights.save_weights writes scalars as shape (1,): accepted."""
    path = models["conv64f"][0]
    with lwfm.Model(path) as m:
        key = "quant/" + m.convolution_names()[0]
    ok = tmp_path / "ok.npz"
    _with_member(path, ok, key, np.full(1, 3.0, np.float32))
    lwfm.Model(ok, precision="int8").close()
