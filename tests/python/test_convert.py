"""Tests of the weight-file format (lwfm.weights) and the checkpoint
converter (python3 -m lwfm.convert).

Run: PYTHONPATH=bindings/python /usr/bin/python3 -m pytest tests/python -q
"""

import os
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

import lwfm_ref
from lwfm import convert
from lwfm.weights import WeightFileError, load_weights, save_weights

ROOT = Path(__file__).resolve().parents[2]
DN4_DIR = Path("/work/shared/checkpoints/dn4")
DN4_FILES = sorted(DN4_DIR.glob("*.pth*")) if DN4_DIR.is_dir() else []
F32 = lambda x: float(np.float32(x))  # noqa: E731  (values as stored)

EXPECTED_DEFAULT_CONFIG = {
    "format_version": 1, "method": "lwfm-spm", "backbone": "resnet18", "first_padding": 3,
    "hyperpixel_ids": [7, 8], "feature_size": 3, "temperature": F32(0.2),
    "temperature_attn": F32(5.0), "matcher_prob": F32(0.25), "learnable_matcher": True,
    "top_k": 1, "image_size": 84, "resize": 92,
    "mean": [F32(125.3 / 255), F32(123.0 / 255), F32(113.9 / 255)],
    "std": [F32(63.0 / 255), F32(62.1 / 255), F32(66.7 / 255)],
}


def fabricated_state_dict(seed=0, **overrides):
    """State dict of a reference model with random weights, fc included."""
    torch.manual_seed(seed)
    model = lwfm_ref.LWFMSPM(lwfm_ref.make_config(num_classes=64, **overrides))
    return lwfm_ref.randomize_bn(model, seed).state_dict()


def save_ckpt(path, sd, wrap="params", prefix="module."):
    sd = OrderedDict((prefix + k, v) for k, v in sd.items())
    torch.save({wrap: sd, "epoch": 7} if wrap else sd, path)
    return path


def run_main(args, capsys):
    code = convert.main([str(a) for a in args])
    return code, capsys.readouterr().err


def stored_keys(sd):
    return [k for k in sd if not k.endswith("num_batches_tracked") and not k.startswith("fc.")]


@pytest.fixture(scope="module")
def default_sd():
    return fabricated_state_dict()


@pytest.fixture(scope="module")
def default_ckpt(default_sd, tmp_path_factory):
    return save_ckpt(tmp_path_factory.mktemp("ckpt") / "max_acc.pth", default_sd)


def test_converter_defaults_match_reference_defaults():
    ref = dict(lwfm_ref.DEFAULT_CONFIG)
    assert ref.pop("method") == "lwfm-spm"
    assert convert._DEFAULTS["lwfm-spm"] == ref
    dn4 = dict(lwfm_ref.DN4_CONFIG)
    assert dn4.pop("method") == "dn4"
    assert convert._DEFAULTS["dn4"] == dn4


# ----------------------------------------------------------------------------
# lwfm.weights
# ----------------------------------------------------------------------------

def test_weights_module_does_not_import_torch():
    code = ("import sys, lwfm.weights, lwfm.convert; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    env = dict(os.environ, PYTHONPATH=str(ROOT / 'bindings/python'))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.parametrize("compressed", [True, False])
def test_save_load_round_trip(tmp_path, compressed):
    rng = np.random.default_rng(0)
    sd = OrderedDict([
        ("module.features.0.weight", rng.standard_normal((4, 3, 3, 3))),   # float64 in
        ("features.1.running_var", rng.random(4).astype(np.float16)),
        ("features.1.num_batches_tracked", np.array(5)),
        ("fc.weight", rng.standard_normal((2, 4))),
        ("classifier.FC_layer.weight", rng.standard_normal((1, 1, 3)).astype(np.float32)),
    ])
    config = {"method": "mml", "backbone": "conv64f", "hyperpixel_ids": [3],
              "feature_size": 0, "neighbor_k": 1, "image_size": 84, "resize": 0,
              "mean": [0.5] * 3, "std": [0.5] * 3}
    path = tmp_path / "w.npz"
    save_weights(path, sd, config, compressed=compressed)
    tensors, cfg = load_weights(path)
    assert list(tensors) == ["features.0.weight", "features.1.running_var",
                             "classifier.FC_layer.weight"]
    assert all(t.dtype == np.float32 for t in tensors.values())
    np.testing.assert_array_equal(tensors["features.0.weight"],
                                  sd["module.features.0.weight"].astype(np.float32))
    np.testing.assert_array_equal(tensors["features.1.running_var"],
                                  sd["features.1.running_var"].astype(np.float32))
    assert cfg == dict(config, format_version=1)
    with zipfile.ZipFile(path) as zf:
        kinds = {i.compress_type for i in zf.infolist()}
        assert kinds == ({zipfile.ZIP_DEFLATED} if compressed else {zipfile.ZIP_STORED})
    with np.load(path) as z:     # exact on-disk dtypes and shapes of the config
        assert z["config/format_version"].dtype == np.int32
        assert z["config/format_version"].shape == ()
        assert z["config/method"].dtype == np.uint8 and bytes(z["config/method"]) == b"mml"
        assert z["config/hyperpixel_ids"].dtype == np.int32
        assert z["config/hyperpixel_ids"].shape == (1,)
        assert z["config/mean"].dtype == np.float32 and z["config/mean"].shape == (3,)
        assert "config/temperature" not in z.files


@pytest.mark.parametrize("change,match", [
    ({"method": "protonet"}, "method"),
    ({"backbone": "vgg"}, "backbone"),
    ({"temperature": None}, "temperature"),
    ({"top_k": 1.5}, "top_k"),
    ({"temperature": 0.0}, "temperature"),
    ({"std": [0.5, 0.0, 0.5]}, "std"),
    ({"mean": [0.5, 0.5]}, "mean"),
    ({"hyperpixel_ids": []}, "hyperpixel_ids"),
    ({"hyperpixel_ids": [7, 7]}, "hyperpixel_ids"),
    ({"colour": "red"}, "unknown"),
    ({"learnable_matcher": 2}, "learnable_matcher"),
    ({"first_padding": None}, "first_padding"),
])
def test_save_refuses_bad_config(tmp_path, change, match):
    config = dict(lwfm_ref.DEFAULT_CONFIG, **change)
    with pytest.raises(WeightFileError, match=match):
        save_weights(tmp_path / "w.npz", {"a.weight": np.zeros(2)}, config)
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_bad_tensors(tmp_path):
    cfg = lwfm_ref.DEFAULT_CONFIG
    with pytest.raises(WeightFileError, match="duplicate"):
        save_weights(tmp_path / "w.npz", {"module.a": np.zeros(1), "a": np.zeros(1)}, cfg)
    with pytest.raises(WeightFileError, match="non-finite"):
        save_weights(tmp_path / "w.npz", {"a": np.array([np.nan])}, cfg)
    with pytest.raises(WeightFileError, match="config"):
        save_weights(tmp_path / "w.npz", {"config/top_k": np.zeros(1)}, cfg)
    assert list(tmp_path.iterdir()) == []


def test_load_refuses_bad_files(tmp_path):
    bad_version = tmp_path / "v2.npz"
    np.savez(bad_version, **{"config/format_version": np.int32(2), "a": np.zeros(1)})
    with pytest.raises(WeightFileError, match="format_version"):
        load_weights(bad_version)
    not_zip = tmp_path / "junk.npz"
    not_zip.write_bytes(b"not a zip file at all")
    with pytest.raises(WeightFileError):
        load_weights(not_zip)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(WeightFileError, match="npz"):
        load_weights(single)


# ----------------------------------------------------------------------------
# lwfm.convert: LWFM-SPM checkpoints
# ----------------------------------------------------------------------------

def test_convert_default_round_trip(default_sd, default_ckpt, tmp_path, capsys):
    out = tmp_path / "model.npz"
    code, err = run_main(["--method", "lwfm-spm", default_ckpt, out], capsys)
    assert code == 0, err
    tensors, cfg = load_weights(out)
    assert list(tensors) == stored_keys(default_sd)
    for k, t in tensors.items():
        assert t.dtype == np.float32
        np.testing.assert_array_equal(t, default_sd[k].numpy())
    assert cfg == EXPECTED_DEFAULT_CONFIG
    assert "wrote" in err
    # The file rebuilds the model: config and tensors load strictly.
    model = lwfm_ref.LWFMSPM(cfg)
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(v) for k, v in tensors.items()}, strict=False)
    assert unexpected == [] and all(k.endswith("num_batches_tracked") for k in missing)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


@pytest.mark.parametrize("wrap,prefix", [("state_dict", "module."), (None, ""),
                                         ("params", "")])
def test_convert_accepts_checkpoint_forms(default_sd, tmp_path, capsys, wrap, prefix):
    ckpt = save_ckpt(tmp_path / "c.pth", default_sd, wrap=wrap, prefix=prefix)
    code, err = run_main(["--method", "lwfm-spm", "--uncompressed", ckpt, tmp_path / "o.npz"],
                         capsys)
    assert code == 0, err
    tensors, _ = load_weights(tmp_path / "o.npz")
    assert list(tensors) == stored_keys(default_sd)


def test_convert_non_default_options(tmp_path, capsys):
    overrides = dict(hyperpixel_ids=[4, 6, 8], feature_size=5, first_padding=2,
                     learnable_matcher=False, matcher_prob=1.0, top_k=3)
    sd = fabricated_state_dict(seed=1, **overrides)
    assert not any(k.startswith("matchers") for k in sd)
    ckpt = save_ckpt(tmp_path / "c.pth", sd)
    out = tmp_path / "o.npz"
    args = ["--method", "lwfm-spm", "--hyperpixel-ids", 4, 6, 8, "--feature-size", 5,
            "--first-padding", 2, "--no-learnable-matcher", "--matcher-prob", 1.0,
            "--top-k", 3, "--temperature", 0.1, "--temperature-attn", 2.0,
            "--image-size", 80, "--resize", 0, "--mean", 0.5071, 0.4866, 0.4409,
            "--std", 0.2009, 0.1984, 0.2023, ckpt, out]
    code, err = run_main(args, capsys)
    assert code == 0, err
    tensors, cfg = load_weights(out)
    assert list(tensors) == stored_keys(sd)
    assert cfg == dict(EXPECTED_DEFAULT_CONFIG, hyperpixel_ids=[4, 6, 8], feature_size=5,
                       first_padding=2, learnable_matcher=False, matcher_prob=1.0, top_k=3,
                       temperature=F32(0.1), temperature_attn=2.0, image_size=80, resize=0,
                       mean=[F32(v) for v in (0.5071, 0.4866, 0.4409)],
                       std=[F32(v) for v in (0.2009, 0.1984, 0.2023)])


def test_convert_without_spm_has_no_matchers(tmp_path, capsys):
    sd = fabricated_state_dict(seed=2, matcher_prob=0.0)
    code, err = run_main(["--method", "lwfm-spm", "--matcher-prob", 0,
                          save_ckpt(tmp_path / "c.pth", sd), tmp_path / "o.npz"], capsys)
    assert code == 0, err
    tensors, cfg = load_weights(tmp_path / "o.npz")
    assert cfg["matcher_prob"] == 0.0 and not any("matchers" in k for k in tensors)


def test_convert_backbone_only(tmp_path, capsys):
    """--backbone-only: another method's Conv-64F (keys without the
    'feature_extractor.' prefix, extra head keys) becomes the backbone of a
    training-free LWFM-SPM model."""
    sd = fabricated_state_dict(seed=3, backbone="conv64f", hyperpixel_ids=[2, 3],
                               learnable_matcher=False)
    pre = "feature_extractor."
    foreign = OrderedDict((k[len(pre):] if k.startswith(pre) else k, v) for k, v in sd.items())
    foreign["classifier.weight"] = torch.ones(5, 64)  # a head the model has no use for
    ckpt = save_ckpt(tmp_path / "dn4like.pth", foreign, wrap="state_dict", prefix="")
    args = ["--method", "lwfm-spm", "--backbone", "conv64f", "--hyperpixel-ids", 2, 3,
            "--no-learnable-matcher", "--backbone-only", ckpt, tmp_path / "o.npz"]
    code, err = run_main(args, capsys)
    assert code == 0, err
    tensors, cfg = load_weights(tmp_path / "o.npz")
    assert cfg["learnable_matcher"] is False and cfg["backbone"] == "conv64f"
    assert list(tensors) == stored_keys(sd) and all(k.startswith(pre) for k in tensors)
    for k, t in tensors.items():
        np.testing.assert_array_equal(t, sd[k].numpy())
    # a learned matcher would have no weights; other methods refuse the flag
    out = tmp_path / "refused.npz"
    err = assert_refused([a for a in args[:-1] if a != "--no-learnable-matcher"] + [out],
                         capsys, out, "--backbone-only leaves 'matchers.0.linear.0.weight'",
                         "--no-learnable-matcher")
    assert_refused(["--method", "dn4", "--backbone-only", ckpt, out], capsys, out,
                   "--backbone-only applies to --method lwfm-spm")
    # a backbone key missing from the checkpoint is still named
    del foreign["features.0.weight"]
    ckpt = save_ckpt(tmp_path / "short.pth", foreign, wrap="state_dict", prefix="")
    assert_refused(args[:-2] + [ckpt, out], capsys, out,
                   "missing key 'feature_extractor.features.0.weight'")


def assert_refused(args, capsys, out, *needles):
    code, err = run_main(args, capsys)
    assert code == 2
    for needle in needles:
        assert needle in err, err
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith("." + out.name)]
    return err


def test_convert_refuses_wrong_shape(default_sd, tmp_path, capsys):
    sd = OrderedDict(default_sd)
    sd["feature_extractor.layer3.1.conv2.weight"] = torch.zeros(256, 256, 1, 1)
    ckpt = save_ckpt(tmp_path / "c.pth", sd)
    out = tmp_path / "o.npz"
    assert_refused(["--method", "lwfm-spm", ckpt, out], capsys, out,
                   "'feature_extractor.layer3.1.conv2.weight'", "(256, 256, 1, 1)",
                   "(256, 256, 3, 3)")


def test_convert_refuses_missing_key(default_sd, tmp_path, capsys):
    sd = OrderedDict(default_sd)
    del sd["matchers.1.linear.2.weight"]
    ckpt = save_ckpt(tmp_path / "c.pth", sd)
    out = tmp_path / "o.npz"
    assert_refused(["--method", "lwfm-spm", ckpt, out], capsys, out,
                   "missing key 'matchers.1.linear.2.weight'")


def test_convert_refuses_unexpected_key(default_sd, tmp_path, capsys):
    sd = OrderedDict(default_sd)
    sd["feature_extractor.layer5.0.conv1.weight"] = torch.zeros(3)
    ckpt = save_ckpt(tmp_path / "c.pth", sd)
    out = tmp_path / "o.npz"
    assert_refused(["--method", "lwfm-spm", ckpt, out], capsys, out,
                   "unexpected key 'feature_extractor.layer5.0.conv1.weight'")


def test_convert_names_first_offence_in_model_order(default_sd, tmp_path, capsys):
    sd = OrderedDict(default_sd)
    sd["extra.weight"] = torch.zeros(1)                           # unexpected
    sd["matchers.0.linear.0.weight"] = torch.zeros(3, 3)         # wrong shape, later
    del sd["feature_extractor.layer2.0.downsample.1.bias"]       # missing, earliest
    ckpt = save_ckpt(tmp_path / "c.pth", sd)
    out = tmp_path / "o.npz"
    err = assert_refused(["--method", "lwfm-spm", ckpt, out], capsys, out,
                         "missing key 'feature_extractor.layer2.0.downsample.1.bias'")
    assert "matchers.0" not in err and "extra.weight" not in err


def test_convert_refuses_config_mismatch_and_keeps_old_output(default_ckpt, tmp_path, capsys):
    out = tmp_path / "o.npz"
    out.write_bytes(b"previous")
    # A learnable-matcher checkpoint converted as non-learnable: extra keys.
    code, err = run_main(["--method", "lwfm-spm", "--no-learnable-matcher", default_ckpt, out],
                         capsys)
    assert code == 2 and "unexpected key 'matchers.0.linear.0.weight'" in err
    # Taps (5, 6): the matchers have the wrong widths.
    code, err = run_main(["--method", "lwfm-spm", default_ckpt, out, "--hyperpixel-ids", 5, 6],
                         capsys)
    assert code == 2 and "'matchers.0.linear.0.weight'" in err and "(128, 256)" in err
    assert out.read_bytes() == b"previous"


def test_convert_usage_errors(default_ckpt, tmp_path, capsys):
    out = tmp_path / "o.npz"
    code, err = run_main(["--method", "dn4", "--temperature", 0.3, default_ckpt, out], capsys)
    assert code == 2 and "--temperature" in err
    code, err = run_main(["--method", "lwfm-spm", "--neighbor-k", 2, default_ckpt, out], capsys)
    assert code == 2 and "--neighbor-k" in err
    code, err = run_main(["--method", "lwfm-spm", "--std", 0.5, 0, 0.5, default_ckpt, out], capsys)
    assert code == 2 and "std" in err
    code, err = run_main(["--method", "lwfm-spm", "--backbone", "conv64f", default_ckpt, out],
                         capsys)
    assert code == 2 and "block id 7" in err
    code, err = run_main(["--method", "lwfm-spm", tmp_path / "absent.pth", out], capsys)
    assert code == 1
    for bad in (["--method", "protonet", default_ckpt, out],
                ["--method", "lwfm-spm", default_ckpt],
                ["--method", "lwfm-spm", default_ckpt, out, "extra"],
                ["--method", "lwfm-spm", "--hyperpixel-ids", "x7", default_ckpt, out]):
        with pytest.raises(SystemExit) as exc:
            convert.main([str(a) for a in bad])
        assert exc.value.code == 2
    assert not out.exists()


def test_command_line_module(default_sd, default_ckpt, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / 'bindings/python'))
    out = tmp_path / "o.npz"
    ok = subprocess.run([sys.executable, "-m", "lwfm.convert", "--method", "lwfm-spm",
                         str(default_ckpt), str(out)], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == ""
    assert list(load_weights(out)[0]) == stored_keys(default_sd)
    sd = OrderedDict(default_sd)
    sd["feature_extractor.initial_block.conv1.weight"] = torch.zeros(64, 1, 7, 7)
    bad = save_ckpt(tmp_path / "bad.pth", sd)
    out2 = tmp_path / "o2.npz"
    res = subprocess.run([sys.executable, "-m", "lwfm.convert", "--method", "lwfm-spm",
                          str(bad), str(out2)], env=env, capture_output=True, text=True)
    assert res.returncode == 2
    assert "'feature_extractor.initial_block.conv1.weight'" in res.stderr
    assert not out2.exists()


def test_tools_fallback_import(default_ckpt, tmp_path):
    """With only bindings/python on PYTHONPATH the converter finds lwfm_ref beside lwfm."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "bindings/python"))
    out = tmp_path / "o.npz"
    res = subprocess.run([sys.executable, "-m", "lwfm.convert", "--method", "lwfm-spm",
                          str(default_ckpt), str(out)], env=env, capture_output=True, text=True,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert out.exists()


# ----------------------------------------------------------------------------
# lwfm.convert: the real DN4 checkpoints
# ----------------------------------------------------------------------------

@pytest.mark.skipif(not DN4_FILES, reason="DN4 checkpoints not available")
@pytest.mark.parametrize("path", DN4_FILES, ids=lambda p: p.name)
def test_convert_real_dn4(path, tmp_path, capsys):
    out = tmp_path / "dn4.npz"
    code, err = run_main(["--method", "dn4", path, out], capsys)
    assert code == 0, err
    tensors, cfg = load_weights(out)
    sd = torch.load(path, map_location="cpu")["state_dict"]
    assert list(tensors) == stored_keys(sd)
    assert len(tensors) == 20
    for k, t in tensors.items():
        np.testing.assert_array_equal(t, sd[k].numpy())
    assert cfg == {"format_version": 1, "method": "dn4", "backbone": "conv64f",
                   "hyperpixel_ids": [3], "feature_size": 0, "neighbor_k": 3,
                   "image_size": 84, "resize": 0, "mean": [0.5] * 3, "std": [0.5] * 3}
    code, err = run_main(["--method", "dn4", "--neighbor-k", 1, path, out], capsys)
    assert code == 0 and load_weights(out)[1]["neighbor_k"] == 1
    # The strict (weights-only) loader cannot read these pickles: refused, exit 2.
    out2 = tmp_path / "strict.npz"
    code, err = run_main(["--method", "dn4", "--weights-only", path, out2], capsys)
    assert code == 2 and not out2.exists()
