"""DN4 head (peers.md section 2) against the PyTorch reference."""
import numpy as np
import pytest
import torch

import lwfm_ref
from conftest import DN4_DIR, random_episode, reference_logits as reference, rel_err
from lwfm.weights import save_weights


def export_dn4(tmp_path, seed=0, **overrides):
    torch.manual_seed(seed)
    model = lwfm_ref.DN4(overrides).eval()
    lwfm_ref.randomize_bn(model, seed=seed + 1)
    path = tmp_path / "dn4.npz"
    save_weights(path, {k: v.detach().numpy() for k, v in model.state_dict().items()},
                 model.config)
    return path, model


# sizes: 40 keeps the 20-way reference loop quick; k = 12 takes the top-k
# fold's scalar path (lane lists hold up to 8), 12 x 12 images give rows of 9
# positions (shorter than one vector)
@pytest.mark.parametrize("way,shot,k,size", [(5, 1, 3, 84), (5, 5, 3, 84), (20, 1, 1, 40),
                                             (20, 5, 7, 40), (5, 2, 12, 84), (5, 1, 3, 12)])
def test_dn4_matches_reference(lib, tmp_path, way, shot, k, size):
    path, model = export_dn4(tmp_path, neighbor_k=k)
    rng = np.random.default_rng(way * 10 + shot)
    support, labels, query = random_episode(rng, [shot] * way, 7, size)
    expect = reference(model, support, labels, query)
    with lib.Model(path) as m:
        got = m.episode_score(support, labels, query)
        assert rel_err(got, expect) < 1e-4
        assert (got.argmax(1) == expect.argmax(1)).all()
        # the feature-level form and a prepared support set give the same logits
        fs, fq = m.features(support), m.features(query)
        np.testing.assert_allclose(m.score_features(fs, labels, fq), got, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(m.prepare_support(support, labels).score(query), got,
                                   rtol=1e-5, atol=1e-3)


def test_dn4_unequal_shots_and_sizes(lib, tmp_path):
    path, model = export_dn4(tmp_path)
    rng = np.random.default_rng(5)
    support, labels, query = random_episode(rng, [1, 3, 2, 5], 6, 52)
    expect = reference(model, support, labels, query)
    with lib.Model(path) as m:
        got = m.episode_score(support, labels, query)
    assert rel_err(got, expect) < 1e-4


def test_dn4_neighbor_k_too_large(lib, tmp_path):
    path, _ = export_dn4(tmp_path, neighbor_k=200)
    rng = np.random.default_rng(0)
    support, labels, query = random_episode(rng, [1, 1], 2, 24)   # 6x6 = 36 descriptors
    with lib.Model(path) as m:
        with pytest.raises(lib.Error) as err:
            m.episode_score(support, labels, query)
    assert err.value.status_name == "invalid argument" or err.value.status == 1
    assert "neighbor_k" in str(err.value)


@pytest.mark.skipif(not DN4_DIR.is_dir(), reason="DN4 checkpoints not available")
def test_dn4_authors_checkpoint(lib, tmp_path):
    from lwfm import convert
    src = DN4_DIR / "dn4_conv64f_miniimagenet_5way1shot_k3.pth.tar"
    out = tmp_path / "dn4_real.npz"
    convert.convert(str(src), str(out), "dn4", {})
    from lwfm.weights import load_weights
    tensors, config = load_weights(out)
    model = lwfm_ref.DN4(config).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=False)
    rng = np.random.default_rng(1)
    support, labels, query = random_episode(rng, [1] * 5, 10, 84)
    support, query = np.tanh(support), np.tanh(query)     # within the +-1 input range
    expect = reference(model, support, labels, query)
    with lib.Model(out) as m:
        assert m.config["neighbor_k"] == 3
        got = m.episode_score(support, labels, query)
    assert rel_err(got, expect) < 1e-4
    assert (got.argmax(1) == expect.argmax(1)).all()
