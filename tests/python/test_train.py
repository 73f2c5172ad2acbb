"""The trainer: deterministic, resumable, and its weight file is the library's."""
import json

import numpy as np
import pytest
import torch

from conftest import SHARED, rel_err

OMNIGLOT = SHARED / "data" / "omniglot" / "images_background.npz"
pytestmark = pytest.mark.skipif(not OMNIGLOT.exists(), reason="Omniglot data not present")


@pytest.fixture(scope="module")
def small_omniglot(tmp_path_factory):
    """The first 30 background characters (a few seconds of training)."""
    with np.load(OMNIGLOT) as archive:
        images = archive["images"][:30]
    path = tmp_path_factory.mktemp("data") / "omniglot30.npz"
    np.savez(path, images=images)
    return path


def train(data, workdir, *extra):
    from lwfm import train as trainer
    out = workdir / "model.npz"
    argv = ["--data", str(data), "--output", str(out), "--workdir", str(workdir),
            "--seed", "3", "--steps", "6", "--val-every", "3", "--val-episodes", "4",
            "--batch", "12", "--query", "2", "--val-fraction", "0.2", "--threads", "2",
            "--device", "cpu", *extra]
    assert trainer.main(argv) == 0
    return out, torch.load(workdir / "checkpoint.pt")


def test_deterministic_and_resumable(small_omniglot, tmp_path):
    _, a = train(small_omniglot, tmp_path / "a")
    _, b = train(small_omniglot, tmp_path / "b")
    _, c_half = train(small_omniglot, tmp_path / "c", "--stop-at", "4")
    assert c_half["step"] == 4
    _, c = train(small_omniglot, tmp_path / "c", "--resume")
    assert a["step"] == b["step"] == c["step"] == 6
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
        assert torch.equal(tensor, c["model"][name]), name
    # Training moved the weights away from their initialisation.
    import lwfm_ref
    torch.manual_seed(3)
    init = lwfm_ref.LWFMSPM(dict(a["config"], num_classes=a["model"]["fc.weight"].shape[0]))
    for name, tensor in init.state_dict().items():
        if tensor.dim() == 4 or name.startswith("matchers."):
            assert not torch.equal(tensor, a["model"][name]), name
    history = json.loads((tmp_path / "a" / "history.json").read_text())["history"]
    assert [h["step"] for h in history] == [3, 6]
    assert all(np.isfinite(h["loss"]) for h in history)


def test_weight_file_matches_reference(lib, small_omniglot, tmp_path):
    from lwfm.evaluate import _reference_model
    from lwfm.weights import load_weights
    out, ck = train(small_omniglot, tmp_path / "w")
    tensors, config = load_weights(out)
    assert config["method"] == "lwfm-spm" and config["backbone"] == "conv64f"
    assert config["image_size"] == 28 and len(config["mean"]) == 1
    assert not any(k.startswith("fc.") for k in tensors)
    ref, _ = _reference_model(str(out))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 1, 28, 28)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2], np.int32)
    with lib.Model(out) as model:
        assert model.input_shape == (1, 28, 28)
        got = model.episode_score(x[:6], labels, x[6:])
    with torch.no_grad():
        feats = ref.features(torch.from_numpy(x))
        expect = ref.episode_logits(feats[:6], torch.from_numpy(labels).long(), feats[6:])
    assert rel_err(got, expect.numpy()) < 1e-4


def test_bad_arguments(small_omniglot, tmp_path):
    from lwfm import train as trainer
    with pytest.raises(SystemExit):
        trainer.main(["--data", str(small_omniglot), "--output", str(tmp_path / "m.npz"),
                      "--workdir", str(tmp_path / "none"), "--resume"])


def test_rcn_training_writes_a_library_model(lib, small_omniglot, tmp_path):
    from lwfm.evaluate import _reference_model
    out, ck = train(small_omniglot, tmp_path / "rcn", "--method", "rcn")
    ref, cfg = _reference_model(str(out))
    assert cfg["method"] == "rcn" and cfg["backbone"] == "conv4"
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2], np.int32)
    with lib.Model(out) as model:
        got = model.episode_score(x[:6], labels, x[6:])
    with torch.no_grad():
        feats = ref.extract(torch.from_numpy(x))
        expect = ref.episode_logits(feats[:6], torch.from_numpy(labels).long(), feats[6:])
    assert rel_err(got, expect.numpy()) < 1e-4


def test_folder_dataset_training(lib, tmp_path):
    """A folder-per-class tree of RGB PNGs (natural-image path: flips, 3 channels)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    root = tmp_path / "tree"
    for c in range(12):
        (root / f"class{c:02d}").mkdir(parents=True)
        base = rng.integers(0, 256, size=(3,))
        for i in range(6):
            img = np.clip(base + rng.normal(0, 40, (30, 26, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"class{c:02d}" / f"{i}.png")
    from lwfm import train as trainer
    out = tmp_path / "m.npz"
    assert trainer.main(["--data", str(root), "--output", str(out), "--workdir",
                         str(tmp_path / "w"), "--steps", "2", "--val-every", "2",
                         "--val-episodes", "2", "--batch", "8", "--query", "1",
                         "--val-fraction", "0.4", "--backbone", "conv64f", "--image-size", "24",
                         "--resize", "28", "--threads", "2", "--device", "cpu"]) == 0
    with lib.Model(out) as model:
        cfg = model.config
        assert model.input_shape == (3, 24, 24)
        assert cfg["resize"] == 28 and len(cfg["mean"]) == 3
        x = model.preprocess([np.zeros((40, 30, 3), np.uint8)] * 4)
        assert x.shape == (4, 3, 24, 24)
        logits = model.episode_score(x[:2], np.array([0, 1], np.int32), x[2:])
        assert np.isfinite(logits).all()


def _photo_tree(root, classes=12, per_class=6, size=(30, 26)):
    from PIL import Image
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c:02d}").mkdir(parents=True)
        base = rng.integers(0, 256, size=(3,))
        for i in range(per_class):
            img = np.clip(base + rng.normal(0, 40, size + (3,)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"class{c:02d}" / f"{i}.jpg", quality=95)
    return root


def test_photo_recipe_pretrain_then_episodic_is_resumable(lib, tmp_path):
    """Photos: a pretraining stage, then episodic steps, on one step counter;
    stopping inside stage 1 and at the stage boundary, then resuming, gives
    the weights of an uninterrupted run bit for bit."""
    root = _photo_tree(tmp_path / "tree")

    def run(workdir, *extra):
        from lwfm import train as trainer
        argv = ["--data", str(root), "--output", str(workdir / "m.npz"), "--workdir",
                str(workdir), "--seed", "5", "--pretrain-steps", "3", "--pretrain-batch", "6",
                "--steps", "2", "--val-every", "2", "--val-episodes", "2", "--batch", "4",
                "--query", "1", "--val-fraction", "0.4", "--backbone", "conv64f",
                "--image-size", "24", "--resize", "28", "--threads", "2", "--device", "cpu",
                *extra]
        assert trainer.main(argv) == 0
        return torch.load(workdir / "checkpoint.pt")

    a = run(tmp_path / "a")
    assert run(tmp_path / "b", "--stop-at", "2")["step"] == 2
    assert run(tmp_path / "b", "--resume", "--stop-at", "3")["step"] == 3
    b = run(tmp_path / "b", "--resume")
    assert a["step"] == b["step"] == 5
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    stages = [h["stage"] for h in a["history"]]
    assert stages == ["pretrain", "pretrain", "episodic", "episodic"]   # steps 2, 3 (end of
    # stage 1, also kept as pretrained.pt), 4, 5
    assert torch.load(tmp_path / "a" / "pretrained.pt")["step"] == 3
    # The decoded images were cached in the work directory and reused.
    assert len(list((tmp_path / "a").glob("photos-*.npy"))) == 1
    with lib.Model(tmp_path / "a" / "m.npz") as model:
        assert model.input_shape == (3, 24, 24)


def test_photo_augment_identity_and_flip():
    """With the whole image as the crop and no jitter, a batch comes back as
    the normalised image or its mirror; jitter stays within [0, 1] pixels."""
    from lwfm.photos import PhotoAugment
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(8, 20, 20, 3), dtype=np.uint8)
    aug = PhotoAugment([0.5, 0.4, 0.3], [0.2, 0.25, 0.3], crop_scale=1.0, jitter=0.0)
    plain = aug.plain(imgs).numpy()
    out = aug(imgs, np.random.default_rng(2)).numpy()
    flipped = 0
    for o, p in zip(out, plain):
        if np.allclose(o, p, atol=1e-5):
            continue
        assert np.allclose(o, p[:, :, ::-1], atol=1e-5)
        flipped += 1
    assert 0 < flipped < 8
    jit = PhotoAugment([0.0] * 3, [1.0] * 3, crop_scale=0.3, jitter=0.4)
    x = jit(imgs, np.random.default_rng(3)).numpy()
    assert x.shape == (8, 3, 20, 20) and x.min() >= 0.0 and x.max() <= 1.0
    assert not np.allclose(x, plain)
    with pytest.raises(ValueError):
        PhotoAugment([0.0] * 3, [1.0] * 3, crop_scale=0.0)


def test_dn4_batched_logits_equal_the_reference():
    import lwfm_ref
    from lwfm.trainees import dn4_logits_batched
    g = torch.Generator().manual_seed(0)
    s, q = torch.randn(6, 16, 5, 5, generator=g), torch.randn(4, 16, 5, 5, generator=g)
    labels = torch.tensor([1, 0, 2, 1, 2, 0])
    want = lwfm_ref.peers.dn4_logits(s, labels, q, 3)
    got = dn4_logits_batched(s, labels, q, 3)
    assert rel_err(got.numpy(), want.numpy()) < 1e-5


def test_dn4_head_from_a_pretrained_backbone(lib, tmp_path):
    """--method dn4 --init-from: stage 2 with DN4's head on the backbone the
    LWFM-SPM run pretrained (its WORKDIR/pretrained.pt); the weight file is a
    DN4 model of the library, equal to the reference on an episode."""
    from lwfm import train as trainer
    from lwfm.weights import load_weights
    import lwfm_ref
    root = _photo_tree(tmp_path / "tree")
    common = ["--data", str(root), "--seed", "5", "--val-episodes", "2", "--batch", "4",
              "--query", "1", "--val-fraction", "0.4", "--backbone", "conv64f", "--image-size",
              "24", "--resize", "28", "--threads", "2", "--device", "cpu"]
    assert trainer.main([*common, "--output", str(tmp_path / "a.npz"), "--workdir",
                         str(tmp_path / "a"), "--pretrain-steps", "2", "--pretrain-batch", "6",
                         "--steps", "1", "--val-every", "5"]) == 0
    pre = tmp_path / "a" / "pretrained.pt"
    assert torch.load(pre)["step"] == 2
    out = tmp_path / "dn4.npz"
    assert trainer.main([*common, "--method", "dn4", "--init-from", str(pre), "--output",
                         str(out), "--workdir", str(tmp_path / "d"), "--steps", "2",
                         "--val-every", "2", "--lr", "0.001"]) == 0
    tensors, config = load_weights(out)
    assert config["method"] == "dn4" and not any(k.startswith("fc.") for k in tensors)
    ref = lwfm_ref.DN4(dict(config, in_channels=3)).eval()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=False)
    x = np.random.default_rng(2).standard_normal((6, 3, 24, 24)).astype(np.float32)
    labels = np.array([0, 1, 2], np.int32)
    with torch.no_grad():
        feats = ref.extract(torch.from_numpy(x))
        want = ref.episode_logits(feats[:3], torch.from_numpy(labels).long(), feats[3:])
    with lib.Model(out) as m:
        got = m.episode_score(x[:3], labels, x[3:])
    assert rel_err(got, want.numpy()) < 1e-4
