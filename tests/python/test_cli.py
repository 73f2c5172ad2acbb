"""The `lwfm` command (tools/cli): info, classify, eval.

Image decoding and preprocessing are checked against the pixels the test
wrote (PNG) or PIL decodes (JPEG) and lwfm.episodes.preprocess; the episode
sampler against lwfm.episodes.EpisodeSampler; `lwfm eval` against
`python3 -m lwfm.evaluate --backend torch` episode by episode.

LWFM_CLI names the executable (default build/lwfm), LWFM_TEST_MODELS the
folder with the test weight files (default build/tests)."""
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SHARED, cpu_runs_bf16, needs_bf16
from lwfm.episodes import EpisodeSampler, FolderSet, preprocess

OMNIGLOT = SHARED / "data" / "omniglot" / "images_evaluation.npz"
MINI_TEST = SHARED / "data" / "mini-imagenet" / "test"


@pytest.fixture(scope="module")
def cli():
    path = Path(os.environ.get("LWFM_CLI") or ROOT / "build" / "lwfm")
    if not path.exists() or not os.environ.get("LWFM_LIBRARY"):
        pytest.skip("the lwfm command is not built (LWFM_CLI) or LWFM_LIBRARY is not set")
    return str(path)


@pytest.fixture(scope="module")
def tiny():
    """LWFM-SPM on Conv-64F, 3 x 32 x 32 inputs, random weights."""
    path = Path(os.environ.get("LWFM_TEST_MODELS") or ROOT / "build" / "tests") / "lwfm_tiny.npz"
    if not path.exists():
        pytest.skip(f"{path} is missing (built by tests/make_test_models.py)")
    return str(path)


def run(cli, *args, check=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([cli, *map(str, args)], capture_output=True, text=True, env=env,
                         timeout=900)
    if check is not None:
        assert res.returncode == check, (res.returncode, res.stdout, res.stderr)
    return res


def model_config(model):
    cfg = dict(model.config)
    cfg["in_channels"] = model.input_shape[0]
    return cfg


# ---------------------------------------------------------------------------
# writing images

def _chunk(tag, data):
    return (struct.pack(">I", len(data)) + tag + data +
            struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def _scanlines(a, bit_depth):
    """Filter type 0 rows of a (H, W, c) sample array."""
    raw = bytearray()
    for y in range(a.shape[0]):
        row = a[y].reshape(-1).astype(np.int64)
        if bit_depth == 16:
            data = row.astype(">u2").tobytes()
        elif bit_depth == 8:
            data = row.astype(np.uint8).tobytes()
        else:
            bits = (row[:, None] >> np.arange(bit_depth - 1, -1, -1)) & 1
            data = np.packbits(bits.astype(np.uint8).reshape(-1)).tobytes()
        raw += b"\0" + data
    return raw


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]


def write_png(path, samples, bit_depth, color_type, palette=None, trns=None, interlace=False):
    """A PNG of `samples` ((H, W) or (H, W, c) integers; palette indices for
    colour type 3) written by hand: every colour type, 1/2/4/8/16 bits,
    PLTE, tRNS, Adam7 interlacing."""
    a = np.asarray(samples)
    h, w = a.shape[:2]
    a = a.reshape(h, w, -1)
    if interlace:
        raw = bytearray()
        for x0, y0, dx, dy in ADAM7:
            sub = a[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                raw += _scanlines(sub, bit_depth)
    else:
        raw = _scanlines(a, bit_depth)
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth,
                                                                color_type, 0, 0, int(interlace)))
    if palette is not None:
        png += _chunk(b"PLTE", np.asarray(palette, np.uint8).tobytes())
    if trns is not None:
        png += _chunk(b"tRNS", trns)
    png += _chunk(b"IDAT", zlib.compress(bytes(raw))) + _chunk(b"IEND", b"")
    Path(path).write_bytes(png)


def write_jpeg(path, arr, mode):
    from PIL import Image
    Image.fromarray(arr, mode).save(path, quality=92)
    with Image.open(path) as img:  # the pixels a decoder gives back
        return np.asarray(img)


def make_images(folder, rng, kinds):
    """Write images of the given kinds into `folder`; returns {name: pixels
    as the decoder delivers them}."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, kind in enumerate(kinds):
        h, w = int(rng.integers(12, 70)), int(rng.integers(12, 70))
        name = f"{k:02d}_{kind}"
        if kind == "rgb8":
            px = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            write_png(folder / f"{name}.png", px, 8, 2)
        elif kind == "grey16":
            px = rng.integers(0, 65536, (h, w), dtype=np.uint16)
            write_png(folder / f"{name}.png", px, 16, 0)
        elif kind == "rgba16":
            px = rng.integers(0, 65536, (h, w, 4), dtype=np.uint16)
            write_png(folder / f"{name}.png", px, 16, 6)
        elif kind == "rgba8":
            px = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
            write_png(folder / f"{name}.PNG", px, 8, 6)
        elif kind == "ga8":
            px = rng.integers(0, 256, (h, w, 2), dtype=np.uint8)
            write_png(folder / f"{name}.png", px, 8, 4)
        elif kind == "rgb8_interlaced":
            px = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            write_png(folder / f"{name}.png", px, 8, 2, interlace=True)
        elif kind == "grey2_interlaced":
            v = rng.integers(0, 4, (h, w))
            write_png(folder / f"{name}.png", v, 2, 0, interlace=True)
            px = (v * 85).astype(np.uint8)
        elif kind == "grey1":
            bits = rng.integers(0, 2, (h, w))
            write_png(folder / f"{name}.png", bits, 1, 0)
            px = (bits * 255).astype(np.uint8)
        elif kind == "grey4_trns":  # 4-bit grey, value 3 transparent
            v = rng.integers(0, 16, (h, w))
            write_png(folder / f"{name}.png", v, 4, 0, trns=struct.pack(">H", 3))
            px = np.stack([v * 17, np.where(v == 3, 0, 255)], -1).astype(np.uint8)
        elif kind == "palette":  # 4-bit palette with partial transparency
            pal = rng.integers(0, 256, (16, 3), dtype=np.uint8)
            alpha = rng.integers(0, 256, 10, dtype=np.uint8)
            idx = rng.integers(0, 16, (h, w))
            write_png(folder / f"{name}.png", idx, 4, 3, palette=pal, trns=alpha.tobytes())
            full_alpha = np.concatenate([alpha, np.full(6, 255, np.uint8)])
            px = np.concatenate([pal[idx], full_alpha[idx][..., None]], -1)
        elif kind == "jpeg_grey":
            base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1), dtype=np.uint8)
            px = write_jpeg(folder / f"{name}.jpg", np.kron(base, np.ones((4, 4), np.uint8)), "L")
        elif kind == "jpeg_rgb":
            base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
            px = write_jpeg(folder / f"{name}.jpeg",
                            np.kron(base, np.ones((4, 4, 1), np.uint8)), "RGB")
        else:
            raise ValueError(kind)
        out[name] = px
    return out


SUPPORT_KINDS = {
    "apple": ["rgb8", "grey16", "jpeg_rgb"],
    "banana": ["rgba8", "palette"],
    "cherry": ["jpeg_grey", "rgba16", "grey1", "ga8"],
}
QUERY_KINDS = ["rgb8", "grey16", "rgba16", "rgba8", "palette", "grey4_trns", "jpeg_grey",
               "jpeg_rgb", "ga8", "grey1", "rgb8_interlaced", "grey2_interlaced"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """support/<class>/... and queries/..., with the decoded pixels."""
    root = tmp_path_factory.mktemp("classify")
    rng = np.random.default_rng(11)
    support = {c: make_images(root / "support" / c, rng, kinds)
               for c, kinds in SUPPORT_KINDS.items()}
    (root / "support" / "empty_class").mkdir()  # no images: not a class
    (root / "support" / "apple" / "notes.txt").write_text("not an image, not listed")
    queries = make_images(root / "queries", rng, QUERY_KINDS)
    extra = make_images(root / "single", rng, ["jpeg_rgb"])
    return root, support, queries, extra


def expected_logits(model_path, support, query_list):
    import lwfm
    with lwfm.Model(model_path) as model:
        cfg = model_config(model)
        xs, labels = [], []
        for label, c in enumerate(sorted(support)):
            for name in sorted(support[c]):
                xs.append(preprocess(support[c][name][None], cfg)[0])
                labels.append(label)
        xq = np.stack([preprocess(px[None], cfg)[0] for px in query_list])
        return model.episode_score(np.stack(xs), np.asarray(labels, np.int32), xq)


# ---------------------------------------------------------------------------
# lwfm info, help, usage errors

def test_info(cli, tiny):
    import lwfm
    with lwfm.Model(tiny) as m:
        config, shape, fshape = m.config, m.input_shape, m.feature_shape()
    res = run(cli, "info", "--model", tiny, check=0)
    assert "method    lwfm-spm" in res.stdout
    assert f"input     {shape[0]} x {shape[1]} x {shape[2]}" in res.stdout
    assert f"features  {fshape[0]} x {fshape[1]} x {fshape[2]}" in res.stdout
    res = run(cli, "info", "--json", f"--model={tiny}", check=0)
    info = json.loads(res.stdout)
    assert info["config"] == config
    assert info["method"] == "lwfm-spm"
    assert tuple(info["input_shape"]) == shape and tuple(info["feature_shape"]) == fshape
    assert info["model"] == tiny


def test_help_version_usage(cli, tiny, tmp_path):
    assert "Usage: lwfm <command>" in run(cli, "--help", check=0).stdout
    for cmd in ("info", "classify", "eval"):
        assert f"Usage: lwfm {cmd}" in run(cli, cmd, "--help", check=0).stdout
    assert run(cli, "--version", check=0).stdout.startswith("lwfm 0.")
    usage = [
        [],
        ["frobnicate"],
        ["--bogus"],
        ["info"],
        ["info", "--model"],
        ["info", "--model", tiny, "extra"],
        ["classify", "--model", tiny, "--support", str(tmp_path)],
        ["classify", "--model", tiny, "--support", str(tmp_path), "--query"],
        ["classify", "--model", tiny, "--support", str(tmp_path), "--query", "x.png",
         "--on-bad", "ignore"],
        ["eval", "--model", tiny],
        ["eval", "--model", tiny, "--data", str(tmp_path), "--way", "five"],
        ["eval", "--model", tiny, "--data", str(tmp_path), "--way", "1"],
        ["eval", "--model", tiny, "--data", str(tmp_path), "--shot", "0"],
        ["eval", "--model", tiny, "--data", str(tmp_path), "--episodes", "-3"],
        ["eval", "--model", tiny, "--data", str(tmp_path), "--seed", "1.5"],
        ["eval", "--model", tiny, "--data", str(tmp_path), "--seed", "99999999999999999999"],
        ["eval", "--data", str(tmp_path)],
    ]
    for args in usage:
        res = run(cli, *args)
        assert res.returncode == 2, (args, res.returncode, res.stderr)
        assert res.stdout == "" and res.stderr, (args, res.stderr)


def test_runtime_errors_name_the_path(cli, tiny, tmp_path):
    res = run(cli, "info", "--model", tmp_path / "missing.npz", check=1)
    assert f"lwfm: cannot load model ({tmp_path / 'missing.npz'}):" in res.stderr
    bogus = tmp_path / "bogus.npz"
    bogus.write_bytes(b"PK\x03\x04 not really")
    res = run(cli, "info", "--model", bogus, check=1)
    assert f"({bogus})" in res.stderr and res.stdout == ""
    res = run(cli, "eval", "--model", tiny, "--data", tmp_path / "nothing", check=1)
    assert str(tmp_path / "nothing") in res.stderr
    res = run(cli, "eval", "--model", tiny, "--data", tmp_path, check=1)  # no class folders
    assert "no class folders" in res.stderr


# ---------------------------------------------------------------------------
# lwfm classify

def test_classify_matches_python(cli, tiny, tree):
    root, support, queries, extra = tree
    qdir = root / "queries"
    single = next((root / "single").iterdir())
    res = run(cli, "classify", "--model", tiny, "--support", root / "support", "--query", qdir,
              single, "--json", check=0)
    out = json.loads(res.stdout)
    assert out["classes"] == sorted(SUPPORT_KINDS)
    assert out["support_counts"] == [len(SUPPORT_KINDS[c]) for c in sorted(SUPPORT_KINDS)]
    assert out["skipped"] == []
    names = sorted(queries)  # the directory's images, sorted by file name
    files = sorted(p.name for p in qdir.iterdir())
    assert [Path(q["path"]).name for q in out["queries"]] == files + [single.name]
    pixels = [queries[n] for n in names] + list(extra.values())
    want = expected_logits(tiny, support, pixels)
    got = np.array([q["logits"] for q in out["queries"]])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, np.abs(want).max()))
    assert [q["label"] for q in out["queries"]] == list(want.argmax(1))
    for q in out["queries"]:
        p = np.asarray(q["probabilities"])
        e = np.exp(np.asarray(q["logits"]) - max(q["logits"]))
        np.testing.assert_allclose(p, e / e.sum(), rtol=1e-6, atol=1e-7)
        assert q["prediction"] == out["classes"][q["label"]]
    # text output: path, prediction, class=probability per class, tab-separated
    res = run(cli, "classify", "--model", tiny, "--support", root / "support", "--query", qdir,
              "--query", single, check=0)
    lines = res.stdout.splitlines()
    assert len(lines) == len(out["queries"])
    for line, q in zip(lines, out["queries"]):
        fields = line.split("\t")
        assert fields[0] == q["path"] and fields[1] == q["prediction"]
        assert [f.split("=")[0] for f in fields[2:]] == out["classes"]
        np.testing.assert_allclose([float(f.split("=")[1]) for f in fields[2:]],
                                   q["probabilities"], atol=6e-5)


def _bad_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    good = folder.parent / "queries"
    png = next(p for p in sorted(good.iterdir()) if p.name.endswith("rgb8.png")).read_bytes()
    jpg = next(p for p in sorted(good.iterdir()) if p.suffix == ".jpeg").read_bytes()
    bad = {
        "a_truncated.png": png[:len(png) // 2],
        "b_corrupt.png": png[:40] + bytes(200) + png[240:],
        "c_truncated.jpg": jpg[:len(jpg) // 2],
        "d_text.jpg": b"hello, I am not a JPEG\n",
        "e_empty.png": b"",
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    from PIL import Image
    Image.new("CMYK", (16, 16), (10, 20, 30, 40)).save(folder / "f_cmyk.jpg")
    return sorted(str(folder / n) for n in list(bad) + ["f_cmyk.jpg"])


def test_classify_bad_images(cli, tiny, tree):
    root = tree[0]
    bad = _bad_files(root / "bad")
    qdir = root / "queries"
    for path in bad:  # each alone, --on-bad fail (the default)
        res = run(cli, "classify", "--model", tiny, "--support", root / "support",
                  "--query", qdir, path)
        assert res.returncode == 1, (path, res.stderr)
        assert res.stdout == ""
        assert f"lwfm: cannot read image ({path}): " in res.stderr
    cmyk = run(cli, "classify", "--model", tiny, "--support", root / "support", "--query",
               root / "bad" / "f_cmyk.jpg", check=1)
    assert "CMYK" in cmyk.stderr
    assert "truncated" in run(cli, "classify", "--model", tiny, "--support", root / "support",
                              "--query", bad[0], check=1).stderr
    # --on-bad skip: reported, left out, the rest classified as without them
    clean = json.loads(run(cli, "classify", "--model", tiny, "--support", root / "support",
                           "--query", qdir, "--json", check=0).stdout)
    res = run(cli, "classify", "--model", tiny, "--support", root / "support", "--query",
              root / "bad", qdir, "--on-bad", "skip", "--json", check=0)
    out = json.loads(res.stdout)
    assert out["skipped"] == bad
    for path in bad:
        assert f"({path})" in res.stderr
    assert out["queries"] == clean["queries"]
    # a bad support image: fail, or skip and one support image fewer
    sup = root / "support_bad"
    shutil.copytree(root / "support", sup)
    shutil.copy(bad[2], sup / "banana" / "zz_truncated.jpg")
    res = run(cli, "classify", "--model", tiny, "--support", sup, "--query", qdir, check=1)
    assert str(sup / "banana" / "zz_truncated.jpg") in res.stderr and res.stdout == ""
    res = run(cli, "classify", "--model", tiny, "--support", sup, "--query", qdir, "--json",
              "--on-bad", "skip", check=0)
    out = json.loads(res.stdout)
    assert out["support_counts"] == clean["support_counts"]
    assert out["queries"] == clean["queries"]
    # nothing left to classify
    res = run(cli, "classify", "--model", tiny, "--support", root / "support", "--query",
              root / "bad", "--on-bad", "skip", check=1)
    assert res.stdout == ""


def test_classify_needs_two_classes(cli, tiny, tree, tmp_path):
    root = tree[0]
    shutil.copytree(root / "support" / "apple", tmp_path / "one" / "apple")
    res = run(cli, "classify", "--model", tiny, "--support", tmp_path / "one", "--query",
              root / "queries", check=1)
    assert "2 or more" in res.stderr and res.stdout == ""


# ---------------------------------------------------------------------------
# lwfm eval: the sampler

def list_episodes(cli, data, way, shot, query, episodes, seed, *extra):
    res = run(cli, "eval", "--data", data, "--way", way, "--shot", shot, "--query", query,
              "--episodes", episodes, "--seed", seed, "--list-episodes", *extra, check=0)
    return [json.loads(line) for line in res.stdout.splitlines()]


def python_episodes(sizes, way, shot, query, episodes, seed):
    s = EpisodeSampler(sizes, way, shot, query, seed)
    out = []
    for _ in range(episodes):
        sup, s_lab, qry, q_lab = s.episode()
        out.append(([list(x) for x in sup], s_lab, [list(x) for x in qry], q_lab))
    return out


def assert_same_episodes(got, want):
    assert len(got) == len(want)
    for e, (g, (sup, s_lab, qry, q_lab)) in enumerate(zip(got, want)):
        assert g["episode"] == e
        assert g["support"] == sup and g["support_labels"] == s_lab
        assert g["query"] == qry and g["query_labels"] == q_lab


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    """Classes of 2..9 PNG files, a folder without images, a stray file."""
    root = tmp_path_factory.mktemp("folderset")
    rng = np.random.default_rng(3)
    for k, n in enumerate([5, 9, 2, 7, 4, 8, 3, 6]):
        d = root / f"cls_{'hgfedcba'[k]}{k}"
        d.mkdir()
        for i in rng.permutation(n):
            ext = [".png", ".PNG", ".jpg"][i % 3]
            px = rng.integers(0, 256, (8 + i, 10, 3), dtype=np.uint8)
            if ext == ".jpg":
                write_jpeg(d / f"img{i:03d}{ext}", px, "RGB")
            else:
                write_png(d / f"img{i:03d}{ext}", px, 8, 2)
        (d / "README").write_text("ignored")
    (root / "no_images").mkdir()
    (root / "stray.png").write_bytes(b"a file at the top is not a class")
    return root


@pytest.mark.parametrize("way,shot,query,seed", [(5, 1, 1, 0), (3, 2, 3, 42), (2, 1, 5, -7),
                                                 (4, 3, 1, 2**64 - 1)])
def test_sampler_folder(cli, small_tree, way, shot, query, seed):
    ds = FolderSet(str(small_tree))
    got = list_episodes(cli, small_tree, way, shot, query, 6, seed)
    assert_same_episodes(got, python_episodes(ds.class_sizes, way, shot, query, 6, seed))
    for g in got:
        assert g["class_names"] == [ds.names[c] for c in g["classes"]]


def test_sampler_errors(cli, small_tree):
    # too few classes with shot + query examples: as EpisodeSampler's ValueError
    res = run(cli, "eval", "--data", small_tree, "--way", 5, "--shot", 4, "--query", 4,
              "--list-episodes", check=1)
    assert "only 2 classes have at least shot + query = 8 examples; 5 needed" in res.stderr
    res = run(cli, "eval", "--data", small_tree, "--way", 9, "--list-episodes", check=1)
    assert "9-way episodes need 9 classes, the data has 8" in res.stderr


@pytest.mark.skipif(not OMNIGLOT.exists(), reason=f"{OMNIGLOT} is absent")
@pytest.mark.parametrize("way,shot,query,seed", [(5, 1, 15, 1), (20, 5, 5, 1234),
                                                 (5, 5, 15, 2**63)])
def test_sampler_omniglot(cli, way, shot, query, seed):
    got = list_episodes(cli, OMNIGLOT, way, shot, query, 25, seed)
    assert_same_episodes(got, python_episodes([20] * 659, way, shot, query, 25, seed))


# ---------------------------------------------------------------------------
# lwfm eval: accuracies equal the PyTorch reference's, episode by episode

def python_evaluate(model, data, way, shot, query, episodes, seed):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-m", "lwfm.evaluate", "--model", model, "--data", str(data),
         "--way", str(way), "--shot", str(shot), "--query", str(query), "--episodes",
         str(episodes), "--seed", str(seed), "--backend", "torch", "--json", "--threads", "1"],
        capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def lwfm_evaluate(cli, model, data, way, shot, query, episodes, seed, *extra):
    res = run(cli, "eval", "--model", model, "--data", data, "--way", way, "--shot", shot,
              "--query", query, "--episodes", episodes, "--seed", seed, "--json", *extra,
              check=0)
    return json.loads(res.stdout), res


def assert_same_scores(got, want):
    for key in ("episodes", "way", "shot", "query", "seed"):
        assert got[key] == want[key], key
    assert got["episode_accuracies"] == want["episode_accuracies"]
    assert got["accuracy"] == pytest.approx(want["accuracy"], abs=1e-9)
    assert got["ci95"] == pytest.approx(want["ci95"], abs=1e-9)


@pytest.mark.skipif(not OMNIGLOT.exists(), reason=f"{OMNIGLOT} is absent")
def test_eval_omniglot_matches_reference(cli, tiny):
    args = (5, 1, 5, 8, 3)
    got, res = lwfm_evaluate(cli, tiny, OMNIGLOT, *args)
    want = python_evaluate(tiny, OMNIGLOT, *args)
    assert_same_scores(got, want)
    text = run(cli, "eval", "--model", tiny, "--data", OMNIGLOT, "--way", 5, "--shot", 1,
               "--query", 5, "--episodes", 8, "--seed", 3, check=0)
    assert text.stdout.strip() == (f"accuracy {got['accuracy']:.2f}% +- {got['ci95']:.2f}% "
                                   "(95% CI, 8 episodes, 5-way 1-shot)")
    assert "episode 8/8" in text.stderr  # progress (plain lines: stderr is not a terminal)


BUNDLED = ROOT / "models" / "omniglot.npz"


@pytest.mark.skipif(not OMNIGLOT.exists(), reason=f"{OMNIGLOT} is absent")
@pytest.mark.parametrize("way,shot,seed", [(5, 1, 1), (20, 1, 2)])
def test_bundled_model_eval_matches_reference(cli, way, shot, seed):
    """The bundled model on the Omniglot evaluation set: the C tool and the PyTorch
    reference score the same episodes identically, and it is a trained model."""
    args = (way, shot, 15, 6, seed)
    got, res = lwfm_evaluate(cli, str(BUNDLED), OMNIGLOT, *args)
    assert res.returncode == 0, res.stderr
    want = python_evaluate(str(BUNDLED), OMNIGLOT, *args)
    assert_same_scores(got, want)
    assert got["accuracy"] > (90.0 if way == 5 else 80.0)   # chance: 20% / 5%


@pytest.mark.skipif(not OMNIGLOT.exists(), reason=f"{OMNIGLOT} is absent")
def test_eval_batch_statistics_rcn_matches_reference(cli, tmp_path):
    """An RCN model in the authors' transductive mode (batch_norm 'batch'):
    lwfm eval scores the queries in batches of 25 in interleaved class order,
    as lwfm.evaluate's reference does, episode by episode."""
    from lwfm.weights import load_weights, save_weights
    tensors, config = load_weights(ROOT / "models" / "omniglot-rcn.npz")
    model = tmp_path / "rcn-batch.npz"
    save_weights(model, tensors, dict(config, batch_norm="batch", query_batch=25))
    args = (5, 1, 15, 4, 5)
    got, res = lwfm_evaluate(cli, str(model), OMNIGLOT, *args)
    assert res.returncode == 0, res.stderr
    want = python_evaluate(str(model), OMNIGLOT, *args)
    assert_same_scores(got, want)
    assert got["accuracy"] > 80.0


@pytest.fixture(scope="module")
def mini_tree(tmp_path_factory):
    if not MINI_TEST.is_dir():
        pytest.skip(f"{MINI_TEST} is absent")
    root = tmp_path_factory.mktemp("mini")
    for wnid in sorted(os.listdir(MINI_TEST))[:6]:
        (root / wnid).mkdir()
        for name in sorted(os.listdir(MINI_TEST / wnid))[:12]:
            os.symlink(MINI_TEST / wnid / name, root / wnid / name)
    return root


def test_eval_folder_matches_reference(cli, tiny, mini_tree):
    args = (5, 2, 3, 4, 17)
    got, _ = lwfm_evaluate(cli, tiny, mini_tree, *args)
    want = python_evaluate(tiny, mini_tree, *args)
    assert_same_scores(got, want)
    assert got["classes"] == 6 and got["skipped"] == []


def test_eval_bad_images(cli, tiny, small_tree, tmp_path):
    """--on-bad fail stops at the bad image; skip removes it before sampling."""
    root = tmp_path / "tree"
    shutil.copytree(small_tree, root)
    # cls_e3 has 7 images; break one. 8-way episodes use every class, two
    # images of each: 40 episodes draw the broken one (seed 5: they do).
    victim = sorted((root / "cls_e3").glob("img*"))[4]
    victim.write_bytes(victim.read_bytes()[:30])
    res = run(cli, "eval", "--model", tiny, "--data", root, "--way", 8, "--shot", 1, "--query",
              1, "--episodes", 40, "--seed", 5)
    assert res.returncode == 1 and res.stdout == ""
    assert f"lwfm: cannot read image ({victim}): " in res.stderr
    # skip: episodes of the dataset without the bad file
    got = list_episodes(cli, root, 3, 2, 3, 10, 9, "--on-bad", "skip")
    clean = tmp_path / "clean"
    shutil.copytree(root, clean)
    (clean / victim.parent.name / victim.name).unlink()
    sizes = FolderSet(str(clean)).class_sizes
    assert_same_episodes(got, python_episodes(sizes, 3, 2, 3, 10, 9))
    out, res = lwfm_evaluate(cli, tiny, root, 8, 1, 1, 5, 5, "--on-bad", "skip")
    assert out["skipped"] == [str(victim)] and str(victim) in res.stderr
    assert len(out["episode_accuracies"]) == 5


# ---------------------------------------------------------------------------
# lwfm classify --explain

PANEL, GAP, HEAD, STRIP = 192, 24, 48, 44  # the picture: words, panels, colour bars


def plain_render(px):
    """The decoded pixels as the explanation shows them without overlay:
    RGB in [0, 255], alpha over white, resized to PANEL x PANEL (bilinear)."""
    from PIL import Image
    a = np.asarray(px)
    a = (a / (65535.0 if a.dtype == np.uint16 else 255.0)).astype(np.float32)
    a = a.reshape(a.shape[0], a.shape[1], -1)
    alpha = a[..., -1:] if a.shape[2] in (2, 4) else np.ones_like(a[..., :1])
    rgb = a[..., :3] if a.shape[2] >= 3 else np.repeat(a[..., :1], 3, -1)
    rgb = rgb * alpha + 1 - alpha
    chans = [np.asarray(Image.fromarray(rgb[..., k]).resize((PANEL, PANEL), Image.BILINEAR))
             for k in range(3)]
    return np.stack(chans, -1) * 255


def explained_lines(stderr):
    """{query path: (png, support file, layer, score)} of the 'explained' lines."""
    import re
    out = {}
    for line in stderr.splitlines():
        m = re.fullmatch(r"explained (.+) -> (.+) \(support (.+), layer (\d+), score (\S+)\)",
                         line)
        if m:
            out[m[1]] = (m[2], m[3], int(m[4]), float(m[5]))
    return out


def check_explanations(cli, model_path, tree, out_dir, spm, rcn=False):
    import lwfm
    from PIL import Image
    root, support, queries, _ = tree
    qdir = root / "queries"
    res = run(cli, "classify", "--model", model_path, "--support", root / "support", "--query",
              qdir, f"--explain={out_dir}", "--json", check=0)
    out = json.loads(res.stdout)
    lines = explained_lines(res.stderr)
    files = sorted(p.name for p in qdir.iterdir())
    want = [str(out_dir / f"{i:03d}_{Path(f).stem}.png") for i, f in enumerate(files)]
    assert [q["explanation"] for q in out["queries"]] == want
    assert sorted(p.name for p in out_dir.iterdir()) == [Path(w).name for w in want]  # no temp
    sup_px = {str(root / "support" / c / f): support[c][Path(f).stem]
              for c in support for f in os.listdir(root / "support" / c) if Path(f).stem
              in support[c]}
    with lwfm.Model(model_path) as model:
        cfg = model_config(model)
        feat = lambda px: model.features(preprocess(np.asarray(px)[None], cfg))
        for q, name in zip(out["queries"], files):
            png, sup_file, layer, score = lines[q["path"]]
            assert png == q["explanation"]
            with Image.open(png) as img:
                assert img.size == (2 * PANEL + GAP, HEAD + PANEL + STRIP) and img.mode == "RGB"
                pic = np.asarray(img).astype(np.float32)
            # the support image: the predicted class's best pair score
            assert Path(sup_file).parent.name == q["prediction"]
            fq = feat(queries[Path(name).stem])
            scores, layers = {}, {}
            for path in sup_px:
                if Path(path).parent.name != q["prediction"]:
                    continue
                fs = feat(sup_px[path])
                if rcn:
                    s = model.rcn_pair(fs, fq)[3]
                elif spm:
                    _, _, layer_scores, s = model.spm_pair(fs, fq)
                    layers[path] = layer_scores
                else:
                    s = model.lwe_pair(fs, fq)[2]
                scores[path] = s
            assert scores[sup_file] >= max(scores.values()) - 1e-5
            assert score == pytest.approx(scores[sup_file], abs=1e-4)
            if spm and not rcn:
                assert layers[sup_file][layer] >= layers[sup_file].max() - 1e-6
            else:
                assert layer == 0
            # each panel: the image under a heat map (correlated with the
            # plain render of the image, but clearly not equal to it)
            for x0, px in ((0, sup_px[sup_file]), (PANEL + GAP, queries[Path(name).stem])):
                panel = pic[HEAD:HEAD + PANEL, x0:x0 + PANEL]
                plain = plain_render(px)
                assert np.abs(panel - plain).mean() > 8, (png, x0)
                if plain.std() > 10:
                    assert np.corrcoef(panel.ravel(), plain.ravel())[0, 1] > 0.5, (png, x0)
            assert (pic[HEAD:, PANEL + 2:PANEL + GAP - 2] == 255).mean() > 0.5  # the gap: white
            strip = pic[HEAD + PANEL:]
            assert strip.std() > 20  # colour bars
    return res


def test_classify_explain(cli, tiny, tree, tmp_path):
    res = check_explanations(cli, tiny, tree, tmp_path / "made" / "here", spm=True)
    # text mode: unchanged stdout, the same pictures
    text = run(cli, "classify", "--model", tiny, "--support", tree[0] / "support", "--query",
               tree[0] / "queries", "--explain", tmp_path / "text", check=0)
    plain = run(cli, "classify", "--model", tiny, "--support", tree[0] / "support", "--query",
                tree[0] / "queries", check=0)
    assert text.stdout == plain.stdout
    for png in sorted((tmp_path / "text").iterdir()):
        assert png.read_bytes() == (tmp_path / "made" / "here" / png.name).read_bytes()
    assert len(explained_lines(text.stderr)) == len(explained_lines(res.stderr))


def test_classify_explain_without_spm(cli, tiny, tree, tmp_path):
    from lwfm.weights import load_weights, save_weights
    tensors, config = load_weights(tiny)
    config = dict(config, matcher_prob=0.0)
    off = tmp_path / "spm_off.npz"
    save_weights(off, tensors, config)
    check_explanations(cli, str(off), tree, tmp_path / "out", spm=False)


def test_classify_explain_rcn(cli, tree, tmp_path):
    """RCN: the best support of the predicted class by the pair term
    sum_r w_r sim_r, a_r heat maps on both panels, match lines."""
    model = ROOT / "models" / "omniglot-rcn.npz"
    check_explanations(cli, str(model), tree, tmp_path / "rcn", spm=True, rcn=True)


def test_classify_explain_refused(cli, tiny, tree, tmp_path):
    root = tree[0]
    dn4 = Path(os.environ.get("LWFM_TEST_MODELS") or ROOT / "build" / "tests") / "dn4_random.npz"
    if dn4.exists():
        res = run(cli, "classify", "--model", dn4, "--support", root / "support", "--query",
                  root / "queries", "--explain", tmp_path / "dn4", check=1)
        assert res.stdout == ""
        assert res.stderr.strip() == (f"lwfm: --explain ({dn4}): explanations are available "
                                      "for lwfm-spm and rcn models; this model is dn4")
        assert not (tmp_path / "dn4").exists()
    # a folder that cannot be created: under a regular file
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    res = run(cli, "classify", "--model", tiny, "--support", root / "support", "--query",
              root / "queries", "--json", "--explain", blocker / "out", check=1)
    assert res.stdout == ""
    assert f"lwfm: cannot create the explanation folder ({blocker / 'out'}): " in res.stderr
    assert sorted(os.listdir(tmp_path)) == ["blocker"] and blocker.read_text() == "a file"
    # an existing file as the folder
    res = run(cli, "classify", "--model", tiny, "--support", root / "support", "--query",
              root / "queries", "--explain", blocker, check=1)
    assert res.stdout == "" and f"({blocker})" in res.stderr
    assert run(cli, "classify", "--model", tiny, "--support", root / "support", "--query",
               root / "queries", "--explain=", check=2).stdout == ""


def test_bench_quick_table(cli, tiny):
    """`lwfm bench --quick`: the table's shape and that every figure is a
    positive number (never the times themselves)."""
    res = run(cli, "bench", "--model", tiny, "--quick", "--reps", "1", check=0)
    lines = [l for l in res.stdout.splitlines() if l.startswith("|")]
    bf16 = cpu_runs_bf16()
    columns = [" measure ", " unit ", " fp32 "] + ([" bf16 ", " bf16 / fp32 "] if bf16 else [])
    assert lines[0].split("|")[1:-1] == columns
    if not bf16:     # measured fp32 only, and said why
        assert "bf16 not measured: " in res.stderr and "AVX-512" in res.stderr
    # the random model has no int8 calibration: left out, the reason named
    assert "int8 not measured: " in res.stderr and "lwfm.quantize" in res.stderr
    rows = [[c.strip() for c in l.split("|")[1:-1]] for l in lines[2:]]
    assert [r[0] for r in rows] == [
        "backbone, 80 images", "episode 5-way 1-shot 15q", "episode 5-way 5-shot 15q",
        "metric / backbone, 1-shot", "metric / backbone, 5-shot", "streaming, batch of 1",
        "streaming, batch of 16", "streaming, batch of 75"]
    for r in rows:
        assert len(r) == len(columns) and all(float(v) > 0 for v in r[2:]), r
    assert "lwfm bench:" in res.stdout.splitlines()[0]
    if not bf16:
        res = run(cli, "bench", "--model", tiny, "--quick", "--precision", "bf16", check=1)
        assert "bf16 needs a CPU with AVX-512" in res.stderr
        return
    js = json.loads(run(cli, "bench", "--model", tiny, "--quick", "--reps", "1",
                        "--precision", "bf16", "--json", check=0).stdout)
    assert set(js) >= {"model", "method", "threads", "bf16"} and "fp32" not in js
    assert len(js["bf16"]) == 8 and all(v > 0 for v in js["bf16"].values())
    res = run(cli, "bench", "--model", tiny, "--precision", "fp16", check=2)
    assert "--precision takes 'fp32', 'bf16' or 'int8', got 'fp16'" in res.stderr
    assert run(cli, "bench", check=2).stderr.startswith("lwfm: --model is required")


def test_bench_measures_int8_when_calibrated(cli, tiny, tmp_path):
    """`lwfm bench` (--precision both) adds int8 and its ratio to fp32 for a
    file with quant/ members; --json has its figures."""
    import lwfm
    from lwfm.quantize import quant_members, write_with_members
    calibrated = tmp_path / "tiny-int8.npz"
    with lwfm.Model(tiny) as m:
        x = np.random.default_rng(0).standard_normal((4,) + m.input_shape).astype(np.float32)
        members = quant_members(m.convolution_names(), m.convolution_ranges(x), 100.0)
    write_with_members(str(tiny), str(calibrated), members)
    res = run(cli, "bench", "--model", calibrated, "--quick", "--reps", "1", check=0)
    head = [c.strip() for c in
            [l for l in res.stdout.splitlines() if l.startswith("|")][0].split("|")[1:-1]]
    bf16 = cpu_runs_bf16()
    assert head == ["measure", "unit", "fp32"] + (["bf16"] if bf16 else []) + \
        ["int8"] + (["bf16 / fp32"] if bf16 else []) + ["int8 / fp32"]
    assert "int8 not measured" not in res.stderr
    js = json.loads(run(cli, "bench", "--model", calibrated, "--quick", "--reps", "1", "--json",
                        check=0).stdout)
    assert len(js["int8"]) == 8 and all(v > 0 for v in js["int8"].values())


@pytest.mark.skipif(not OMNIGLOT.exists(), reason="Omniglot is not in ../shared/data")
def test_int8_option(cli, tiny):
    """--precision int8: refused for a file without quant/ members (the
    message names the tool), runs on the bundled model (which has them)."""
    res = run(cli, "eval", "--model", tiny, "--data", OMNIGLOT, "--episodes", "2",
              "--precision", "int8", check=1)
    assert "python3 -m lwfm.quantize" in res.stderr
    bundled = ROOT / "models" / "omniglot.npz"
    js = json.loads(run(cli, "eval", "--model", bundled, "--data", OMNIGLOT, "--episodes", "3",
                        "--precision", "int8", "--json", "--quiet", check=0).stdout)
    assert js["episodes"] == 3 and 0 <= js["accuracy"] <= 100


def test_convolutions_option(cli, tiny, tree):
    """--convolutions on classify, eval and bench: direct and winograd give
    logits within float32 rounding of the default (test_convolutions.py);
    bad values are usage errors."""
    root = tree[0]
    base = ["classify", "--model", tiny, "--support", root / "support", "--query",
            root / "queries", "--json"]
    for cmd in (base, ["eval", "--model", tiny, "--data", OMNIGLOT], ["bench", tiny]):
        res = run(cli, *cmd, "--convolutions", "fft", check=2)
        assert "--convolutions takes 'auto', 'direct' or 'winograd', got 'fft'" in res.stderr
    auto = json.loads(run(cli, *base, check=0).stdout)
    la = np.array([q["logits"] for q in auto["queries"]])
    for choice in ("direct", "winograd"):
        out = json.loads(run(cli, *base, "--convolutions", choice, check=0).stdout)
        lc = np.array([q["logits"] for q in out["queries"]])
        assert np.abs(lc - la).max() <= 2e-5 * np.abs(la).max(), choice


@needs_bf16
def test_precision_option(cli, tiny, tree):
    """--precision on classify and eval: bf16 runs and its logits stay close to
    fp32's (tests/python/test_precision.py states the tolerances); bad values
    are usage errors."""
    root = tree[0]
    base = ["classify", "--model", tiny, "--support", root / "support", "--query",
            root / "queries", "--json"]
    for cmd in (base, ["eval", "--model", tiny, "--data", OMNIGLOT]):
        res = run(cli, *cmd, "--precision", "fp16", check=2)
        assert "--precision takes 'fp32', 'bf16' or 'int8', got 'fp16'" in res.stderr
    p32 = json.loads(run(cli, *base, check=0).stdout)
    assert p32 == json.loads(run(cli, *base, "--precision", "fp32", check=0).stdout)
    p16 = json.loads(run(cli, *base, "--precision", "bf16", check=0).stdout)
    l32 = np.array([q["logits"] for q in p32["queries"]])
    l16 = np.array([q["logits"] for q in p16["queries"]])
    assert l16.shape == l32.shape
    assert np.abs(l16 - l32).max() <= 5e-2 * np.abs(l32).max()
