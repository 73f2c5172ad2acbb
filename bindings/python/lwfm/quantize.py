"""Calibrate a model for int8 inference: add its ``quant/`` members.

    python3 -m lwfm.quantize MODEL.npz --data TRAINING_DATA [--images 64]
        [--statistic mse|values|image-max] [--percentile P] [--seed 0]
        [--output MODEL-int8.npz]

Runs the fp32 model (the C library) on ``--images`` images drawn at random
(``--seed``) from ``--data``: the model's TRAINING data (an Omniglot
``.npz`` such as images_background.npz, or a folder of class folders such
as mini-imagenet/train), never its test images. For every backbone
convolution it stores the input range int8 quantises to as
``quant/<convolution weight key>``, a float32 scalar (docs/weight-format.md,
"int8 calibration"), chosen by ``--statistic``:

  mse (default)  the range that minimises the summed squared error of
                 quantising all the input values the convolution read
                 (round to range / levels, saturate at the range: clipping
                 rare large values buys a finer step for all the others),
                 from a histogram of them (``lwfm_model_convolution_histograms``,
                 8192 bins over +-their maximum);
  values         the ``--percentile`` (default 99.99) of |x| over all those
                 input values, from the same histogram;
  image-max      the ``--percentile`` (default 100: the maximum) of each
                 image's largest |input| (``lwfm_model_convolution_ranges``);
                 the default before the histograms (issue 19).

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
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

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


HIST_BINS = 8192  # over [-max, max]: 4096 per sign


def measure_histograms(model, ds, items, limits: np.ndarray, bins: int = HIST_BINS,
                       batch: int = 16) -> np.ndarray:
    """Per convolution, a histogram of every value it reads over the
    images, bins over [-limits[i], limits[i]]: uint64 (convolutions, bins)."""
    counts = None
    for i in range(0, len(items), batch):
        x = model.preprocess(list(ds.load(items[i:i + batch])))
        counts = model.convolution_histograms(x, limits, bins, counts)
    return counts


def _folded(counts: np.ndarray, limit: float):
    """A signed histogram as one of |x|: (bin centres, counts), and whether
    any value was negative (then the library quantises the input as s8,
    127 levels a side; otherwise as u8, 255 levels: quant.c)."""
    half = len(counts) // 2
    neg, pos = counts[:half][::-1].astype(np.float64), counts[half:].astype(np.float64)
    width = 2.0 * limit / len(counts)
    return (np.arange(half) + 0.5) * width, neg + pos, bool(neg.sum() > 0)


def value_percentile_range(counts: np.ndarray, limit: float, percentile: float) -> float:
    """The ``percentile`` of |x| over all values (upper edge of its bin)."""
    centres, c, _ = _folded(counts, limit)
    cum = np.cumsum(c)
    k = int(np.searchsorted(cum, cum[-1] * percentile / 100.0))
    return float(min(k + 1, len(c)) * (centres[1] - centres[0]) if len(c) > 1 else limit)


def mse_range(counts: np.ndarray, limit: float, candidates: int = 512,
              points: int = 8) -> float:
    """The range r that minimises the summed squared error of quantising
    the histogrammed values to the library's levels: round to the step
    r / levels, saturate at r. A range below the maximum clips the rare
    large values and rounds all the others finer. Each bin's values are
    taken as spread evenly over it (``points`` per bin), so that a step
    close to the bin width is not mistaken for an exact fit."""
    centres, c, signed = _folded(counts, limit)
    levels = 127.0 if signed else 255.0
    keep = c > 0
    width = centres[1] - centres[0] if len(centres) > 1 else 2.0 * limit
    offsets = ((np.arange(points) + 0.5) / points - 0.5) * width
    x = (centres[keep][:, None] + offsets[None, :]).ravel()
    w = np.repeat(c[keep] / points, points)
    best, best_err = limit, np.inf
    # candidates on a log scale down to 1/4096 of the maximum
    for r in limit * np.logspace(-12, 0, candidates, base=2.0):
        step = r / levels
        q = np.minimum(np.rint(x / step), levels) * step
        err = float(np.dot(w, (x - q) ** 2))
        if err < best_err:
            best, best_err = float(r), err
    return best


def _check_percentile(percentile: float) -> None:
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"--percentile must be in (0, 100], got {percentile}")


def quant_members(names: Sequence[str], ranges: np.ndarray,
                  percentile: float) -> Dict[str, np.ndarray]:
    """The ``quant/`` members from per-image maxima (n, convolutions): their
    ``percentile`` over the images (``--statistic image-max``)."""
    _check_percentile(percentile)
    return range_members(names, np.percentile(ranges, percentile, axis=0))


def range_members(names: Sequence[str], ranges: Sequence[float]) -> Dict[str, np.ndarray]:
    """The ``quant/`` members: float32 scalars, finite and > 0."""
    out = {}
    for name, r in zip(names, ranges):
        r = float(r)
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


STATISTICS = ("mse", "values", "image-max")


def choose_ranges(statistic: str, percentile: Optional[float], model, ds, items
                  ) -> Tuple[np.ndarray, Optional[float]]:
    """The input range of every convolution, and the percentile used
    (checked by :func:`quantize` before any work)."""
    ranges = measure_ranges(model, ds, items)
    if statistic == "image-max":
        p = 100.0 if percentile is None else percentile
        return np.percentile(ranges, p, axis=0), p
    limits = ranges.max(axis=0)
    # a dead input (zero on every image): any range works, see quant_members
    limits = np.where(limits > 0, limits, 1.0).astype(np.float32)
    counts = measure_histograms(model, ds, items, limits)
    if statistic == "values":
        p = 99.99 if percentile is None else percentile
        return np.array([value_percentile_range(c, l, p) for c, l in zip(counts, limits)]), p
    return np.array([mse_range(c, l) for c, l in zip(counts, limits)]), None


def quantize(model_path: str, data: str, output: str, images: int = 64,
             percentile: Optional[float] = None, seed: int = 0,
             statistic: str = "mse") -> Dict[str, Any]:
    import lwfm
    if statistic not in STATISTICS:
        raise ValueError(f"--statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
    if statistic == "mse" and percentile is not None:
        raise ValueError("--percentile applies to --statistic values or image-max, not mse")
    if percentile is not None:
        _check_percentile(percentile)
    ds = open_dataset(data)
    items = sample_items(ds.class_sizes, images, seed)
    with lwfm.Model(model_path) as model:
        names = model.convolution_names()
        _log(f"{len(names)} convolutions, {len(items)} calibration images from {data}")
        ranges, p = choose_ranges(statistic, percentile, model, ds, items)
        x = model.preprocess(list(ds.load(items[:16])))
    members = range_members(names, ranges)
    write_with_members(model_path, output, members)
    _check_fp32_unchanged(model_path, output)
    report = {"model": model_path, "output": output, "data": data, "images": len(items),
              "seed": seed, "statistic": statistic}
    if statistic != "mse":
        report["percentile"] = p
    report["ranges"] = {k[len(QUANT_PREFIX):]: float(v) for k, v in members.items()}
    report["int8_vs_fp32_features"] = _int8_error(output, x)
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m lwfm.quantize",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--data", required=True,
                   help="the model's training images (never its test images)")
    p.add_argument("--images", type=int, default=64, help="calibration images (default 64)")
    p.add_argument("--statistic", choices=STATISTICS, default="mse",
                   help="how each convolution's input range is chosen (default mse: the "
                        "range minimising the squared int8 error of its input values)")
    p.add_argument("--percentile", type=float, default=None,
                   help="values: the percentile of all |input| values (default 99.99); "
                        "image-max: of the per-image maxima (default 100: the max)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="default: rewrite MODEL in place")
    args = p.parse_args(argv)
    try:
        report = quantize(args.model, args.data, args.output or args.model, args.images,
                          args.percentile, args.seed, args.statistic)
    except (ValueError, OSError) as exc:
        print(f"lwfm.quantize: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
