"""lwfm_model_preprocess (Model.preprocess) against lwfm.episodes.preprocess,
the NumPy + PyTorch definition (antialiased bilinear of F.interpolate)."""
import ctypes
import os
import zlib

import numpy as np
import pytest

import lwfm_ref
from conftest import export
from lwfm.episodes import preprocess

TOL = 1e-5

# name -> configuration overrides (Conv-64F keeps the weight files small)
CONFIGS = {
    "rgb_no_resize": dict(image_size=32, resize=0),
    "rgb_resize_odd_down": dict(image_size=32, resize=41),   # crop offset round(4.5) = 4
    "rgb_resize_odd_up": dict(image_size=32, resize=43),     # crop offset round(5.5) = 6
    "grey_resize": dict(image_size=28, resize=35, in_channels=1, mean=[0.45], std=[0.3]),
    "grey_no_resize": dict(image_size=28, resize=0, in_channels=1, mean=[0.9], std=[0.2]),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import lwfm
    if not os.environ.get("LWFM_LIBRARY"):
        pytest.skip("LWFM_LIBRARY is not set (run through 'make test')")
    tmp = tmp_path_factory.mktemp("pre")
    out = {}
    for seed, (name, over) in enumerate(CONFIGS.items()):
        cfg = lwfm_ref.make_config(backbone="conv64f", hyperpixel_ids=[2, 3], **over)
        path, _ = export(tmp, cfg, seed=seed, name=name + ".npz")
        model = lwfm.Model(path)
        ref_cfg = dict(model.config)
        ref_cfg["in_channels"] = model.input_shape[0]
        out[name] = (model, ref_cfg)
    yield out
    for model, _ in out.values():
        model.close()


def _image(rng, h, w, ch, dtype):
    top = np.iinfo(dtype).max
    shape = (h, w) if ch == 0 else (h, w, ch)
    img = rng.integers(0, top + 1, size=shape, dtype=np.int64).astype(dtype)
    if ch in (2, 4):  # alpha with opaque, transparent and partial pixels
        img[..., -1] = rng.choice([0, top, top // 3, top // 2], size=(h, w)).astype(dtype)
    return img


def _sizes(cfg):
    s = cfg["image_size"]
    r = cfg["resize"] or s
    return [(r, r), (s, s), (s - 5, s - 5), (r + 17, r + 17), (7, 40), (53, 19), (1, 1),
            (r, r + 3), (3 * r + 1, 2 * r - 1)]


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_matches_reference(models, name, dtype):
    model, cfg = models[name]
    rng = np.random.default_rng(zlib.crc32(f"{name}/{dtype.__name__}".encode()))
    for ch in (0, 1, 2, 3, 4):  # 0: a 2-D (H, W) array
        for h, w in _sizes(cfg):
            img = _image(rng, h, w, ch, dtype)
            got = model.preprocess(img)
            want = preprocess(img[None], cfg)
            assert got.shape == want.shape == (1,) + model.input_shape
            assert got.dtype == np.float32
            err = float(np.abs(got - want).max())
            assert err < TOL, (name, dtype, ch, h, w, err)


def test_list_of_sizes_and_strides(models):
    model, cfg = models["rgb_resize_odd_up"]
    rng = np.random.default_rng(5)
    imgs = [_image(rng, 40, 60, 3, np.uint8), _image(rng, 20, 20, 0, np.uint16),
            _image(rng, 90, 30, 4, np.uint8)]
    got = model.preprocess(imgs)
    assert got.shape == (3,) + model.input_shape
    for k, img in enumerate(imgs):
        np.testing.assert_allclose(got[k], preprocess(img[None], cfg)[0], rtol=0, atol=TOL)
    # a crop of a larger array (rows apart in memory) and a transposed view (copied)
    big = _image(rng, 100, 120, 3, np.uint8)
    crop = big[10:70, 5:95]
    assert not crop.flags.c_contiguous
    np.testing.assert_array_equal(model.preprocess(crop),
                                  model.preprocess(np.ascontiguousarray(crop)))
    tr = big.transpose(1, 0, 2)
    np.testing.assert_array_equal(model.preprocess(tr), model.preprocess(tr.copy()))
    # bool images are 0 / 255 (the Omniglot convention: True = paper)
    b = rng.random((30, 30)) > 0.5
    np.testing.assert_array_equal(model.preprocess(b),
                                  model.preprocess(b.astype(np.uint8) * 255))
    np.testing.assert_allclose(model.preprocess(b), preprocess(b[None], cfg), rtol=0, atol=TOL)


def test_grey_model_luma(models):
    model, cfg = models["grey_resize"]
    rng = np.random.default_rng(6)
    img = _image(rng, 50, 50, 3, np.uint8)
    got = model.preprocess(img)
    assert got.shape == (1, 1, 28, 28)
    luma = (0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]) / 255.0
    want = preprocess(luma[None].astype(np.float32), cfg)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_python_argument_errors(models):
    model, _ = models["rgb_no_resize"]
    with pytest.raises(ValueError, match="dtype"):
        model.preprocess(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="shape"):
        model.preprocess(np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        model.preprocess(np.zeros((2, 8, 8, 3), np.uint8))


def _raw(model, pixels, fmt, h, w, c, stride, out, count):
    import lwfm
    lib = lwfm._library()
    return lib.lwfm_model_preprocess(
        model._h(), ctypes.c_void_p(pixels.ctypes.data), fmt, h, w, c, stride,
        out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), count)


def test_c_errors_leave_output_untouched(models):
    import lwfm
    model, _ = models["rgb_no_resize"]
    n = int(np.prod(model.input_shape))
    px = np.full((16, 16, 4), 100, np.uint8)
    out = np.full(n + 1, 7.0, np.float32)
    cases = [  # (fmt, h, w, c, stride, count) -> status
        ((0, 16, 16, 5, 0, n), 6),     # channels: LWFM_ERR_SHAPE
        ((0, 16, 16, 0, 0, n), 6),
        ((0, 0, 16, 3, 0, n), 1),      # zero height: LWFM_ERR_INVALID_ARGUMENT
        ((0, 16, 0, 3, 0, n), 1),
        ((2, 16, 16, 3, 0, n), 1),     # unknown format
        ((0, 16, 16, 3, 47, n), 1),    # stride shorter than a row
        ((1, 16, 8, 4, 63, n), 1),
        ((0, 16, 16, 3, 0, n - 1), 12),  # LWFM_ERR_BUFFER_TOO_SMALL
        ((0, 2**40, 2**40, 4, 0, n), 8),  # LWFM_ERR_LIMIT
    ]
    for args, status in cases:
        assert _raw(model, px, *args[:5], out, args[5]) == status, args
        msg = lwfm._library().lwfm_last_error().decode()
        assert msg.startswith("preprocess: "), msg
        assert (out == 7.0).all(), args
    assert _raw(model, px, 0, 16, 16, 3, 64, out, n + 1) == 0
    assert out[n] == 7.0 and not (out[:n] == 7.0).any()
    # the binding's lwfm.Error carries the status and message
    with pytest.raises(lwfm.Error, match="positive"):
        model.preprocess(np.zeros((0, 5), np.uint8))
