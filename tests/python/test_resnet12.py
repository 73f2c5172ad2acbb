"""ResNet-12 backbone (peers.md 4.1) with taps, and LWFM-SPM on it."""
import numpy as np
import pytest
import torch

import lwfm_ref
from conftest import export, rel_err


@pytest.mark.parametrize("taps,fs,size", [([3], 0, 84), ([2, 3], 3, 48), ([0, 1, 2, 3], 2, 40)])
def test_resnet12_features(lib, tmp_path, taps, fs, size):
    cfg = lwfm_ref.make_config(backbone="resnet12", hyperpixel_ids=taps, feature_size=fs,
                               matcher_prob=0.0)
    if fs == 0:   # native size needs equal tap sizes: a DN4-style feature file
        cfg = dict(lwfm_ref.DN4_CONFIG, backbone="resnet12", hyperpixel_ids=taps)
        torch.manual_seed(0)
        ref = lwfm_ref.build_backbone(cfg).eval()
        lwfm_ref.randomize_bn(ref, seed=1)
        from lwfm.weights import save_weights
        path = tmp_path / "r12.npz"
        save_weights(path, {k: v.detach().numpy() for k, v in ref.state_dict().items()}, cfg)
    else:
        path, model = export(tmp_path, cfg)
        ref = model.feature_extractor
    x = np.random.default_rng(0).standard_normal((1 if size == 84 else 2, 3, size, size))
    x = x.astype(np.float32)
    with torch.no_grad():
        expect = ref.double()(torch.from_numpy(x).double()).numpy()
    with lib.Model(path) as m:
        got = m.features(x)
    assert got.shape == expect.shape
    if fs == 0:
        assert got.shape[1:] == (640, 5, 5)
    assert rel_err(got, expect) < 1e-4


def test_lwfm_spm_on_resnet12(lib, tmp_path):
    cfg = lwfm_ref.make_config(backbone="resnet12", hyperpixel_ids=[2, 3], feature_size=3)
    path, model = export(tmp_path, cfg)
    rng = np.random.default_rng(1)
    support = rng.standard_normal((5, 3, 48, 48)).astype(np.float32)   # 3x3 at block 3
    query = rng.standard_normal((3, 3, 48, 48)).astype(np.float32)
    labels = np.arange(5, dtype=np.int32)
    m64 = model.double()
    with torch.no_grad():
        feats = m64.features(torch.from_numpy(np.concatenate([support, query])).double())
        expect = m64.episode_logits(feats[:5], torch.from_numpy(labels).long(), feats[5:]).numpy()
    with lib.Model(path) as m:
        got = m.episode_score(support, labels, query)
    assert rel_err(got, expect) < 1e-4
    assert (got.argmax(1) == expect.argmax(1)).all()
