"""Classes with unequal numbers of support images (issue 14, item 5).

Image-to-class pooling (DN4, MML's pixel and part levels) favours the class
with the most images: its top-k are taken over more candidates. When the
classes' image counts differ, the library scores each support image alone
and averages per class (docs/methods.md, "Unequal shots"); these tests pin
the rule exactly on random weights, and its effect on real photos with the
authors' weights.
"""
import numpy as np
import pytest
import torch

import lwfm_ref
from conftest import DN4_DIR, SHARED, random_episode, reference_logits as reference, rel_err
from test_dn4 import export_dn4

MML_DIR = SHARED / "checkpoints" / "mml"
PHOTOS = SHARED / "data" / "mini-imagenet" / "test"


def test_dn4_unequal_classes_are_the_mean_of_their_images(lib, tmp_path):
    """Class 0 with 4 images scores each query as the mean of the four
    one-image episodes' scores; the other classes' columns are unchanged."""
    path, _ = export_dn4(tmp_path)
    rng = np.random.default_rng(11)
    support, labels, query = random_episode(rng, [4, 1, 1], 5, 40)
    with lib.Model(path) as m:
        got = m.episode_score(support, labels, query)
        singles = []
        for j in np.nonzero(labels == 0)[0]:
            keep = (labels != 0) | (np.arange(len(labels)) == j)
            singles.append(m.episode_score(support[keep], labels[keep], query))
    singles = np.stack(singles)
    assert rel_err(got[:, 0], singles[:, :, 0].mean(0)) < 1e-5
    assert rel_err(got[:, 1:], singles[0][:, 1:]) < 1e-5


def test_dn4_equal_classes_keep_the_pooled_measure(lib, tmp_path):
    """With equal counts the authors' pooled measure stays (the reference's),
    which is not the mean of the one-image scores."""
    path, model = export_dn4(tmp_path)
    rng = np.random.default_rng(12)
    support, labels, query = random_episode(rng, [2, 2], 4, 40)
    with lib.Model(path) as m:
        got = m.episode_score(support, labels, query)
        mean0 = np.mean([m.episode_score(support[[j, 1, 3]], np.array([0, 1, 1], np.int32),
                                         query)[:, 0] for j in (0, 2)], axis=0)
    assert rel_err(got, reference(model, support, labels, query)) < 1e-4
    assert np.abs(got[:, 0] - mean0).max() > 1e-3 * np.abs(mean0).max()


def _photo_episodes(n_episodes, extra, seed, n_query=10):
    """Paths of 5-way episodes from the miniImageNet test split: one support
    image per class, ``extra`` (<= 4) more for class 0, ``n_query`` queries per
    class; the same classes, images and queries whatever ``extra`` is."""
    classes = sorted(p for p in PHOTOS.iterdir() if p.is_dir())
    rng = np.random.default_rng(seed)
    for _ in range(n_episodes):
        picked = rng.choice(len(classes), 5, replace=False)
        sup, qry = [], []
        for c, k in enumerate(picked):
            files = sorted(classes[k].iterdir())
            take = rng.choice(len(files), 5 + n_query, replace=False)   # same draws for any extra
            sup.append([files[i] for i in take[:1 + (extra if c == 0 else 0)]])
            qry.append([files[i] for i in take[5:]])
        yield sup, qry


def _accuracy(model, episodes):
    from PIL import Image

    def load(paths):
        return model.preprocess([np.asarray(Image.open(p).convert("RGB")) for p in paths])

    right = total = 0
    for sup, qry in episodes:
        labels = np.concatenate([[c] * len(s) for c, s in enumerate(sup)]).astype(np.int32)
        truth = np.concatenate([[c] * len(q) for c, q in enumerate(qry)])
        logits = model.episode_score(load([p for s in sup for p in s]), labels,
                                     load([p for q in qry for p in q]))
        right += int((logits.argmax(1) == truth).sum())
        total += len(truth)
    return 100.0 * right / total


# LWFM-SPM: the training-free model on DN4's backbone (docs/models.md).
TRAINING_FREE = {"backbone": "conv64f", "learnable_matcher": False, "hyperpixel_ids": [2, 3],
                 "feature_size": 5, "image_size": 84, "resize": 0, "mean": [0.5] * 3,
                 "std": [0.5] * 3}


@pytest.mark.skipif(not PHOTOS.is_dir(), reason="miniImageNet test photos not present")
@pytest.mark.parametrize("method,checkpoint", [
    ("dn4", DN4_DIR / "dn4_conv64f_miniimagenet_5way5shot_k3.pth.tar"),
    ("mml", MML_DIR / "mml_wass_conv64f_tieredimagenet_5way5shot.pth.tar"),
    ("lwfm-spm", DN4_DIR / "dn4_conv64f_miniimagenet_5way5shot_k3.pth.tar")])
def test_unbalanced_photo_episodes_lose_at_most_5_points(lib, tmp_path, method, checkpoint):
    """The same queries and one-image classes, class 0 given 4 more images:
    accuracy may not fall by more than 5 points (pooling made it fall from 94%
    to 30% for DN4 on a user's photos). 12 episodes x 50 queries."""
    if not checkpoint.exists():
        pytest.skip(f"{checkpoint.name} not available")
    from lwfm import convert
    out = tmp_path / f"{method}.npz"
    if method == "lwfm-spm":
        convert.convert(str(checkpoint), str(out), method, TRAINING_FREE, backbone_only=True)
    else:
        convert.convert(str(checkpoint), str(out), method, {})
    with lib.Model(out) as model:
        balanced = _accuracy(model, _photo_episodes(12, 0, seed=4))
        unbalanced = _accuracy(model, _photo_episodes(12, 4, seed=4))
    print(f"{method}: balanced {balanced:.1f}%, one class with 5 images {unbalanced:.1f}%")
    assert balanced > 30.0                      # the model works on these photos at all
    assert unbalanced >= balanced - 5.0
