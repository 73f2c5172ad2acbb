"""Galleries of hundreds of classes (issue 18): the library scores the supports
a chunk at a time (LWFM-SPM: a multiple of 16 supports whose correlations
stay near L2-sized, about 400 at 3 x 3 maps and 2 layers, its per-class sums
in slots reused once a class's last support is in; RCN: about 1 MiB
of scratch, 67 supports at 5 x 5 maps; MML gathers each class's images by
a counting sort). These galleries need several chunks, with unequal shots
and shuffled labels (a class's supports fall in different chunks); the
logits must equal the PyTorch reference (float64, the plain formulation)
within the parity tests' 1e-4 relative."""
import numpy as np
import pytest
import torch

import lwfm_ref
from conftest import export, rel_err

TOL = 1e-4


def gallery_labels(rng, way, most):
    shots = rng.integers(1, most + 1, way)
    labels = np.repeat(np.arange(way), shots).astype(np.int32)
    return rng.permutation(labels)


def features(rng, n, C, fs):
    x = rng.standard_normal((n, C, fs, fs)).astype(np.float32)
    return np.maximum(x, 0) * rng.uniform(0.5, 2.0, (n, 1, 1, 1)).astype(np.float32)


def reference(model, fn, s, labels, q):
    m = model.double()
    try:
        with torch.no_grad():
            return getattr(m, fn)(torch.from_numpy(s).double(), torch.as_tensor(labels),
                                  torch.from_numpy(q).double()).numpy()
    finally:
        model.float()


def test_lwfm_spm_gallery_in_chunks(lib, tmp_path):
    cfg = lwfm_ref.make_config(backbone="conv64f", hyperpixel_ids=[2, 3])
    path, ref = export(tmp_path, cfg, seed=3)
    rng = np.random.default_rng(18)
    # grouped by class (each class's sums use one reused slot), ~875 supports: 3 chunks
    labels = np.sort(gallery_labels(rng, 350, 4))
    assert len(labels) > 2 * 400
    C = ref.out_channels
    s = features(rng, len(labels), C, 3)
    q = features(rng, 5, C, 3)
    expect = reference(ref, "episode_logits_fast", s, labels, q)
    with lib.Model(path) as m:
        with m.prepare_support(s, labels, features=True) as sup:
            got = sup.score(q)
            one = sup.score(q[3:4])                  # a single query: one thread, one block
        perm = rng.permutation(len(labels))          # interleaved: every class open at once
        got_perm = m.score_features(s[perm], labels[perm], q)
    assert rel_err(got, expect) <= TOL
    np.testing.assert_array_equal(got.argmax(1), expect.argmax(1))
    np.testing.assert_allclose(one, got[3:4], rtol=0, atol=1e-6 * np.abs(got).max())
    np.testing.assert_allclose(got_perm, got, rtol=0, atol=1e-5 * np.abs(got).max())


def test_rcn_gallery_in_chunks(lib, tmp_path):
    from test_rcn import export_rcn
    path, model = export_rcn(tmp_path)
    rng = np.random.default_rng(19)
    labels = gallery_labels(rng, 120, 3)            # ~240 supports: 4 chunks of 67
    with lib.Model(path) as m:
        C, fh, fw = m.feature_shape(84, 84)
        s = features(rng, len(labels), C, fh)
        q = features(rng, 4, C, fh)
        got = m.score_features(s, labels, q)
    expect = reference(model, "episode_logits", s, labels, q)
    assert np.abs(expect).max() > 0
    assert rel_err(got, expect) < TOL


@pytest.mark.parametrize("distance", ["wass", "kl"])
def test_mml_gallery_class_members(lib, tmp_path, distance):
    from test_mml import export_mml
    path, model = export_mml(tmp_path, distance=distance)
    rng = np.random.default_rng(20)
    labels = gallery_labels(rng, 60, 3)
    with lib.Model(path) as m:
        C, fh, fw = m.feature_shape(20, 20)
        s = features(rng, len(labels), C, fh)
        q = features(rng, 3, C, fh)
        got = m.score_features(s, labels, q)
    expect = reference(model, "episode_logits", s, labels, q)
    assert rel_err(got, expect) < TOL
