"""The per-pair LWE / SPM handles against the reference's internals, and
against the episode logits they make up."""
import numpy as np
import pytest
import torch

import lwfm_ref
from lwfm_ref.model import _attention, batched_assignment, cosine, pairwise_cosine
from conftest import export
from test_episode_parity import synthetic_features

TOL = 1e-4


@pytest.fixture
def pair_model(lib, tmp_path):
    cfg = lwfm_ref.make_config(top_k=2, feature_size=3)
    path, ref = export(tmp_path, cfg, seed=21)
    with lib.Model(path) as m:
        yield m, ref.double()


def reference_pair(ref, s, q):
    """Attention weights, global cosine, per-layer assignment/similarity/score
    for one pair, in the reference formulation (float64)."""
    s_t = torch.from_numpy(s).double().reshape(1, s.shape[0], -1)
    q_t = torch.from_numpy(q).double().reshape(1, q.shape[0], -1)
    s_t = s_t - s_t.mean(dim=1, keepdim=True)
    q_t = q_t - q_t.mean(dim=1, keepdim=True)
    ws_all, wq_all, ps, pq, sig, sims, scores = [], [], [], [], [], [], []
    with torch.no_grad():
        for i, (off, d) in enumerate(ref.layer_slices):
            sl, ql = s_t[:, off:off + d], q_t[:, off:off + d]
            _, ws, wq = _attention(sl, ql, ref.config["temperature_attn"])
            a_s = ws[:, :, None, :] * sl[None]                 # (1, 1, d, P)
            a_q = wq[:, :, None, :] * ql[:, None]
            ps.append(a_s.mean(-1).flatten())
            pq.append(a_q.mean(-1).flatten())
            u, v = a_s.transpose(-1, -2), a_q.transpose(-1, -2)
            sigma = batched_assignment(1.0 - pairwise_cosine(u, v))
            gu, gv = ref.matchers[i](u), ref.matchers[i](v)
            gvm = torch.gather(gv, 2, sigma[..., None].expand_as(gv))
            c = cosine(gu, gvm).flatten()
            ws_all.append(ws.flatten().numpy())
            wq_all.append(wq.flatten().numpy())
            sig.append(sigma.flatten().numpy())
            sims.append(c.numpy())
            scores.append(ref.config["matcher_prob"] * float(torch.topk(c, ref.config["top_k"]).values.sum()))
    g = float(cosine(torch.cat(ps), torch.cat(pq)))
    return np.array(ws_all), np.array(wq_all), g, np.array(sig), np.array(sims), np.array(scores)


def test_lwe_and_spm_pair_match_reference(pair_model):
    m, ref = pair_model
    rng = np.random.default_rng(3)
    for _ in range(4):
        s, q = synthetic_features(rng, 2, ref.out_channels, 3)
        ws, wq, g = m.lwe_pair(s, q)
        asg, sim, layer, score = m.spm_pair(s, q)
        e_ws, e_wq, e_g, e_sig, e_sim, e_scores = reference_pair(ref, s, q)
        np.testing.assert_allclose(ws, e_ws, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(wq, e_wq, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(ws.sum(1), ws.shape[1], rtol=1e-5)  # softmax columns
        assert abs(g - e_g) <= TOL
        np.testing.assert_array_equal(asg, e_sig)
        np.testing.assert_allclose(sim, e_sim, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(layer, e_scores, rtol=TOL, atol=TOL)
        assert score == pytest.approx(layer.max())
        for row in asg:  # a permutation per layer
            assert sorted(row) == list(range(len(row)))


def test_pair_terms_make_up_one_shot_logits(pair_model):
    """1-shot: logits[q, c] * T == global(q, c) + spm(q, c)."""
    m, ref = pair_model
    rng = np.random.default_rng(8)
    s = synthetic_features(rng, 4, ref.out_channels, 3)
    q = synthetic_features(rng, 3, ref.out_channels, 3)
    logits = m.score_features(s, np.arange(4), q)
    for i in range(3):
        for c in range(4):
            _, _, g = m.lwe_pair(s[c], q[i])
            *_, score = m.spm_pair(s[c], q[i])
            assert logits[i, c] * ref.config["temperature"] == pytest.approx(g + score, abs=1e-5)


def test_pair_handles_refuse_wrong_kind_and_shapes(lib, tmp_path):
    path, ref = export(tmp_path, lwfm_ref.make_config(matcher_prob=0.0), seed=2)
    f = np.ones((ref.out_channels, 3, 3), np.float32)
    with lib.Model(path) as m:
        ws, wq, g = m.lwe_pair(f, f)          # the fuser works without SPM
        assert ws.shape == (2, 9)
        with pytest.raises(lib.Error) as e:
            m.spm_pair(f, f)
        assert e.value.status == 10 and "matcher_prob" in str(e.value)
        with pytest.raises(lib.Error) as e:
            m.lwe_pair(np.ones((ref.out_channels, 5, 5), np.float32),
                       np.ones((ref.out_channels, 5, 5), np.float32))
        assert e.value.status == 6
        bad = f.copy()
        bad[0, 0, 0] = np.nan
        with pytest.raises(lib.Error) as e:
            m.lwe_pair(bad, f)
        assert e.value.status == 11
