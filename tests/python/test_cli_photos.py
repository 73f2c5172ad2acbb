"""The `lwfm` command on photos as people have them (issue 17, items 4-6):
EXIF orientation, WebP, every file checked before the first episode, class
counts that match what can be sampled; CLI consistency (skipped files
reported, positional model, `lwfm help CMD`, --threads, shortest floats,
PyTorch checkpoints named as such); --explain pictures with words."""
import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from test_cli import cli, run, tiny  # noqa: F401 (fixtures and the runner, shared)


@pytest.fixture(scope="module")
def dump():
    path = Path(os.environ.get("LWFM_IMAGE_DUMP") or ROOT / "build" / "tests" / "image_dump")
    if not path.exists():
        pytest.skip("tests/c/image_dump is not built")
    return str(path)


def decode(dump, path):
    """Pixels as tools/cli/decode.c gives them: (H, W, C) uint8."""
    res = subprocess.run([dump, str(path)], capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    head, _, rest = res.stdout.partition(b"\n")
    h, w, c, bps = map(int, head.split())
    assert bps == 1
    return np.frombuffer(rest, np.uint8).reshape(h, w, c)


def upright(h=24, w=40):
    """An asymmetric RGB picture in 8x8 blocks (JPEG keeps them well)."""
    rng = np.random.default_rng(17)
    blocks = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((8, 8, 1), np.uint8))


# Image.transpose methods that undo what EXIF orientation o asks a viewer to do
STORE = {1: None, 2: Image.FLIP_LEFT_RIGHT, 3: Image.ROTATE_180, 4: Image.FLIP_TOP_BOTTOM,
         5: Image.TRANSPOSE, 6: Image.ROTATE_90, 7: Image.TRANSVERSE, 8: Image.ROTATE_270}


def exif_bytes(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def stored(orientation):
    img = Image.fromarray(upright())
    return img if STORE[orientation] is None else img.transpose(STORE[orientation])


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "PNG"])
def test_exif_orientation(dump, tmp_path, orientation, fmt):
    img = stored(orientation)
    path = tmp_path / f"o{orientation}.{fmt.lower()}"
    opts = {"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}
    if fmt == "WEBP":
        opts = {"lossless": True}
    img.save(path, fmt, exif=exif_bytes(orientation), **opts)
    got = decode(dump, path)
    want = upright()
    assert got.shape == want.shape, (orientation, got.shape)
    # PIL's own reading agrees (its ImageOps.exif_transpose)
    from PIL import ImageOps
    pil = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert pil.shape == want.shape
    tol = 6 if fmt == "JPEG" else 0
    assert np.abs(got.astype(int) - want).max() <= tol, orientation
    assert np.abs(got.astype(int) - pil).max() <= tol, orientation


def test_exif_orientation_big_endian_and_garbage(dump, tmp_path):
    """A Motorola-order TIFF block is read too; a broken EXIF block is ignored."""
    img = stored(6)
    tiff = b"MM\0\x2a\0\0\0\x08" + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
    path = tmp_path / "mm.jpg"
    img.save(path, "JPEG", quality=100, subsampling=0, exif=b"Exif\0\0" + tiff)
    assert decode(dump, path).shape == upright().shape
    for bad in (b"Exif\0\0MM\0\x2a\xff\xff\xff\xf0", b"Exif\0\0II*\0\x08\0\0\0\xff\xff",
                b"Exif\0\0" + tiff[:-6]):
        path = tmp_path / "bad.jpg"
        img.save(path, "JPEG", quality=100, subsampling=0, exif=bad)
        assert decode(dump, path).shape == (40, 24, 3)  # as stored


def test_webp(dump, tmp_path):
    rgba = np.dstack([upright(), np.full((24, 40), 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.webp", "WEBP", lossless=True)
    assert (decode(dump, tmp_path / "a.webp") == rgba).all()
    Image.fromarray(upright()).save(tmp_path / "b.webp", "WEBP", quality=90)
    got = decode(dump, tmp_path / "b.webp")
    assert got.shape == (24, 40, 3) and np.abs(got.astype(int) - upright()).mean() < 12
    data = (tmp_path / "b.webp").read_bytes()
    (tmp_path / "trunc.webp").write_bytes(data[: len(data) // 2])
    res = subprocess.run([dump, str(tmp_path / "trunc.webp")], capture_output=True, timeout=60)
    assert res.returncode == 1 and b"WebP" in res.stderr


# ---------------------------------------------------------------------------
# files: every skipped file named, checked before the first episode, counts

def photo(path, seed, fmt=None, size=(20, 16), **kw):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
        path, fmt, **kw)


@pytest.fixture()
def support(tmp_path):
    """apple: PNGs; webp_only: WebP files and a BMP; a notes.txt beside them."""
    root = tmp_path / "support"
    (root / "apple").mkdir(parents=True)
    (root / "webp_only").mkdir()
    for i in range(3):
        photo(root / "apple" / f"a{i}.png", i)
        photo(root / "webp_only" / f"w{i}.webp", 10 + i, "WEBP", quality=90)
    photo(root / "webp_only" / "old.bmp", 20, "BMP")
    (root / "apple" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    photo(tmp_path / "q.jpg", 30, "JPEG")
    return root


def test_classify_reports_every_skipped_file(cli, tiny, support, tmp_path):
    q = tmp_path / "q.jpg"
    res = run(cli, "classify", "--model", tiny, "--support", support, "--query", q, check=1)
    bmp = support / "webp_only" / "old.bmp"
    assert f"cannot read image ({bmp}): BMP images are not supported" in res.stderr
    assert f"skipping file ({support / 'apple' / 'notes.txt'}): not an image" in res.stderr
    assert res.stdout == ""
    res = run(cli, "classify", "--model", tiny, "--support", support, "--query", q, "--json",
              "--on-bad", "skip", check=0)
    out = json.loads(res.stdout)
    assert out["classes"] == ["apple", "webp_only"]  # the WebP class is there
    assert out["support_counts"] == [3, 3]
    assert out["skipped"] == [str(bmp)]
    assert f"({bmp})" in res.stderr and "notes.txt" in res.stderr


@pytest.fixture()
def dataset(tmp_path):
    """7 class folders: c0..c5 with 5 PNGs, tiny with 3."""
    root = tmp_path / "data"
    for k in range(7):
        d = root / ("tiny" if k == 6 else f"c{k}")
        d.mkdir(parents=True)
        for i in range(3 if k == 6 else 5):
            photo(d / f"{i}.png", 100 * k + i)
    return root


def test_eval_counts_what_can_be_sampled(cli, tiny, dataset):
    res = run(cli, "eval", "--model", tiny, "--data", dataset, "--way", 3, "--shot", 1,
              "--query", 3, "--episodes", 2, "--json", check=0)
    out = json.loads(res.stdout)
    assert out["classes"] == 6
    assert (f"class 'tiny' ({dataset / 'tiny'}) has 3 examples, fewer than shot + query = 4"
            in res.stderr)
    assert "lwfm: 6 classes, 3-way 1-shot" in res.stderr


def test_eval_checks_files_up_front(cli, tiny, dataset):
    link = dataset / "c2" / "9_gone.png"
    link.symlink_to(dataset / "nowhere.png")
    res = run(cli, "eval", "--model", tiny, "--data", dataset, "--way", 3, "--shot", 1,
              "--query", 3, "--episodes", 50, "--seed", 3)
    assert res.returncode == 1 and res.stdout == ""
    assert f"cannot read image ({link}): cannot open: No such file or directory" in res.stderr
    assert "classes, 3-way" not in res.stderr  # stopped before the first episode
    broken = dataset / "c4" / "3.png"
    link.unlink()
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(10))
    res = run(cli, "eval", "--model", tiny, "--data", dataset, "--way", 3, "--shot", 1,
              "--query", 3, "--episodes", 50, "--seed", 3)
    assert res.returncode == 1 and f"cannot read image ({broken})" in res.stderr
    assert "classes, 3-way" not in res.stderr


# ---------------------------------------------------------------------------
# CLI consistency

BUNDLED = ROOT / "models" / "omniglot.npz"


def test_positional_model(cli, tiny, support, tmp_path):
    want = run(cli, "info", "--model", BUNDLED, "--json", check=0).stdout
    assert run(cli, "info", BUNDLED, "--json", check=0).stdout == want
    assert run(cli, "info", "--json", BUNDLED, check=0).stdout == want
    res = run(cli, "info", BUNDLED, "--model", BUNDLED, check=2)
    assert "given twice" in res.stderr
    assert run(cli, "info", BUNDLED, BUNDLED, check=2).stderr.startswith(
        "lwfm: unexpected argument")
    (support / "webp_only" / "old.bmp").unlink()
    a = run(cli, "classify", tiny, "--support", support, "--query", tmp_path / "q.jpg",
            "--json", check=0).stdout
    b = run(cli, "classify", "--model", tiny, "--support", support, "--query",
            tmp_path / "q.jpg", "--json", check=0).stdout
    assert a == b


def test_help_command(cli):
    for cmd in ("info", "classify", "eval", "bench"):
        res = run(cli, "help", cmd, check=0)
        assert res.stdout == run(cli, cmd, "--help", check=0).stdout
        assert res.stdout.startswith(f"Usage: lwfm {cmd} ")
    assert "no command 'nope'" in run(cli, "help", "nope", check=2).stderr
    assert run(cli, "help", check=0).stdout.startswith("Usage: lwfm <command>")


def test_threads_everywhere(cli, tiny, support, dataset, tmp_path):
    (support / "webp_only" / "old.bmp").unlink()
    for cmd in ("classify", "eval", "bench"):
        assert "--threads N" in run(cli, cmd, "--help", check=0).stdout
    run(cli, "classify", tiny, "--support", support, "--query", tmp_path / "q.jpg",
        "--threads", 1, check=0)
    run(cli, "eval", tiny, "--data", dataset, "--way", 2, "--query", 2, "--episodes", 2,
        "--threads", 2, check=0)
    assert "--threads" in run(cli, "eval", tiny, "--data", dataset, "--threads", 0,
                              check=2).stderr


def test_help_says_explain_works_for_rcn(cli):
    text = run(cli, "classify", "--help", check=0).stdout
    assert "lwfm-spm models only" not in text and "rcn" in text


def sig_digits(text):
    mantissa = text.split("e")[0].replace("-", "").replace(".", "").lstrip("0")
    return max(len(mantissa.rstrip("0")), 1)


def assert_shortest(text, kind):
    """No decimal with fewer significant digits reads back as the same value."""
    v = kind(text)
    assert all(kind(f"{float(v):.{p}g}") != v for p in range(1, sig_digits(text))), text


def raw_numbers(text):
    """Every non-integer number of a JSON text, as written."""
    found = []

    def keep(s):
        found.append(s)
        return float(s)
    json.loads(text, parse_float=keep)
    return found


def test_shortest_floats(cli, tiny, support, dataset, tmp_path):
    info = run(cli, "info", BUNDLED, check=0).stdout
    assert '"temperature": 0.2,' in info and "0.200000003" not in info
    nums = raw_numbers(run(cli, "info", BUNDLED, "--json", check=0).stdout)
    assert len(nums) >= 5
    for text in nums:
        assert_shortest(text, np.float32)
    (support / "webp_only" / "old.bmp").unlink()
    out = run(cli, "classify", tiny, "--support", support, "--query", tmp_path / "q.jpg",
              "--json", check=0).stdout
    nums = raw_numbers(out)
    assert len(nums) == 4  # 2 probabilities, 2 logits
    for text in nums:
        assert_shortest(text, np.float32)
    # accuracies of 6 queries: 100 / 6 * k print as Python's repr does
    res = run(cli, "eval", tiny, "--data", dataset, "--way", 3, "--query", 2, "--episodes", 3,
              "--json", check=0)
    nums = raw_numbers(res.stdout)
    assert len(nums) >= 2
    for text in nums:
        assert_shortest(text, np.float64)
    assert "000000000" not in res.stdout and "99999999" not in res.stdout


def test_pytorch_checkpoint_named(cli, tmp_path):
    import torch
    torch.save({"w": torch.zeros(2)}, tmp_path / "new.pth")
    torch.save({"w": torch.zeros(2)}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    for name in ("new.pth", "old.pth"):
        res = run(cli, "info", tmp_path / name, check=1)
        assert "PyTorch checkpoint" in res.stderr and "python3 -m lwfm.convert" in res.stderr


# ---------------------------------------------------------------------------
# --explain pictures with words (drawn with cairo)

PANEL, GAP, HEAD, STRIP = 192, 24, 48, 44


def test_explain_picture_has_words(cli, tiny, support, tmp_path):
    (support / "webp_only" / "old.bmp").unlink()
    q = tmp_path / "q.jpg"
    pics = []
    for name in ("webp_only", "a_much_longer_class_name"):
        if name != "webp_only":
            (support / "webp_only").rename(support / name)
        out = tmp_path / f"why_{name}"
        run(cli, "classify", tiny, "--support", support, "--query", q, "--explain", out, check=0)
        with Image.open(out / "000_q.png") as img:
            assert img.size == (2 * PANEL + GAP, HEAD + PANEL + STRIP) and img.mode == "RGB"
            pics.append(np.asarray(img).astype(int))
    for pic in pics:
        head = pic[:HEAD]
        # dark text on white above both panels
        for x0 in (0, PANEL + GAP):
            ink = (head[:, x0:x0 + PANEL].max(-1) < 100).sum()
            assert ink > 150, ink
        # labels under the colour bars (rows below the bars)
        labels = pic[HEAD + PANEL + 20:, :PANEL]
        assert (labels.max(-1) < 120).sum() > 40
    # the class names are in the words: only they change between the two runs
    assert (pics[0][:HEAD] != pics[1][:HEAD]).any()
    assert (pics[0][HEAD:HEAD + PANEL] == pics[1][HEAD:HEAD + PANEL]).all()


def test_eval_oriented_photos_match_python(cli, tiny, tmp_path):
    """EXIF-oriented JPEGs and PNGs and WebP files: `lwfm eval` and
    `python3 -m lwfm.evaluate` (lwfm.episodes.FolderSet) see the same pixels,
    so they score the same episodes alike."""
    import sys
    root = tmp_path / "photos"
    rng = np.random.default_rng(5)
    for c in range(3):
        d = root / f"c{c}"
        d.mkdir(parents=True)
        for i in range(4):
            px = np.kron(rng.integers(0, 256, (3, 5, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
            img = Image.fromarray(px)
            o = 1 + (4 * c + i) % 8
            if STORE[o] is not None:
                img = img.transpose(STORE[o])
            fmt, ext, kw = [("JPEG", "jpg", {"quality": 95}), ("PNG", "png", {}),
                            ("WEBP", "webp", {"lossless": True})][(c + i) % 3]
            img.save(d / f"{i}.{ext}", fmt, exif=exif_bytes(o), **kw)
    res = run(cli, "eval", tiny, "--data", root, "--way", 3, "--shot", 1, "--query", 2,
              "--episodes", 6, "--seed", 4, "--json", check=0)
    got = json.loads(res.stdout)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    py = subprocess.run(
        [sys.executable, "-m", "lwfm.evaluate", "--model", tiny, "--data", str(root), "--way", "3",
         "--shot", "1", "--query", "2", "--episodes", "6", "--seed", "4", "--backend", "lwfm",
         "--json"], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert py.returncode == 0, py.stderr
    want = json.loads(py.stdout)
    assert got["episode_accuracies"] == want["episode_accuracies"]
    assert got["classes"] == 3
