"""bf16 backbone (lwfm_load_options_set_precision / Model(precision='bf16')).

bf16 keeps 8 bits of mantissa: activations and weights are rounded to it
between the convolutions (f32 accumulation inside them, f32 metric after
them). The tolerances below are stated against the fp32 library, whose own
parity with the PyTorch reference is tested elsewhere (1e-4 or better):

  features: max |bf16 - fp32| / max |fp32| <= 3e-2, and the mean absolute
            difference <= 1e-2 of the mean magnitude;
  logits:   max |bf16 - fp32| <= 5e-2 * max |fp32 logit|;
  predictions: equal on >= 90% of random queries (random weights give
            near-ties), >= 98% on real Omniglot episodes with the bundled
            model, and its 5-way 1-shot accuracy over 20 episodes within
            1 point of fp32 (docs/models.md: 600 episodes, 0.5-point target).
"""
import ctypes

import numpy as np
import pytest

import lwfm_ref
from conftest import ROOT, SHARED, cpu_runs_bf16, export, needs_bf16

OMNIGLOT = SHARED / "data" / "omniglot" / "images_evaluation.npz"
BUNDLED = ROOT / "models" / "omniglot.npz"

FEATURE_REL_MAX = 3e-2
FEATURE_REL_MEAN = 1e-2
LOGIT_REL_MAX = 5e-2


def _close_features(f16, f32):
    rel_max = float(np.abs(f16 - f32).max() / np.abs(f32).max())
    rel_mean = float(np.abs(f16 - f32).mean() / np.abs(f32).mean())
    return rel_max, rel_mean


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(fp32, bf16) pairs of the default ResNet-18 LWFM-SPM configuration and
    of a DN4 Conv-64F backbone, random weights."""
    import lwfm
    import os
    if not os.environ.get("LWFM_LIBRARY"):
        pytest.skip("LWFM_LIBRARY is not set (run through 'make test')")
    tmp = tmp_path_factory.mktemp("precision")
    out = {}
    path, _ = export(tmp, lwfm_ref.make_config(), seed=3, name="r18.npz")
    out["resnet18"] = (lwfm.Model(path), lwfm.Model(path, precision="bf16"))
    path, _ = export(tmp, lwfm_ref.make_config(backbone="conv64f", hyperpixel_ids=[2, 3],
                                               feature_size=5), seed=4, name="c64.npz")
    out["conv64f"] = (lwfm.Model(path), lwfm.Model(path, precision="bf16"))
    yield out
    for pair in out.values():
        for m in pair:
            m.close()


@needs_bf16
@pytest.mark.parametrize("name", ["resnet18", "conv64f"])
def test_bf16_features_close_to_fp32(models, name):
    m32, m16 = models[name]
    assert (m32.precision, m16.precision) == ("fp32", "bf16")
    assert m16.config == m32.config  # precision is not part of the model file
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 3, 84, 84)).astype(np.float32)
    f32, f16 = m32.features(x), m16.features(x)
    assert f16.dtype == np.float32 and f16.shape == f32.shape
    rel_max, rel_mean = _close_features(f16, f32)
    assert rel_max <= FEATURE_REL_MAX, rel_max
    assert rel_mean <= FEATURE_REL_MEAN, rel_mean
    assert rel_max > 0  # bf16 really ran (it is not fp32 under another name)


@needs_bf16
@pytest.mark.parametrize("name", ["resnet18", "conv64f"])
def test_bf16_logits_and_predictions(models, name):
    m32, m16 = models[name]
    rng = np.random.default_rng(1)
    support = rng.standard_normal((25, 3, 84, 84)).astype(np.float32)
    labels = np.repeat(np.arange(5), 5).astype(np.int32)
    query = rng.standard_normal((60, 3, 84, 84)).astype(np.float32)
    l32 = m32.episode_score(support, labels, query)
    l16 = m16.episode_score(support, labels, query)
    assert np.abs(l16 - l32).max() <= LOGIT_REL_MAX * np.abs(l32).max()
    assert (l16.argmax(1) == l32.argmax(1)).mean() >= 0.9
    # a prepared support set gives the same logits as the one-shot call
    with m16.prepare_support(support, labels) as s16:
        np.testing.assert_allclose(s16.score(query), l16, rtol=1e-5, atol=1e-5)


def test_bad_precision_rejected(lib):
    with pytest.raises(ValueError, match=r"precision must be one of \['bf16', 'fp32', 'int8'\]"):
        lib.Model(BUNDLED, precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        lib.Model(BUNDLED, precision="BF16")
    # the C option refuses unknown values with a message naming them
    c = lib._library()
    opts = ctypes.c_void_p()
    assert c.lwfm_load_options_create(ctypes.byref(opts)) == 0
    try:
        assert c.lwfm_load_options_set_precision(opts, 7) == 1  # LWFM_ERR_INVALID_ARGUMENT
        assert "unknown precision 7" in c.lwfm_last_error().decode()
        assert c.lwfm_load_options_set_precision(opts, 1) == 0
    finally:
        c.lwfm_load_options_destroy(opts)


@needs_bf16
@pytest.mark.skipif(not OMNIGLOT.exists(), reason="../shared/data/omniglot is not available")
def test_bf16_bundled_model_on_omniglot(lib):
    from lwfm.episodes import EpisodeSampler, OmniglotSet, preprocess
    m32, m16 = lib.Model(BUNDLED), lib.Model(BUNDLED, precision="bf16")
    data = OmniglotSet(str(OMNIGLOT))
    sampler = EpisodeSampler(data.class_sizes, 5, 1, 15, seed=11)
    same = correct32 = correct16 = total = 0
    for _ in range(20):
        s_items, s_labels, q_items, q_labels = sampler.episode()
        s = preprocess(data.load(s_items), m32.config)
        q = preprocess(data.load(q_items), m32.config)
        labels = np.asarray(s_labels, np.int32)
        l32 = m32.episode_score(s, labels, q)
        l16 = m16.episode_score(s, labels, q)
        assert np.abs(l16 - l32).max() <= LOGIT_REL_MAX * np.abs(l32).max()
        p32, p16 = l32.argmax(1), l16.argmax(1)
        same += int((p32 == p16).sum())
        correct32 += int((p32 == np.asarray(q_labels)).sum())
        correct16 += int((p16 == np.asarray(q_labels)).sum())
        total += len(q_labels)
    assert same / total >= 0.98, same / total
    assert abs(correct16 - correct32) / total <= 0.01, (correct32, correct16, total)


def test_bf16_loads_exactly_where_the_cpu_runs_it(lib):
    """On an AVX-512 CPU bf16 loads; elsewhere the load is refused at once
    (LWFM_ERR_UNSUPPORTED, 9) with a message that says why and what to do,
    not at the first call with oneDNN's status code."""
    if cpu_runs_bf16():
        with lib.Model(BUNDLED, precision="bf16") as m:
            assert m.precision == "bf16"
        return
    with pytest.raises(lib.Error) as err:
        lib.Model(BUNDLED, precision="bf16")
    assert err.value.status == 9
    assert "bf16 needs a CPU with AVX-512" in str(err.value)
    assert "fp32" in str(err.value)
