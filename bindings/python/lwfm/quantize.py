"""Calibrate a model for int8 inference: add its ``quant/`` members.

    python3 -m lwfm.quantize MODEL.npz --data TRAINING_DATA [--images 64]
        [--percentile 100] [--seed 0] [--output MODEL-int8.npz]

Runs the fp32 model (the C library, ``lwfm_model_convolution_ranges``) on
``--images`` images drawn at random (``--seed``) from ``--data``: the
model's TRAINING data (an Omniglot ``.npz`` such as images_background.npz,
or a folder of class folders such as mini-imagenet/train), never its test
images. For every backbone convolution it records each image's largest
|input| and stores the ``--percentile`` of these over the images (100: their
maximum) as ``quant/<convolution weight key>``, a float32 scalar: the input
range int8 quantises to (docs/weight-format.md, "int8 calibration").

Every other member of the file is copied byte for byte (fp32 and bf16
results are unchanged; the command checks fp32 features on random inputs).
A report is printed as JSON: the ranges, and the int8 features' error
against fp32 on the calibration images.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import zipfile
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .episodes import open_dataset

QUANT_PREFIX = "quant/"


def _log(msg: str) -> None:
    print(f"lwfm.quantize: {msg}", file=sys.stderr, flush=True)


def sample_items(class_sizes: Sequence[int], count: int, seed: int) -> List[tuple]:
    """``count`` distinct (class, example) pairs, uniformly over all images."""
    total = int(sum(class_sizes))
    if count < 1 or count > total:
        raise ValueError(f"--images must be in 1..{total}, got {count}")
    flat = np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))
    starts = np.cumsum([0] + list(class_sizes))
    cls = np.searchsorted(starts, flat, side="right") - 1
    return [(int(c), int(f - starts[c])) for c, f in zip(cls, flat)]


def measure_ranges(model, ds, items, batch: int = 16) -> np.ndarray:
    """Per image and convolution, the largest |input|: (n, convolutions)."""
    out = []
    for i in range(0, len(items), batch):
        raw = ds.load(items[i:i + batch])
        x = model.preprocess(list(raw))
        out.append(model.convolution_ranges(x))
    return np.concatenate(out)


def quant_members(names: Sequence[str], ranges: np.ndarray,
                  percentile: float) -> Dict[str, np.ndarray]:
    """The ``quant/`` members: float32 scalars, finite and > 0."""
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"--percentile must be in (0, 100], got {percentile}")
    out = {}
    for i, name in enumerate(names):
        r = float(np.percentile(ranges[:, i], percentile))
        # an input that is zero on every image (a dead layer): any range
        # works, the smallest normal one would only make huge biases
        out[QUANT_PREFIX + name] = np.array(r if r > 0 else 1.0, dtype=np.float32)
    return out


def write_with_members(src: str, dst: str, members: Mapping[str, np.ndarray]) -> None:
    """Copy ``src`` member by member (bytes unchanged; old ``quant/`` members
    dropped) and add ``members`` as ``.npy``; atomic (temporary + rename)."""
    d = os.path.dirname(os.path.abspath(dst))
    fd, tmp = tempfile.mkstemp(prefix=".quantize.", suffix=".npz", dir=d)
    os.close(fd)
    try:
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w") as zout:
            for info in zin.infolist():
                if info.filename.startswith(QUANT_PREFIX):
                    continue
                zout.writestr(info, zin.read(info.filename), compress_type=info.compress_type)
            for name, arr in members.items():
                buf = io.BytesIO()
                np.save(buf, arr, allow_pickle=False)
                zout.writestr(name + ".npy", buf.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_fp32_unchanged(src: str, dst: str) -> None:
    import lwfm
    with lwfm.Model(src) as a, lwfm.Model(dst) as b:
        x = np.random.default_rng(0).standard_normal((2,) + a.input_shape).astype(np.float32)
        if not np.array_equal(a.features(x), b.features(x)):
            raise SystemExit("the quantised file's fp32 features differ from the original's "
                             "(a bug)")


def _int8_error(dst: str, x: np.ndarray) -> Dict[str, float]:
    """Relative error of int8 features against fp32 on x."""
    import lwfm
    with lwfm.Model(dst) as f, lwfm.Model(dst, precision="int8") as q:
        a, b = f.features(x), q.features(x)
    err = np.linalg.norm((a - b).reshape(len(x), -1), axis=1)
    ref = np.linalg.norm(a.reshape(len(x), -1), axis=1)
    return {"median_relative_l2": float(np.median(err / ref)),
            "max_relative_l2": float(np.max(err / ref))}


def quantize(model_path: str, data: str, output: str, images: int = 64,
             percentile: float = 100.0, seed: int = 0) -> Dict[str, Any]:
    import lwfm
    ds = open_dataset(data)
    items = sample_items(ds.class_sizes, images, seed)
    with lwfm.Model(model_path) as model:
        names = model.convolution_names()
        _log(f"{len(names)} convolutions, {len(items)} calibration images from {data}")
        ranges = measure_ranges(model, ds, items)
        x = model.preprocess(list(ds.load(items[:16])))
    members = quant_members(names, ranges, percentile)
    write_with_members(model_path, output, members)
    _check_fp32_unchanged(model_path, output)
    return {"model": model_path, "output": output, "data": data, "images": len(items),
            "seed": seed, "percentile": percentile,
            "ranges": {k[len(QUANT_PREFIX):]: float(v) for k, v in members.items()},
            "int8_vs_fp32_features": _int8_error(output, x)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m lwfm.quantize",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--data", required=True,
                   help="the model's training images (never its test images)")
    p.add_argument("--images", type=int, default=64, help="calibration images (default 64)")
    p.add_argument("--percentile", type=float, default=100.0,
                   help="of the per-image maxima, stored as the range (default 100: the max)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="default: rewrite MODEL in place")
    args = p.parse_args(argv)
    try:
        report = quantize(args.model, args.data, args.output or args.model, args.images,
                          args.percentile, args.seed)
    except (ValueError, OSError) as exc:
        print(f"lwfm.quantize: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
