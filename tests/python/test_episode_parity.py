"""Episode logits of libLWFM against the PyTorch reference (bindings/python/lwfm_ref).

The reference runs the spec's reference formulation (MLP per pair, solver per
pair) in float64 on the same float32 features; libLWFM must agree within
1e-4 relative (max-abs error / max-abs logit) and predict the same classes
wherever the reference's top two logits are further apart than that."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import lwfm_ref
from conftest import export, rel_err

TOL = 1e-4


def synthetic_features(rng, n, C, fs):
    """Post-ReLU-like features: non-negative, sparse, a few strong channels."""
    x = rng.standard_normal((n, C, fs, fs)).astype(np.float32)
    return np.maximum(x, 0) * rng.uniform(0.5, 2.0, (n, 1, 1, 1)).astype(np.float32)


def reference_logits(model, s, labels, q):
    m = model.double()
    with torch.no_grad():
        out = m.episode_logits(torch.from_numpy(s).double(), torch.as_tensor(labels),
                               torch.from_numpy(q).double()).numpy()
    model.float()
    return out


def assert_same_predictions(got, expect, min_clear=0.8):
    srt = np.sort(expect, axis=1)
    clear = (srt[:, -1] - srt[:, -2]) > TOL * np.abs(expect).max()
    assert clear.mean() >= min_clear  # the check must mean something
    np.testing.assert_array_equal(got.argmax(1)[clear], expect.argmax(1)[clear])


def noisy_queries(rng, s, labels, way, per_class, noise=0.5):
    """Queries that are noisy copies of a support image of their class, so
    that even a random-weight network has clear answers to agree on."""
    first = [int(np.flatnonzero(labels == c)[0]) for c in range(way)]
    idx = np.repeat(first, per_class)
    q = s[idx] + noise * rng.standard_normal(s[idx].shape).astype(np.float32)
    return q.astype(np.float32), np.repeat(np.arange(way), per_class)


def episode_labels(rng, way, shot, shuffle=True):
    labels = np.repeat(np.arange(way), shot).astype(np.int32)
    return rng.permutation(labels) if shuffle else labels


CASES = [
    # way, shot, matcher_prob, top_k, fs
    (5, 1, 0.25, 1, 3),
    (5, 5, 0.25, 1, 3),
    (20, 1, 0.25, 1, 3),
    (20, 5, 0.25, 3, 3),
    (5, 1, 0.0, 1, 3),
    (5, 5, 0.0, 1, 5),
    (5, 1, 0.25, 3, 5),
    (20, 2, 1.0, 1, 5),
]


@pytest.mark.parametrize("way,shot,prob,top_k,fs", CASES)
def test_score_features_matches_reference(lib, tmp_path, way, shot, prob, top_k, fs):
    cfg = lwfm_ref.make_config(matcher_prob=prob, top_k=top_k, feature_size=fs)
    path, ref = export(tmp_path, cfg, seed=way + shot + fs)
    rng = np.random.default_rng(way * 100 + shot * 10 + fs)
    C = ref.out_channels
    labels = episode_labels(rng, way, shot)
    s = synthetic_features(rng, way * shot, C, fs)
    n_q = 2 * way if way * shot * fs < 200 else way
    q = synthetic_features(rng, n_q, C, fs)
    expect = reference_logits(ref, s, labels, q)
    with lib.Model(path) as m:
        got = m.score_features(s, labels, q)
        with m.prepare_support(s, labels, features=True) as sup:
            again = np.concatenate([sup.score(q[:2]), sup.score(q[2:])])
    assert got.shape == (n_q, way) and got.dtype == np.float32
    assert rel_err(got, expect) <= TOL
    assert_same_predictions(got, expect)
    np.testing.assert_allclose(again, got, rtol=0, atol=1e-6 * np.abs(got).max())


def test_query_blocks_and_single_queries(lib, tmp_path):
    """Enough queries that each thread scores several blocks of them (one
    correlation GEMM per block): the batch must equal the queries scored one
    at a time (no parallel region then), and both the reference."""
    path, ref = export(tmp_path, lwfm_ref.make_config(), seed=21)
    rng = np.random.default_rng(21)
    labels = episode_labels(rng, 5, 5)
    s = synthetic_features(rng, 25, ref.out_channels, 3)
    q = synthetic_features(rng, 70, ref.out_channels, 3)
    with lib.Model(path) as m:
        got = m.score_features(s, labels, q)
        with m.prepare_support(s, labels, features=True) as sup:
            one = np.concatenate([sup.score(q[i:i + 1]) for i in range(len(q))])
    np.testing.assert_allclose(one, got, rtol=0, atol=1e-6 * np.abs(got).max())
    pick = [0, 17, 35, 36, 52, 69]  # first / middle / last queries of the threads' ranges
    expect = reference_logits(ref, s, labels, q[pick])
    assert rel_err(got[pick], expect) <= TOL


def test_unequal_shots_and_label_order(lib, tmp_path):
    path, ref = export(tmp_path, lwfm_ref.make_config(), seed=11)
    rng = np.random.default_rng(5)
    labels = np.array([2, 0, 1, 1, 2, 2, 0, 3, 4, 4, 2], dtype=np.int32)
    s = synthetic_features(rng, len(labels), ref.out_channels, 3)
    q = synthetic_features(rng, 12, ref.out_channels, 3)
    expect = reference_logits(ref, s, labels, q)
    with lib.Model(path) as m:
        got = m.score_features(s, labels, q)
        # permuting the supports (with their labels) changes nothing
        perm = rng.permutation(len(labels))
        got_perm = m.score_features(s[perm], labels[perm], q)
    assert rel_err(got, expect) <= TOL
    np.testing.assert_allclose(got_perm, got, rtol=0, atol=1e-5 * np.abs(got).max())


@pytest.mark.parametrize("shot", [1, 5])
def test_episode_from_images_matches_reference(lib, tmp_path, shot):
    way, n_q = 5, 2
    path, ref = export(tmp_path, lwfm_ref.make_config(), seed=shot)
    rng = np.random.default_rng(shot)
    labels = episode_labels(rng, way, shot)
    s = rng.standard_normal((way * shot, 3, 84, 84)).astype(np.float32)
    q, truth = noisy_queries(rng, s, labels, way, n_q)
    with torch.no_grad():
        fs_ = ref.features(torch.from_numpy(s)).numpy()
        fq_ = ref.features(torch.from_numpy(q)).numpy()
    expect = reference_logits(ref, fs_, labels, fq_)
    with lib.Model(path) as m:
        got = m.episode_score(s, labels, q)
    assert rel_err(got, expect) <= TOL
    assert_same_predictions(got, expect, min_clear=0.6)
    assert (got.argmax(1) == truth).mean() >= 0.6


def test_converted_reference_checkpoint(lib, tmp_path):
    """A training checkpoint in the reference format ({'params': state_dict}
    with DataParallel's 'module.' prefix, fc included) through lwfm.convert."""
    torch.manual_seed(3)
    cfg = lwfm_ref.make_config(hyperpixel_ids=[6, 8], feature_size=5, top_k=3, num_classes=64)
    model = lwfm_ref.LWFMSPM(cfg).eval()
    lwfm_ref.randomize_bn(model, seed=4)
    ckpt = tmp_path / "max_acc.pth"
    torch.save({"params": {"module." + k: v for k, v in model.state_dict().items()}, "epoch": 7},
               ckpt)
    out = tmp_path / "converted.npz"
    r = subprocess.run([sys.executable, "-m", "lwfm.convert", "--method", "lwfm-spm",
                        "--hyperpixel-ids", "6", "8", "--feature-size", "5", "--top-k", "3",
                        str(ckpt), str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rng = np.random.default_rng(9)
    labels = episode_labels(rng, 5, 2)
    s = rng.standard_normal((10, 3, 84, 84)).astype(np.float32)
    q, _ = noisy_queries(rng, s, labels, 5, 2)
    with torch.no_grad():
        fs_, fq_ = (model.features(torch.from_numpy(a)).numpy() for a in (s, q))
    expect = reference_logits(model, fs_, labels, fq_)
    with lib.Model(out) as m:
        assert m.config["hyperpixel_ids"] == [6, 8] and m.config["top_k"] == 3
        got = m.episode_score(s, labels, q)
    assert rel_err(got, expect) <= TOL
    assert_same_predictions(got, expect)


def test_conv64f_large_feature_map(lib, tmp_path):
    """LWFM-SPM on Conv-64F with a 9x9 map (81 positions: the per-image
    preparation's general path and 81x81 assignments)."""
    cfg = lwfm_ref.make_config(backbone="conv64f", hyperpixel_ids=[1, 3], feature_size=9,
                               top_k=4)
    path, ref = export(tmp_path, cfg, seed=17)
    rng = np.random.default_rng(17)
    labels = episode_labels(rng, 5, 1)
    s = synthetic_features(rng, 5, ref.out_channels, 9)
    q = synthetic_features(rng, 6, ref.out_channels, 9)
    expect = reference_logits(ref, s, labels, q)
    with lib.Model(path) as m:
        got = m.score_features(s, labels, q)
    assert rel_err(got, expect) <= TOL
    assert_same_predictions(got, expect)
