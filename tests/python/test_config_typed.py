"""The typed configuration calls of the C API (lwfm_model_config_int /
_float / _string / _floats, lwfm_method_name): every key of
lwfm_model_config_json() is readable with its type and the same value, on
the bundled models and on one model of each method; wrong keys and types
fail with the documented statuses and leave the output untouched."""
import ctypes
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import lwfm
import lwfm_ref
from conftest import export
from lwfm.weights import save_weights

ROOT = Path(__file__).resolve().parents[2]
MISSING_KEY, WRONG_KIND, BUFFER_TOO_SMALL = 5, 10, 12
INT_KEYS = {"format_version", "input_channels", "first_padding", "feature_size", "top_k",
            "neighbor_k", "query_batch", "image_size", "resize", "learnable_matcher"}
FLOAT_KEYS = {"temperature", "temperature_attn", "matcher_prob", "calibration_temperature",
              "unknown_threshold"}
STRING_KEYS = {"method", "backbone", "distance", "batch_norm"}
LIST_KEYS = {"hyperpixel_ids", "mean", "std"}


@pytest.fixture(scope="module")
def clib():
    lib = ctypes.CDLL(os.environ["LWFM_LIBRARY"])
    p = ctypes.c_void_p
    lib.lwfm_model_load.argtypes = [ctypes.POINTER(p), ctypes.c_char_p, p]
    lib.lwfm_model_destroy.argtypes = [p]
    lib.lwfm_model_config_int.argtypes = [p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int64)]
    lib.lwfm_model_config_float.argtypes = [p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_double)]
    lib.lwfm_model_config_string.argtypes = [p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)]
    lib.lwfm_model_config_floats.argtypes = [p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_double),
                                             ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
    lib.lwfm_method_name.restype = ctypes.c_char_p
    lib.lwfm_method_name.argtypes = [ctypes.c_int]
    return lib


def _models(tmp_path):
    out = [ROOT / "models" / "omniglot.npz", ROOT / "models" / "omniglot-rcn.npz"]
    out.append(export(tmp_path, lwfm_ref.make_config(), seed=1, name="r18.npz")[0])
    torch.manual_seed(0)
    for name, model in (("dn4.npz", lwfm_ref.DN4({})), ("mml.npz", lwfm_ref.MML({"distance": "kl"}))):
        save_weights(tmp_path / name, {k: v.detach().numpy() for k, v in model.state_dict().items()},
                     model.config)
        out.append(tmp_path / name)
    return out


def test_every_json_key_has_its_typed_value(clib, tmp_path):
    methods = set()
    for path in _models(tmp_path):
        h = ctypes.c_void_p()
        assert clib.lwfm_model_load(ctypes.byref(h), str(path).encode(), None) == 0
        try:
            with lwfm.Model(path) as m:
                config = m.config
            methods.add(config["method"])
            for key, want in config.items():
                k = key.encode()
                if key in INT_KEYS:
                    v = ctypes.c_int64(-7)
                    assert clib.lwfm_model_config_int(h, k, ctypes.byref(v)) == 0, key
                    assert v.value == int(want), (path, key)
                    d = ctypes.c_double()
                    assert clib.lwfm_model_config_float(h, k, ctypes.byref(d)) == 0
                    assert d.value == int(want)
                elif key in FLOAT_KEYS:
                    v = ctypes.c_double()
                    assert clib.lwfm_model_config_float(h, k, ctypes.byref(v)) == 0, key
                    # the configuration holds float32; JSON prints its shortest form
                    assert np.float32(v.value) == np.float32(want), (path, key, v.value)
                    i = ctypes.c_int64(-7)
                    assert clib.lwfm_model_config_int(h, k, ctypes.byref(i)) == WRONG_KIND
                    assert i.value == -7
                elif key in STRING_KEYS:
                    v = ctypes.c_char_p()
                    assert clib.lwfm_model_config_string(h, k, ctypes.byref(v)) == 0, key
                    assert v.value.decode() == want, (path, key)
                else:
                    assert key in LIST_KEYS, f"untyped key {key}"
                    n = ctypes.c_size_t()
                    assert clib.lwfm_model_config_floats(h, k, None, 0, ctypes.byref(n)) == \
                        (BUFFER_TOO_SMALL if want else 0)
                    assert n.value == len(want)
                    buf = (ctypes.c_double * len(want))()
                    assert clib.lwfm_model_config_floats(h, k, buf, len(want), None) == 0
                    assert np.array_equal(np.float32(list(buf)), np.float32(want)), (path, key)
            # keys of other methods, unknown keys: missing, output untouched
            for key in ("top_k", "neighbor_k", "distance", "batch_norm", "first_padding", "nope"):
                if key in config:
                    continue
                i = ctypes.c_int64(-7)
                s = ctypes.c_char_p()
                assert clib.lwfm_model_config_int(h, key.encode(), ctypes.byref(i)) == MISSING_KEY
                assert clib.lwfm_model_config_string(h, key.encode(), ctypes.byref(s)) == \
                    MISSING_KEY
                assert i.value == -7 and s.value is None
            # every model has the calibration keys
            d = ctypes.c_double(-1)
            assert clib.lwfm_model_config_float(h, b"calibration_temperature", ctypes.byref(d)) == 0
            assert np.float32(d.value) == np.float32(config.get("calibration_temperature", 1.0))
            s = ctypes.c_char_p()
            assert clib.lwfm_model_config_string(h, b"image_size", ctypes.byref(s)) == WRONG_KIND
            assert clib.lwfm_model_config_int(h, None, ctypes.byref(ctypes.c_int64())) == 1
        finally:
            clib.lwfm_model_destroy(h)
    assert methods == {"lwfm-spm", "rcn", "dn4", "mml"}


def test_method_name(clib):
    assert [clib.lwfm_method_name(m) for m in range(4)] == [b"lwfm-spm", b"dn4", b"mml", b"rcn"]
    assert clib.lwfm_method_name(4) is None and clib.lwfm_method_name(-1) is None
