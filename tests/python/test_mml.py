"""MML head (peers.md section 3) against the PyTorch reference."""
from pathlib import Path

import numpy as np
import pytest
import torch

import lwfm_ref
from conftest import SHARED, random_episode, reference_logits as reference, rel_err
from lwfm.weights import save_weights

MML_DIR = SHARED / "checkpoints" / "mml"


def export_mml(tmp_path, seed=0, train_way=5, **overrides):
    torch.manual_seed(seed)
    model = lwfm_ref.MML(overrides, train_way=train_way).eval()
    lwfm_ref.randomize_bn(model, seed=seed + 1)
    with torch.no_grad():   # a fusion layer with distinct per-slot statistics
        g = torch.Generator().manual_seed(seed + 2)
        bn = model.classifier.Norm_layer
        n = bn.num_features
        bn.weight.copy_(0.5 + torch.rand(n, generator=g))
        bn.bias.copy_(torch.rand(n, generator=g) - 0.5)
        bn.running_mean.copy_(torch.cat([torch.full((train_way,), -0.5),
                                         torch.full((train_way,), 300.0),
                                         torch.full((train_way,), 250.0)])
                              + torch.rand(n, generator=g))
        bn.running_var.copy_(torch.cat([torch.full((train_way,), 0.01),
                                        torch.full((train_way,), 400.0),
                                        torch.full((train_way,), 900.0)]))
        model.classifier.FC_layer.weight.copy_(torch.tensor([[[0.3, 2.5, 0.6]]]))
    path = tmp_path / "mml.npz"
    save_weights(path, {k: v.detach().numpy() for k, v in model.state_dict().items()},
                 model.config)
    return path, model


@pytest.mark.parametrize("distance", ["wass", "kl", "w2"])
@pytest.mark.parametrize("way,shot", [(5, 1), (5, 5), (20, 1), (20, 5)])
def test_mml_matches_reference(lib, tmp_path, distance, way, shot):
    path, model = export_mml(tmp_path, distance=distance)
    rng = np.random.default_rng(way * 10 + shot)
    size = 84 if way == 5 else 36           # keep the reference's loops quick
    support, labels, query = random_episode(rng, [shot] * way, 4, size)
    expect = reference(model, support, labels, query)
    with lib.Model(path) as m:
        assert m.config["distance"] == distance
        got = m.episode_score(support, labels, query)
        assert rel_err(got, expect) < 1e-4, (distance, way, shot)
        assert (got.argmax(1) == expect.argmax(1)).all()
        fs, fq = m.features(support), m.features(query)
        np.testing.assert_allclose(m.score_features(fs, labels, fq), got, rtol=1e-5, atol=1e-4)


def test_mml_unequal_shots(lib, tmp_path):
    path, model = export_mml(tmp_path, distance="kl", neighbor_k=2)
    rng = np.random.default_rng(3)
    support, labels, query = random_episode(rng, [2, 1, 3], 5, 40)
    expect = reference(model, support, labels, query)
    with lib.Model(path) as m:
        got = m.prepare_support(support, labels).score(query)
    assert rel_err(got, expect) < 1e-4


def test_mml_bad_fusion_layer(lib, tmp_path):
    path, model = export_mml(tmp_path)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    state["classifier.Norm_layer.running_var"][0] = -1.0
    bad = tmp_path / "bad.npz"
    save_weights(bad, state, model.config)
    with pytest.raises(lib.Error) as err:
        lib.Model(bad)
    assert "running_var" in str(err.value)
    state["classifier.Norm_layer.running_var"][0] = 1.0
    del state["classifier.FC_layer.weight"]
    save_weights(bad, state, model.config)
    with pytest.raises(lib.Error) as err:
        lib.Model(bad)
    assert "FC_layer" in str(err.value)


@pytest.mark.skipif(not MML_DIR.is_dir(), reason="MML checkpoints not available")
@pytest.mark.parametrize("shot", [1, 5])
def test_mml_authors_checkpoint(lib, tmp_path, shot):
    from lwfm import convert
    from lwfm.weights import load_weights
    src = MML_DIR / f"mml_wass_conv64f_tieredimagenet_5way{shot}shot.pth.tar"
    out = tmp_path / "mml.npz"
    convert.convert(str(src), str(out), "mml", {})
    tensors, config = load_weights(out)
    model = lwfm_ref.MML(config).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=False)
    rng = np.random.default_rng(shot)
    support, labels, query = random_episode(rng, [shot] * 5, 6, 84)
    support, query = np.tanh(support), np.tanh(query)
    expect = reference(model, support, labels, query)
    with lib.Model(out) as m:
        assert m.config["neighbor_k"] == 1 and m.config["distance"] == "wass"
        got = m.episode_score(support, labels, query)
    assert rel_err(got, expect) < 1e-4
    assert (got.argmax(1) == expect.argmax(1)).all()
