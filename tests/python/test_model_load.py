"""Loading weight files: every defect gives a specific status and a message
that names what is wrong (the reader's byte-level checks are in
tests/c/test_npz.c; these exercise the configuration and the backbone)."""
import numpy as np
import pytest

import lwfm_ref
from conftest import export

IO, FORMAT, MISSING, SHAPE, DTYPE, LIMIT, UNSUPPORTED = 3, 4, 5, 6, 7, 8, 9


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    path, _ = export(tmp_path_factory.mktemp("m"), lwfm_ref.make_config(), seed=0)
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def load_modified(lib, tmp_path, arrays, change):
    a = {k: v.copy() for k, v in arrays.items()}
    change(a)
    path = tmp_path / "bad.npz"
    np.savez(path, **a)
    with pytest.raises(lib.Error) as e:
        lib.Model(path)
    return e.value


def ascii(s):
    return np.frombuffer(s.encode(), np.uint8)


CASES = [
    ("missing tensor", lambda a: a.pop("feature_extractor.layer3.1.conv2.weight"), MISSING,
     "feature_extractor.layer3.1.conv2.weight"),
    ("missing BN stat", lambda a: a.pop("feature_extractor.layer1.0.bn1.running_var"), MISSING,
     "running_var"),
    ("wrong shape", lambda a: a.__setitem__("feature_extractor.layer2.0.conv1.weight",
                                            np.zeros((128, 64, 1, 1), np.float32)), SHAPE,
     "(128, 64, 3, 3)"),
    ("complex dtype", lambda a: a.__setitem__("feature_extractor.initial_block.bn1.bias",
                                              np.zeros(64, np.complex64)), DTYPE, "<c8"),
    ("NaN weight", lambda a: a["feature_extractor.layer4.1.conv1.weight"].__setitem__(
        (0, 0, 0, 0), np.nan), FORMAT, "layer4.1.conv1.weight"),
    ("negative variance", lambda a: a["feature_extractor.layer1.1.bn2.running_var"].__setitem__(
        3, -1.0), FORMAT, "negative"),
    ("matcher shape", lambda a: a.__setitem__("matchers.0.linear.0.weight",
                                              np.zeros((256, 256), np.float32)), SHAPE,
     "matchers.0.linear.0.weight"),
    ("missing matcher", lambda a: a.pop("matchers.1.linear.2.weight"), MISSING, "matchers.1"),
    ("unknown method", lambda a: a.__setitem__("config/method", ascii("protonet")), UNSUPPORTED,
     "protonet"),
    ("unknown backbone", lambda a: a.__setitem__("config/backbone", ascii("vit")), UNSUPPORTED,
     "vit"),
    ("format version", lambda a: a.__setitem__("config/format_version", np.int32(7)), UNSUPPORTED,
     "version 7"),
    ("no config", lambda a: a.pop("config/format_version"), MISSING, "config/format_version"),
    ("unsorted taps", lambda a: a.__setitem__("config/hyperpixel_ids", np.array([8, 7], np.int32)),
     FORMAT, "hyperpixel_ids"),
    ("tap out of range", lambda a: a.__setitem__("config/hyperpixel_ids",
                                                 np.array([7, 9], np.int32)), UNSUPPORTED,
     "blocks 0..8"),
    ("feature size 1", lambda a: a.__setitem__("config/feature_size", np.int32(1)), FORMAT,
     "feature_size"),
    ("top_k too large", lambda a: a.__setitem__("config/top_k", np.int32(10)), FORMAT, "top_k"),
    ("negative temperature", lambda a: a.__setitem__("config/temperature", np.float32(-1)),
     FORMAT, "temperature"),
    ("bad mean length", lambda a: a.__setitem__("config/mean", np.zeros(2, np.float32)), FORMAT,
     "mean"),
    ("zero std", lambda a: a.__setitem__("config/std", np.zeros(3, np.float32)), FORMAT, "std"),
    ("too many taps", lambda a: a.__setitem__("config/hyperpixel_ids",
                                              np.arange(20, dtype=np.int32)), LIMIT, ""),
]


@pytest.mark.parametrize("name,change,status,needle", CASES, ids=[c[0] for c in CASES])
def test_defective_files(lib, tmp_path, arrays, name, change, status, needle):
    err = load_modified(lib, tmp_path, arrays, change)
    assert err.status == status, (name, err.status, str(err))
    assert needle in str(err), str(err)
    assert "bad.npz" in str(err)


def test_unreadable_and_truncated(lib, tmp_path, arrays):
    with pytest.raises(lib.Error) as e:
        lib.Model(tmp_path / "absent.npz")
    assert e.value.status == IO and "absent.npz" in str(e.value)
    with pytest.raises(lib.Error) as e:
        lib.Model(tmp_path)  # a directory
    assert e.value.status == IO
    good = tmp_path / "good.npz"
    np.savez(good, **arrays)
    data = good.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        p = tmp_path / f"cut{cut}.npz"
        p.write_bytes(data[:cut])
        with pytest.raises(lib.Error) as e:
            lib.Model(p)
        assert e.value.status == FORMAT, (cut, str(e.value))


def test_size_limit_option(lib, tmp_path, arrays):
    good = tmp_path / "good.npz"
    np.savez(good, **arrays)
    with pytest.raises(lib.Error) as e:
        lib.Model(good, max_total_bytes=1 << 20)
    assert e.value.status == LIMIT and "max" in str(e.value)
    with lib.Model(good, max_total_bytes=1 << 30) as m:
        assert m.config["method"] == "lwfm-spm"


def test_float16_and_float64_files_load_the_same(lib, tmp_path, arrays):
    x = np.random.default_rng(0).standard_normal((2, 3, 84, 84)).astype(np.float32)
    feats = {}
    for dt in (np.float16, np.float64):
        a = {k: (v.astype(dt) if v.dtype == np.float32 and not k.startswith("config/") else v)
             for k, v in arrays.items()}
        p = tmp_path / f"{np.dtype(dt).name}.npz"
        np.savez_compressed(p, **a)
        with lib.Model(p) as m:
            feats[dt] = m.features(x)
    ref16 = {k: v.astype(np.float16).astype(np.float32) if v.dtype == np.float32 and
             not k.startswith("config/") else v for k, v in arrays.items()}
    p = tmp_path / "f32from16.npz"
    np.savez(p, **ref16)
    with lib.Model(p) as m:
        np.testing.assert_array_equal(m.features(x), feats[np.float16])
    with lib.Model(tmp_path / "float64.npz") as m64:
        np.testing.assert_array_equal(m64.features(x), feats[np.float64])
