#!/usr/bin/python3
"""Where an episode's time goes: backbone against everything after it.

    PYTHONPATH=bindings/python LWFM_LIBRARY=build/liblwfm.so \
        /usr/bin/python3 bench/bench_episode.py [--threads 2] [--reps 7]

Default LWFM-SPM configuration (ResNet-18 taps [7, 8], fs 3, SPM with the
learnable matcher, top_k 1), random weights. For 5-way 1-shot and 5-way
5-shot with 75 queries it times, in one run and alternating rep by rep:

  lwfm backbone     lwfm.Model.features on all support + query images
  lwfm metric       lwfm.Model.score_features on those features (LWE + SPM,
                    everything after the backbone)
  ref metric        the PyTorch reference formulation (matcher MLP per pair,
                    one assignment solve per pair with SciPy), float32
  ref metric fast   the reference's vectorised form using the spec's facts

and prints the metric's share of the backbone time (targets: <= 2% for
1-shot, <= 5% for 5-shot) and the speed-up over the reference metric.

It also times the dense float32 work that no implementation of the spec
can avoid, with oneDNN's own GEMM (dnnl_sgemm, same threads) on the same
shapes: g_l on every position of every image (two products per layer)
and the layer correlations of all (support, query) position pairs. Its
share of the backbone ("GEMM floor") is a lower bound for the metric's
share on this machine; "at peak" divides the same FLOPs by oneDNN's best
rate on a large square GEMM (`--peak-n`).
"""

import argparse
import ctypes
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def gemm_floor(np, n_images, n_support, P, dims, reps, peak_n):
    """(median seconds of the unavoidable GEMMs, their GFLOP, best GFLOP/s
    of an peak_n^3 GEMM), all with oneDNN's dnnl_sgemm."""
    dnnl = ctypes.CDLL("libdnnl.so.2")
    i64, f32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    dnnl.dnnl_sgemm.argtypes = [ctypes.c_char, ctypes.c_char, i64, i64, i64, f32, ptr, i64,
                                ptr, i64, f32, ptr, i64]
    rng = np.random.default_rng(1)
    rows, rows_s = n_images * P, n_support * P

    def sgemm(ta, tb, m, n, k, a, lda, b, ldb, c, ldc):
        st = dnnl.dnnl_sgemm(ta, tb, m, n, k, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb, 0.0,
                             c.ctypes.data, ldc)
        if st != 0:
            raise RuntimeError(f"dnnl_sgemm failed ({st})")

    work = []  # (args, flops)
    for d in dims:
        x = rng.standard_normal((rows, d), dtype=np.float32)
        w1 = rng.standard_normal((d, d // 2), dtype=np.float32)
        w2 = rng.standard_normal((d // 2, d), dtype=np.float32)
        h = np.empty((rows, d // 2), np.float32)
        g = np.empty((rows, d), np.float32)
        r = np.empty((rows - rows_s, rows_s), np.float32)
        work += [((b"N", b"N", rows, d // 2, d, x, d, w1, d // 2, h, d // 2), rows * d * d),
                 ((b"N", b"N", rows, d, d // 2, h, d // 2, w2, d, g, d), rows * d * d),
                 ((b"N", b"T", rows - rows_s, rows_s, d, x[rows_s:], d, x, d, r, rows_s),
                  2 * (rows - rows_s) * rows_s * d)]
    times = []
    for rep in range(reps + 1):
        t0 = time.perf_counter()
        for args_, _ in work:
            sgemm(*args_)
        if rep:
            times.append(time.perf_counter() - t0)
    a = rng.standard_normal((peak_n, peak_n), dtype=np.float32)
    c = np.empty_like(a)
    best = 0.0
    for rep in range(4):
        t0 = time.perf_counter()
        sgemm(b"N", b"N", peak_n, peak_n, peak_n, a, peak_n, a, peak_n, c, peak_n)
        best = max(best, 2.0 * peak_n ** 3 / (time.perf_counter() - t0) / 1e9)
    return statistics.median(times), sum(f for _, f in work) / 1e9, best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--queries", type=int, default=75)
    ap.add_argument("--library", default=os.environ.get("LWFM_LIBRARY",
                                                        str(ROOT / "build" / "liblwfm.so")))
    ap.add_argument("--peak-n", type=int, default=2048,
                    help="size of the square GEMM that gives oneDNN's best rate")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the (slow) reference metric timings")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["LWFM_LIBRARY"] = args.library
    for p in (ROOT / "bindings" / "python",):
        sys.path.insert(0, str(p))
    import numpy as np
    import torch

    import lwfm
    import lwfm_ref
    from lwfm.weights import save_weights

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = lwfm_ref.make_config()
    model = lwfm_ref.LWFMSPM(cfg).eval()
    lwfm_ref.randomize_bn(model, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.npz")
        save_weights(path, {k: v.detach().numpy() for k, v in model.state_dict().items()}, cfg)
        lib = lwfm.Model(path)

    print(f"libLWFM {lwfm.library_version()}, {args.threads} threads, default LWFM-SPM "
          f"(ResNet-18 [7, 8], fs 3, SPM), 5-way, {args.queries} queries, "
          f"median of {args.reps} reps, times in ms")
    print(f"{'episode':<8} {'backbone':>9} {'metric':>8} {'share':>7} {'GEMM floor':>11} "
          f"{'at peak':>8} {'ref metric':>11} {'ref fast':>9} {'speed-up':>9} {'max rel err':>12}")
    P = cfg["feature_size"] ** 2
    sd = model.state_dict()
    layer_dims = [sd[f"matchers.{i}.linear.0.weight"].shape[1]
                  for i in range(len(cfg["hyperpixel_ids"]))]
    rng = np.random.default_rng(0)
    for shot in (1, 5):
        way = 5
        n_s = way * shot
        labels = np.repeat(np.arange(way), shot).astype(np.int32)
        images = rng.standard_normal((n_s + args.queries, 3, 84, 84)).astype(np.float32)
        feats = lib.features(images)
        fs_, fq_ = feats[:n_s], feats[n_s:]
        ts, tq = torch.from_numpy(fs_), torch.from_numpy(fq_)
        got = lib.score_features(fs_, labels, fq_)

        t_bb, t_me, t_ref, t_fast = [], [], [], []
        for rep in range(args.reps + 1):
            t0 = time.perf_counter()
            lib.features(images)
            t1 = time.perf_counter()
            lib.score_features(fs_, labels, fq_)
            t2 = time.perf_counter()
            if rep > 0:  # the first round warms caches and primitives
                t_bb.append(t1 - t0)
                t_me.append(t2 - t1)
        expect = None
        if not args.no_reference:
            with torch.no_grad():
                for rep in range(max(1, args.reps // 3)):
                    t0 = time.perf_counter()
                    expect = model.episode_logits(ts, torch.from_numpy(labels), tq).numpy()
                    t1 = time.perf_counter()
                    model.episode_logits_fast(ts, torch.from_numpy(labels), tq)
                    t2 = time.perf_counter()
                    t_ref.append(t1 - t0)
                    t_fast.append(t2 - t1)
        bb, me = statistics.median(t_bb), statistics.median(t_me)
        floor, gflop, peak = gemm_floor(np, n_s + args.queries, n_s, P, layer_dims, args.reps,
                                        args.peak_n)
        floor_txt = f"{100 * floor / bb:10.2f}% {100 * gflop / peak / bb:7.2f}%"
        if expect is not None:
            ref, fast = statistics.median(t_ref), statistics.median(t_fast)
            err = float(np.abs(got - expect).max() / np.abs(expect).max())
            tail = f"{ref * 1e3:11.1f} {fast * 1e3:9.1f} {ref / me:8.0f}x {err:12.2e}"
        else:
            tail = f"{'-':>11} {'-':>9} {'-':>9} {'-':>12}"
        print(f"{f'{shot}-shot':<8} {bb * 1e3:9.1f} {me * 1e3:8.2f} {100 * me / bb:6.2f}% "
              f"{floor_txt} {tail}")
        print(f"{'':<8} GEMM floor {floor * 1e3:.2f} ms for {gflop:.3f} GFLOP "
              f"({gflop / floor:.0f} GFLOP/s); oneDNN peak {peak:.0f} GFLOP/s "
              f"({args.peak_n}^3)")
    lib.close()


if __name__ == "__main__":
    main()
