"""Backbone features of libLWFM against the PyTorch reference (bindings/python/lwfm_ref).

Tolerance: max-abs error / max-abs value <= 1e-4 (fp32 both sides, BatchNorm
folded on ours, so the difference is rounding only)."""
import numpy as np
import pytest
import torch

import lwfm_ref
from conftest import DN4_DIR, export, rel_err

TOL = 1e-4


def reference_features(model, x):
    with torch.no_grad():
        return model.features(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("ids", [[7, 8], [4, 6, 8]])
@pytest.mark.parametrize("fs", [3, 5])
@pytest.mark.parametrize("hw", [(84, 84), (100, 120)])
def test_resnet18_matches_reference(lib, tmp_path, ids, fs, hw):
    cfg = lwfm_ref.make_config(hyperpixel_ids=ids, feature_size=fs)
    path, ref = export(tmp_path, cfg, seed=len(ids) * 10 + fs)
    x = np.random.default_rng(fs).standard_normal((5, 3) + hw).astype(np.float32)
    expect = reference_features(ref, x)
    with lib.Model(path) as m:
        assert m.feature_shape(*hw) == expect.shape[1:]
        got = m.features(x)
    assert got.shape == expect.shape and got.dtype == np.float32
    assert rel_err(got, expect) <= TOL


def test_resnet18_other_taps_and_padding(lib, tmp_path):
    cfg = lwfm_ref.make_config(hyperpixel_ids=[0, 2, 5], feature_size=4, first_padding=2)
    path, ref = export(tmp_path, cfg, seed=3)
    x = np.random.default_rng(1).standard_normal((3, 3, 64, 72)).astype(np.float32)
    with lib.Model(path) as m:
        got = m.features(x)
    assert rel_err(got, reference_features(ref, x)) <= TOL


@pytest.mark.parametrize("n", [1, 16, 37])
def test_batch_sizes_and_chunking(lib, tmp_path, n):
    """Batches smaller than, equal to and not a multiple of the internal chunk
    give the same per-image features as one image at a time."""
    path, ref = export(tmp_path, lwfm_ref.make_config(), seed=5)
    x = np.random.default_rng(n).standard_normal((n, 3, 84, 84)).astype(np.float32)
    with lib.Model(path) as m:
        got = m.features(x)
        single = np.concatenate([m.features(x[i:i + 1]) for i in range(min(n, 3))])
    assert rel_err(got, reference_features(ref, x)) <= TOL
    np.testing.assert_allclose(single, got[:len(single)], rtol=0, atol=1e-5 * np.abs(got).max())


def test_small_inputs(lib, tmp_path):
    """Any size works while every layer gets a non-empty input (as in PyTorch);
    an input that empties a layer is refused with LWFM_ERR_SHAPE."""
    path, ref = export(tmp_path, lwfm_ref.make_config(), seed=6)
    with lib.Model(path) as m:
        for hw in [(32, 32), (16, 20), (1, 1)]:
            x = np.random.default_rng(0).standard_normal((2, 3) + hw).astype(np.float32)
            assert rel_err(m.features(x), reference_features(ref, x)) <= TOL
    path, _ = export(tmp_path, lwfm_ref.make_config(backbone="conv64f", hyperpixel_ids=[3]),
                     seed=6, name="c64.npz")
    with lib.Model(path) as m:
        with pytest.raises(lib.Error) as e:
            m.features(np.zeros((1, 3, 3, 3), np.float32))
        assert e.value.status == 6 and "too small" in str(e.value)


@pytest.mark.parametrize("ids,fs", [([3], 0), ([1, 3], 5), ([0], 3)])
def test_conv64f_matches_reference(lib, tmp_path, ids, fs):
    cfg = lwfm_ref.make_config(backbone="conv64f", hyperpixel_ids=ids, feature_size=fs or 3)
    cfg["feature_size"] = fs
    if fs == 0:
        # native-size taps: export the backbone on its own as a DN4-style file
        torch.manual_seed(7)
        ref = lwfm_ref.build_backbone(dict(lwfm_ref.DN4_CONFIG)).eval()
        lwfm_ref.randomize_bn(ref, seed=8)
        from lwfm.weights import save_weights
        path = tmp_path / "dn4.npz"
        save_weights(path, {k: v.detach().numpy() for k, v in ref.state_dict().items()},
                     lwfm_ref.DN4_CONFIG)
        run = ref
    else:
        path, model = export(tmp_path, cfg, seed=9)
        run = model.feature_extractor
    x = np.random.default_rng(2).standard_normal((4, 3, 84, 84)).astype(np.float32)
    with torch.no_grad():
        expect = run(torch.from_numpy(x)).numpy()
    with lib.Model(path) as m:
        got = m.features(x)
    assert got.shape == expect.shape
    assert rel_err(got, expect) <= TOL


@pytest.mark.skipif(not DN4_DIR.is_dir(), reason="DN4 checkpoints not available")
@pytest.mark.parametrize("shot", [1, 5])
def test_conv64f_real_dn4_checkpoint(lib, tmp_path, shot):
    """The authors' trained Conv-64F weights, converted with lwfm.convert."""
    import subprocess
    import sys
    src = DN4_DIR / f"dn4_conv64f_miniimagenet_5way{shot}shot_k3.pth.tar"
    out = tmp_path / "dn4.npz"
    subprocess.run([sys.executable, "-m", "lwfm.convert", "--method", "dn4", str(src), str(out)],
                   check=True, capture_output=True)
    ref = lwfm_ref.build_backbone(dict(lwfm_ref.DN4_CONFIG)).eval()
    sd = torch.load(src, map_location="cpu")["state_dict"]
    ref.load_state_dict({k.replace("module.", ""): v for k, v in sd.items()})
    # images in the checkpoint's own input range: x/127.5 - 1
    x = (np.random.default_rng(shot).integers(0, 256, (6, 3, 84, 84)) / 127.5 - 1).astype(np.float32)
    with torch.no_grad():
        expect = ref(torch.from_numpy(x)).numpy()
    with lib.Model(out) as m:
        assert m.config["method"] == "dn4" and m.config["neighbor_k"] == 3
        got = m.features(x)
    assert got.shape == (6, 64, 21, 21)
    assert rel_err(got, expect) <= TOL
