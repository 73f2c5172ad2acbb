"""The convolutions load option (lwfm_load_options_set_convolutions /
Model(convolutions=...)): "direct" keeps oneDNN's direct convolution and
holds the least memory, "winograd" and "auto" run the 3x3 stride-1 layers as
Winograd where the CPU allows. The choices agree to float32 rounding:

  features: max |a - b| / max |b| <= 2e-5 between any two choices (each is
            within ~4e-6 of the PyTorch reference, tested elsewhere);
  logits:   the same bound, relative to the largest logit.

Which layers run as Winograd is read from the load's DEBUG log line
("N convolutions as Winograd"): on a CPU without AVX2 + FMA none do, and the
test says so instead of comparing two equal runs."""
import ctypes
import pickle
import re

import numpy as np
import pytest

import lwfm
from conftest import ROOT

SMALL = ROOT / "build" / "tests" / "lwfm_small.npz"
REL = 2e-5


class _Log:
    """The library's DEBUG lines while it is installed."""

    def __init__(self):
        lib = lwfm._library()
        self.CB = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
        self.lines = []
        self._cb = self.CB(lambda lv, msg, user: self.lines.append(msg.decode()))
        lib.lwfm_set_log_callback.argtypes = [self.CB, ctypes.c_void_p, ctypes.c_int]
        lib.lwfm_set_log_callback(self._cb, None, 0)

    def close(self):
        lwfm._library().lwfm_set_log_callback(self.CB(), None, 3)


def _load(convolutions):
    """(model, Winograd convolution count, bytes of weights held)."""
    log = _Log()
    try:
        m = lwfm.Model(SMALL, convolutions=convolutions)
    finally:
        log.close()
    line = next(l for l in log.lines if "weights held" in l)
    held = int(re.search(r"held: (\d+) bytes", line).group(1))
    wino = int(re.search(r"(\d+) convolutions as Winograd", line).group(1))
    return m, wino, held


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_choices_agree_and_direct_holds_least():
    loaded = {c: _load(c) for c in ("auto", "direct", "winograd")}
    assert loaded["direct"][1] == 0
    if loaded["winograd"][1] == 0:
        pytest.skip("this CPU has no AVX2 + FMA: every choice runs the direct convolution")
    # the Winograd copy of a 3x3 layer's weights is (m + 2)^2 / 9 times larger
    assert loaded["direct"][2] < loaded["winograd"][2]
    rng = np.random.default_rng(0)
    c, h, w = loaded["auto"][0].input_shape
    x = rng.standard_normal((6, c, h, w)).astype(np.float32)
    labels = np.array([0, 1, 2], np.int32)
    feats = {k: v[0].features(x) for k, v in loaded.items()}
    logits = {k: v[0].episode_score(x[:3], labels, x[3:]) for k, v in loaded.items()}
    for k in ("auto", "winograd"):
        assert _rel(feats[k], feats["direct"]) <= REL, k
        assert _rel(logits[k], logits["direct"]) <= REL, k
    assert not np.array_equal(feats["winograd"], feats["direct"])  # the option took effect
    for m, _, _ in loaded.values():
        m.close()


def test_bad_value_and_pickle_keep_the_choice():
    with pytest.raises(ValueError, match="convolutions must be one of"):
        lwfm.Model(SMALL, convolutions="fft")
    m = lwfm.Model(SMALL, convolutions="direct")
    back = pickle.loads(pickle.dumps(m))
    assert back.convolutions == "direct"
    x = np.random.default_rng(1).standard_normal((2,) + m.input_shape).astype(np.float32)
    assert np.array_equal(back.features(x), m.features(x))
    m.close()
    back.close()
