"""RCN head (peers.md section 4, eval-mode BatchNorm) against the PyTorch reference."""
import numpy as np
import pytest
import torch

import lwfm_ref
from conftest import random_episode, reference_logits as reference, rel_err
from lwfm.weights import save_weights


def export_rcn(tmp_path, backbone="conv4", seed=0):
    torch.manual_seed(seed)
    model = lwfm_ref.RCN({"backbone": backbone}).eval()
    lwfm_ref.randomize_bn(model, seed=seed + 1)
    with torch.no_grad():   # keep about half the region weights positive
        for mod in model.explain_network.meta_learner:
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.zero_()
    path = tmp_path / f"rcn_{backbone}.npz"
    save_weights(path, {k: v.detach().numpy() for k, v in model.state_dict().items()},
                 model.config)
    return path, model


@pytest.mark.parametrize("backbone,way,shot", [("conv4", 5, 1), ("conv4", 5, 5),
                                               ("conv4", 20, 1), ("conv4", 20, 5),
                                               ("resnet12", 5, 2)])
def test_rcn_matches_reference(lib, tmp_path, backbone, way, shot):
    path, model = export_rcn(tmp_path, backbone)
    rng = np.random.default_rng(way + shot)
    n_query = 2 if backbone == "resnet12" else 5     # ResNet-12 in float64 is slow
    support, labels, query = random_episode(rng, [shot] * way, n_query, 84)
    expect = reference(model, support, labels, query)
    assert np.abs(expect).max() > 0    # the region weights are not all zero
    with lib.Model(path) as m:
        assert tuple(m.feature_shape(84, 84))[1:] == (5, 5)
        got = m.episode_score(support, labels, query)
        assert rel_err(got, expect) < 1e-4
        assert (got.argmax(1) == expect.argmax(1)).all()
        fs, fq = m.features(support), m.features(query)
        np.testing.assert_allclose(m.score_features(fs, labels, fq), got, rtol=1e-5, atol=1e-5)


def test_rcn_meta_learner_must_end_in_one_output(lib, tmp_path):
    path, model = export_rcn(tmp_path)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    for k in list(state):
        if k.startswith("explain_network.meta_learner.3.") or \
                k.startswith("explain_network.meta_learner.4."):
            del state[k]
    bad = tmp_path / "bad.npz"
    save_weights(bad, state, model.config)
    with pytest.raises(lib.Error) as err:
        lib.Model(bad)
    assert "1 output" in str(err.value)


def test_rcn_pair_explains_the_logits(lib, tmp_path):
    """lwfm_rcn_pair: per-region similarities, matches and weights equal the
    reference's, and their weighted sums average to the episode logits."""
    path, model = export_rcn(tmp_path)
    rng = np.random.default_rng(7)
    support, labels, query = random_episode(rng, [2, 1], 1, 84)
    with lib.Model(path) as m:
        fs, fq = m.features(support), m.features(query)
        logits = m.score_features(fs, labels, fq)
        terms = []
        for j in range(len(labels)):
            sim, match, weight, score = m.rcn_pair(fs[j], fq[0])
            with torch.no_grad():
                rs, rm, rw = lwfm_ref.rcn_regions(model.explain_network.meta_learner,
                                                  torch.from_numpy(fs[j]).flatten(1),
                                                  torch.from_numpy(fq[0]).flatten(1))
            np.testing.assert_allclose(sim, rs.numpy(), atol=1e-5)
            np.testing.assert_array_equal(match, rm.numpy())
            np.testing.assert_allclose(weight, rw.numpy(), rtol=1e-4, atol=1e-5)
            assert score == pytest.approx(float((weight * sim).sum()), rel=1e-5)
            terms.append(score)
        for c in range(2):
            expect = np.mean([t for t, l in zip(terms, labels) if l == c])
            assert logits[0, c] == pytest.approx(expect, rel=1e-4)
        with pytest.raises(lib.Error) as err:   # the LWFM-SPM views refuse an RCN model
            m.spm_pair(fs[0], fq[0])
        assert err.value.status == 10 and "rcn" in str(err.value)
        with pytest.raises(ValueError):         # the pair must have equal shapes
            m.rcn_pair(fs[0], fq[0][:, :4, :4])


def export_batch_stats(tmp_path, backbone="conv4", query_batch=25, seed=0):
    """An RCN model whose file asks for batch-statistics BatchNorm."""
    path, model = export_rcn(tmp_path, backbone, seed)
    from lwfm.weights import load_weights
    tensors, config = load_weights(path)
    out = tmp_path / f"rcn_{backbone}_batch{query_batch}.npz"
    save_weights(out, tensors, dict(config, batch_norm="batch", query_batch=query_batch))
    return out, model


def batch_stats_reference(model, support, labels, query, query_batch, features=False):
    m64 = model.double()
    try:
        return m64.episode_logits_batch_stats(
            torch.from_numpy(support).double(), torch.from_numpy(labels).long(),
            torch.from_numpy(query).double(), query_batch, features).numpy()
    finally:
        model.float()


@pytest.mark.parametrize("backbone,way,shot,n_query,query_batch",
                         [("conv4", 5, 1, 25, 25), ("conv4", 5, 5, 30, 25),
                          ("conv4", 20, 1, 7, 3), ("resnet12", 5, 1, 4, 3)])
def test_rcn_batch_statistics_match_reference(lib, tmp_path, backbone, way, shot, n_query,
                                              query_batch):
    """The authors' transductive mode (peers.md 4.7): BatchNorm statistics of
    the support batch, of each query batch, and of a query batch's (query,
    support, cell) rows in the meta-learner."""
    path, model = export_batch_stats(tmp_path, backbone, query_batch)
    rng = np.random.default_rng(way * shot + n_query)
    support, labels, query = random_episode(rng, [shot] * way, n_query, 84)
    expect = batch_stats_reference(model, support, labels, query, query_batch)
    # the statistics matter: eval-mode logits are far from these
    assert rel_err(reference(model, support, labels, query), expect) > 1e-2
    assert np.abs(expect).max() > 0
    with lib.Model(path) as m:
        assert m.config["batch_norm"] == "batch" and m.config["query_batch"] == query_batch
        got = m.episode_score(support, labels, query)
        assert rel_err(got, expect) < 1e-4
        assert (got.argmax(1) == expect.argmax(1)).all()
        with m.prepare_support(support, labels) as s:   # the same through a prepared set
            np.testing.assert_allclose(s.score(query), got, rtol=1e-5, atol=1e-6)
        # features: the backbone's statistics are those of each features() call
        fs = m.features(support)
        fq = np.concatenate([m.features(query[i:i + query_batch])
                             for i in range(0, n_query, query_batch)])
        np.testing.assert_allclose(m.score_features(fs, labels, fq), got, rtol=1e-4, atol=1e-5)
        # a query batch depends on its companions: the first query alone differs
        if n_query > 1:
            alone = m.episode_score(support, labels, query[:1])
            assert np.abs(alone - got[:1]).max() > 1e-4


def test_rcn_batch_statistics_refusals(lib, tmp_path):
    path, _ = export_batch_stats(tmp_path)
    with lib.Model(path) as m:
        with pytest.raises(lib.Error) as err:   # no per-pair view
            m.rcn_pair(np.zeros((64, 5, 5), np.float32), np.zeros((64, 5, 5), np.float32))
        assert "batch-statistics BatchNorm" in str(err.value)
    with pytest.raises(lib.Error) as err:
        lib.Model(path, precision="bf16")
    assert "fp32 only" in str(err.value)
    from lwfm.weights import WeightFileError, load_weights
    tensors, config = load_weights(path)
    with pytest.raises(WeightFileError):
        save_weights(tmp_path / "x.npz", tensors, dict(config, batch_norm="transductive"))


def test_rcn_pair_refuses_overflow(lib, tmp_path):
    """Finite features of extreme magnitude overflow inside the comparison:
    the pair view refuses (LWFM_ERR_NONFINITE) instead of returning NaN."""
    path, _ = export_rcn(tmp_path)
    with lib.Model(path) as m:
        fs = m.features(random_episode(np.random.default_rng(3), [1, 1], 1, 84)[0])
        big = np.full_like(fs[0], 3e38)
        for s, q in ((fs[0], big), (big, fs[1])):
            with pytest.raises(lib.Error) as err:
                m.rcn_pair(s, q)
            assert "overflowed to NaN or infinity" in str(err.value)
        assert np.isfinite(m.rcn_pair(fs[0], fs[1])[3])
