"""Shared fixtures: reference models exported to weight files."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
for sub in ("bindings/python",):
    p = str(ROOT / sub)
    if p not in sys.path:
        sys.path.insert(0, p)

import lwfm_ref  # noqa: E402
from lwfm.weights import save_weights  # noqa: E402

SHARED = ROOT.parent / "shared"
DN4_DIR = SHARED / "checkpoints" / "dn4"

torch.set_num_threads(2)


def cpu_runs_bf16() -> bool:
    """Whether oneDNN 2.6 has bf16 convolutions on this CPU: only with AVX-512
    (its avx512_core: F, BW, VL and DQ), read from /proc/cpuinfo, apart from
    the library, so that a library refusing bf16 where it should run fails."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh
                          if line.startswith("flags")), [])
    except OSError:
        return False
    return {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= set(flags)


needs_bf16 = pytest.mark.skipif(not cpu_runs_bf16(),
                                reason="bf16 needs an AVX-512 CPU (this one has none)")


def rel_err(got, expect):
    """max |got - expect| / max |expect| (the project's parity measure)."""
    got, expect = np.asarray(got, np.float64), np.asarray(expect, np.float64)
    return float(np.abs(got - expect).max() / max(np.abs(expect).max(), 1e-30))


def export(tmp_path, config, seed=0, name="model.npz"):
    """Reference LWFMSPM(config) with random weights and BatchNorm statistics,
    written as a weight file. Returns (path, model in eval mode)."""
    torch.manual_seed(seed)
    model = lwfm_ref.LWFMSPM(config).eval()
    lwfm_ref.randomize_bn(model, seed=seed + 1)
    path = tmp_path / name
    save_weights(path, {k: v.detach().numpy() for k, v in model.state_dict().items()},
                 model.config)
    return path, model


def random_episode(rng, shots, n_query, size, channels=3):
    """Random images: supports with labels (shots[c] of class c, shuffled) and queries."""
    labels = np.concatenate([np.full(s, c) for c, s in enumerate(shots)]).astype(np.int32)
    rng.shuffle(labels)
    support = rng.standard_normal((len(labels), channels, size, size)).astype(np.float32)
    query = rng.standard_normal((n_query, channels, size, size)).astype(np.float32)
    return support, labels, query


def reference_logits(model, support, labels, query):
    """A peer head's reference logits in float64 (the model has ``extract`` and
    ``episode_logits``); the model is left in float32."""
    m64 = model.double()
    try:
        with torch.no_grad():
            fs = m64.extract(torch.from_numpy(support).double())
            fq = m64.extract(torch.from_numpy(query).double())
            return m64.episode_logits(fs, torch.from_numpy(labels).long(), fq).numpy()
    finally:
        model.float()


@pytest.fixture
def lib():
    import lwfm
    if not os.environ.get("LWFM_LIBRARY"):
        pytest.skip("LWFM_LIBRARY is not set (run through 'make test')")
    return lwfm
