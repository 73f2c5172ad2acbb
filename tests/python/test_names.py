"""Class names in the Python API (issue 17, item 3): labels of any hashable
type, results that carry them, SupportSet.from_folder with the lwfm
command's rules (and the skipped files with their reasons), predictions as
(name, probability)."""
import os
from pathlib import Path

import numpy as np
import pytest

import lwfm

ROOT = Path(__file__).resolve().parents[2]
OMNIGLOT = str(ROOT / "models" / "omniglot.npz")


@pytest.fixture(scope="module")
def model():
    with lwfm.Model(OMNIGLOT) as m:
        yield m


def _glyph(kind, shift=0, side=36):
    img = np.full((side, side), 235, np.uint8)
    if kind == 0:
        img[:, 10 + shift:16 + shift] = 10      # a vertical bar
    elif kind == 1:
        img[10 + shift:16 + shift, :] = 10      # a horizontal bar
    else:
        for i in range(side):                   # a diagonal
            img[i, max(0, i - 3):i + 3] = 10
    return img


@pytest.fixture(scope="module")
def images(model):
    support = model.preprocess([_glyph(k) for k in (0, 1, 2) for _ in range(2)])
    query = model.preprocess([_glyph(k, 2) for k in (0, 1, 2)])
    return support, query


def test_string_labels_match_integer_labels(model, images):
    support, query = images
    names = ["vertical"] * 2 + ["horizontal"] * 2 + ["diagonal"] * 2
    by_index = model.episode_score(support, [0, 0, 1, 1, 2, 2], query)
    by_name = model.episode_score(support, names, query)
    np.testing.assert_array_equal(by_name, by_index)
    # numpy string arrays and tuples (any hashable) too; order of first appearance
    np.testing.assert_array_equal(model.episode_score(support, np.array(names), query), by_index)
    tuples = [("a", 1)] * 2 + [("b", 2)] * 2 + [("c", 3)] * 2
    np.testing.assert_array_equal(model.episode_score(support, tuples, query), by_index)
    with model.prepare_support(support, names) as s:
        assert s.classes == ("vertical", "horizontal", "diagonal")
        np.testing.assert_array_equal(s.score(query), by_index)
    with model.prepare_support(support, [0, 0, 1, 1, 2, 2]) as s:
        assert s.classes == (0, 1, 2)


def test_predict_gives_names_and_probabilities(model, images):
    support, query = images
    names = ["vertical"] * 2 + ["horizontal"] * 2 + ["diagonal"] * 2
    preds = model.predict(support, names, query)
    assert len(preds) == 3
    probs = model.probabilities(model.episode_score(support, names, query))
    for row, p in zip(preds, probs):
        assert [type(x) for x in row] == [lwfm.Prediction] * 3
        assert sorted((x.name for x in row)) == sorted(set(names))
        assert [x.probability for x in row] == sorted((x.probability for x in row), reverse=True)
        assert sum(x.probability for x in row) == pytest.approx(1.0, abs=1e-5)
        want = dict(zip(("vertical", "horizontal", "diagonal"), p.tolist()))
        for name, prob in row:  # a plain (name, probability) tuple
            assert prob == pytest.approx(want[name], rel=1e-6)
    assert [len(r) for r in model.predict(support, names, query, top=1)] == [1, 1, 1]
    # the trained model tells these glyphs apart
    assert [r[0].name for r in preds] == ["vertical", "horizontal", "diagonal"]


def test_bad_labels(model, images):
    support, query = images
    with pytest.raises(TypeError, match="hashable"):
        model.episode_score(support, [[0], [0], [1], [1], [2], [2]], query)
    with pytest.raises(ValueError, match="way=4 given with 3 distinct class names"):
        model.episode_score(support, ["a", "a", "b", "b", "c", "c"], query, way=4)
    with pytest.raises(ValueError, match="integers"):
        model.episode_score(support, np.zeros(6, np.float32), query)
    with pytest.raises(ValueError, match="integers"):  # numbers, not names
        model.episode_score(support, [0.0, 0.0, 1.0, 1.0, 2.0, 2.0], query)


def _folder(tmp_path):
    from PIL import Image
    root = tmp_path / "shots"
    for k, name in enumerate(["vertical", "horizontal", "diagonal"]):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(_glyph(k, i)).save(root / name / f"{i}.png")
    Image.fromarray(_glyph(0, 1)).convert("RGB").save(root / "vertical" / "2.JPG")
    (root / "vertical" / "notes.txt").write_text("not an image")
    (root / "vertical" / "more").mkdir()
    (root / "horizontal" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "empty").mkdir()
    (root / "README").write_text("x")
    return root


def test_from_folder_follows_the_cli(model, tmp_path):
    root = _folder(tmp_path)
    with pytest.raises(ValueError, match="broken.png: cannot read image"):
        lwfm.SupportSet.from_folder(model, root)
    s = lwfm.SupportSet.from_folder(model, root, on_bad="skip")
    assert s.classes == ("diagonal", "horizontal", "vertical")  # sorted, like the CLI
    assert len(s) == 7
    reasons = {os.path.relpath(f.path, root): f.reason for f in s.skipped}
    assert set(reasons) == {"README", "empty", "horizontal/broken.png", "vertical/notes.txt",
                            "vertical/more"}
    assert "not a folder" in reasons["README"]
    assert "not a class" in reasons["empty"]
    assert "unreadable image" in reasons["horizontal/broken.png"]
    assert "not a .png/.jpg/.jpeg/.webp file" in reasons["vertical/notes.txt"]
    assert "folder inside a class folder" in reasons["vertical/more"]
    assert all(isinstance(f, lwfm.SkippedFile) for f in s.skipped)
    # the same support set as preprocessing the files by hand
    from PIL import Image
    files = [root / "diagonal" / "0.png", root / "diagonal" / "1.png",
             root / "horizontal" / "0.png", root / "horizontal" / "1.png",
             root / "vertical" / "0.png", root / "vertical" / "1.png",
             root / "vertical" / "2.JPG"]
    by_hand = model.preprocess([np.asarray(Image.open(f)) for f in files])
    labels = ["diagonal"] * 2 + ["horizontal"] * 2 + ["vertical"] * 3
    query = model.preprocess([_glyph(k, 3) for k in (0, 1, 2)])
    with model.prepare_support(by_hand, labels) as ref:
        np.testing.assert_allclose(s.score(query), ref.score(query), rtol=1e-5, atol=1e-6)
    assert [p[0].name for p in s.predict(query)] == ["vertical", "horizontal", "diagonal"]
    s.close()


def test_from_folder_needs_two_classes(model, tmp_path):
    from PIL import Image
    (tmp_path / "only").mkdir()
    Image.fromarray(_glyph(0)).save(tmp_path / "only" / "a.png")
    with pytest.raises(ValueError, match="found 1 class folder with images; 2 or more"):
        lwfm.SupportSet.from_folder(model, tmp_path)
    with pytest.raises(ValueError, match="on_bad"):
        lwfm.SupportSet.from_folder(model, tmp_path, on_bad="ignore")
