#!/usr/bin/python3
"""Backbone throughput of libLWFM in int8 against fp32 (and bf16 where the
CPU runs it), same run.

    PYTHONPATH=bindings/python LWFM_LIBRARY=build/liblwfm.so \\
        /usr/bin/python3 bench/bench_int8.py [--threads 1] [--reps 15] \\
        [--model NAME=PATH ...]

Each model is calibrated (``lwfm.quantize --statistic image-max``'s steps:
the ranges do not change the speed) on 16 random images unless the file
already has its ``quant/`` members; then the features of one batch
(default 80 images: a 5-way 1-shot 15-query episode) are timed, the
precisions alternating rep by rep so that machine noise hits them alike.
Prints images/s (medians of wall time) and int8 / fp32, by wall time and
by the process's CPU time (steadier on a shared machine). Default models: ResNet-18 taps
[7, 8] fs 3 (LWFM-SPM default) and Conv-64F taps [2, 3] fs 5, random weights,
and the bundled models/omniglot.npz. Run once per thread count (OpenMP's is
fixed at start).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--batch", type=int, default=80)
    ap.add_argument("--model", action="append", default=[],
                    help="NAME=PATH of a weight file (repeatable)")
    return ap.parse_args()


def random_models(tmp):
    import torch
    import lwfm_ref
    from lwfm.weights import save_weights
    out = []
    for name, over in (("resnet18 (random)", {}),
                       ("conv64f (random)", dict(backbone="conv64f", hyperpixel_ids=[2, 3],
                                                 feature_size=5))):
        torch.manual_seed(0)
        m = lwfm_ref.LWFMSPM(lwfm_ref.make_config(**over)).eval()
        lwfm_ref.randomize_bn(m, seed=1)
        p = os.path.join(tmp, name.split()[0] + ".npz")
        save_weights(p, {k: v.detach().numpy() for k, v in m.state_dict().items()}, m.config)
        out.append((name, p))
    return out


def calibrated(lwfm, path, tmp):
    """path, or a copy with quant/ members from 16 random images."""
    import numpy as np
    from lwfm.quantize import quant_members, write_with_members
    try:
        lwfm.Model(path, precision="int8").close()
        return path
    except lwfm.Error:
        pass
    with lwfm.Model(path) as m:
        x = np.random.default_rng(1).standard_normal((16,) + m.input_shape).astype(np.float32)
        members = quant_members(m.convolution_names(), m.convolution_ranges(x), 100.0)
    out = os.path.join(tmp, "q-" + os.path.basename(path))
    write_with_members(path, out, members)
    return out


def bench(lwfm, path, precisions, batch, reps):
    import numpy as np
    models = {p: lwfm.Model(path, precision=p) for p in precisions}
    shape = models["fp32"].input_shape
    x = np.random.default_rng(0).standard_normal((batch,) + shape).astype(np.float32)
    wall = {p: [] for p in precisions}
    cpu = {p: [] for p in precisions}
    for m in models.values():
        m.features(x)  # warm-up: primitives, buffers
    for _ in range(reps):
        for p, m in models.items():
            t, c = time.perf_counter(), time.process_time()
            m.features(x)
            cpu[p].append(time.process_time() - c)
            wall[p].append(time.perf_counter() - t)
    for m in models.values():
        m.close()
    return ({p: batch / statistics.median(t) for p, t in wall.items()},
            {p: batch / statistics.median(t) for p, t in cpu.items()})


def main():
    args = parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    sys.path.insert(0, str(ROOT / "bindings" / "python"))
    import lwfm
    precisions = ["fp32", "int8"]
    with tempfile.TemporaryDirectory() as tmp:
        cases = random_models(tmp) + [("omniglot (bundled)", str(ROOT / "models" / "omniglot.npz"))]
        cases += [tuple(s.split("=", 1)) for s in args.model]
        try:
            lwfm.Model(cases[0][1], precision="bf16").close()
            precisions.append("bf16")
        except lwfm.Error as e:
            print(f"bf16 not measured: {e}")
        print(f"threads {args.threads}, batch {args.batch}, {args.reps} reps; "
              f"load: {os.getloadavg()}")
        # images per second of wall time, and per CPU-second of the process
        # (all its threads): on a shared machine the second is the steadier
        print("| model | " + " | ".join(f"{p} img/s" for p in precisions) + " | int8 / fp32 |"
              + (" int8 / bf16 |" if "bf16" in precisions else "")
              + " int8 / fp32 per CPU-s |")
        print("|---" * (len(precisions) + 3 + ("bf16" in precisions)) + "|")
        for name, path in cases:
            r, c = bench(lwfm, calibrated(lwfm, path, tmp), precisions, args.batch, args.reps)
            row = f"| {name} | " + " | ".join(f"{r[p]:.0f}" for p in precisions)
            row += f" | {r['int8'] / r['fp32']:.2f} |"
            if "bf16" in r:
                row += f" {r['int8'] / r['bf16']:.2f} |"
            row += f" {c['int8'] / c['fp32']:.2f} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
