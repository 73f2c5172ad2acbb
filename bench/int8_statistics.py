"""Compare lwfm.quantize's range statistics by the int8 features' error.

    PYTHONPATH=bindings/python LWFM_LIBRARY=build/liblwfm.so /usr/bin/python3 \\
        bench/int8_statistics.py MODEL.npz TRAINING_DATA [--images 64] [--held-out 32]

Draws --images + --held-out training images (seed 0), calibrates on the
first --images with each statistic (image-max, values at 99.9 / 99.99 /
99.999, mse) and prints, per statistic, the ranges and the median relative
L2 error of the int8 features against fp32 on the held-out images (never
used for calibration). docs/benchmarks.md#int8 has the figures.
"""
import argparse
import os
import tempfile

import numpy as np

import lwfm
from lwfm import quantize as Q
from lwfm.episodes import open_dataset


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--held-out", type=int, default=32)
    args = p.parse_args()
    ds = open_dataset(args.data)
    items = Q.sample_items(ds.class_sizes, args.images + args.held_out, 0)
    perm = np.random.default_rng(0).permutation(len(items))
    cal = [items[i] for i in perm[:args.images]]
    held = [items[i] for i in perm[args.images:]]
    with lwfm.Model(args.model) as m:
        names = m.convolution_names()
        limits = Q.measure_ranges(m, ds, cal).max(axis=0)
        counts = Q.measure_histograms(m, ds, cal, limits)
        x = m.preprocess(list(ds.load(held)))
    stats = {"image-max": limits}
    for pct in (99.9, 99.99, 99.999):
        stats[f"values {pct}"] = [Q.value_percentile_range(c, l, pct)
                                  for c, l in zip(counts, limits)]
    stats["mse"] = [Q.mse_range(c, l) for c, l in zip(counts, limits)]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "q.npz")
        for name, ranges in stats.items():
            Q.write_with_members(args.model, out, Q.range_members(names, ranges))
            err = Q._int8_error(out, x)["median_relative_l2"]
            print(f"{name:14s} {err:.4f}  ranges {[round(float(r), 2) for r in ranges]}")


if __name__ == "__main__":
    main()
