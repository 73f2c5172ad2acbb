#!/usr/bin/python3
"""SciPy's linear_sum_assignment at the SPM sizes, for comparison with
bench/bench_assign.c (the C solver without any Python in the loop).

    /usr/bin/python3 bench/bench_assign.py [--seconds 0.5]
    LWFM_LIBRARY=build/liblwfm.so /usr/bin/python3 bench/bench_assign.py

Same inputs as the C benchmark (a pool of 256 distinct matrices per size,
cycled through): uniform costs in [0, 1) and 1 - cosine similarity of random
64-d vectors. Prints the median over 5 runs of microseconds per call. These
numbers INCLUDE the Python per-call overhead (argument checking, the call,
building the result arrays; about a microsecond or two), so they are an upper
bound on SciPy's own solver time. When LWFM_LIBRARY names a libLWFM build,
lwfm_linear_assignment() is timed through ctypes as well, which carries a
similar per-call overhead (plus its own scratch allocation), for a like-for-
like comparison.
"""

import argparse
import ctypes
import os
import statistics
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

POOL = 256
SIZES = (9, 25, 49, 100, 200)


def matrices(n, kind, rng):
    if kind == "uniform":
        return [rng.random((n, n)) for _ in range(POOL)]
    out = []
    for _ in range(POOL):
        a = rng.random((n, 64)) - 0.5
        b = rng.random((n, 64)) - 0.5
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        out.append(np.ascontiguousarray(1.0 - a @ b.T))
    return out


def time_calls(fn, mats, seconds):
    iters = 16
    while True:  # calibrate to about a tenth of the budget
        t0 = time.perf_counter()
        for k in range(iters):
            fn(mats[k % POOL])
        if time.perf_counter() - t0 > seconds / 10 or iters > 1 << 22:
            break
        iters *= 2
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for k in range(iters):
            fn(mats[k % POOL])
        runs.append((time.perf_counter() - t0) / iters)
    return statistics.median(runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="budget per case")
    args = ap.parse_args()

    lwfm = None
    path = os.environ.get("LWFM_LIBRARY")
    if path:
        lib = ctypes.CDLL(path)
        lwfm = lib.lwfm_linear_assignment
        lwfm.restype = ctypes.c_int
        lwfm.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]

    rng = np.random.default_rng(0)
    head = "%-6s %18s %18s" % ("n", "scipy uniform", "scipy cosine")
    if lwfm:
        head += " %18s %18s" % ("lwfm uniform", "lwfm cosine")
    print(head + "   (us per call, Python call overhead included)")
    for n in SIZES:
        cols = []
        out = np.empty(n, dtype=np.int64)
        total = ctypes.c_double()
        out_p, total_p = out.ctypes.data, ctypes.addressof(total)

        def call_lwfm(c):
            st = lwfm(c.ctypes.data, n, out_p, total_p)
            assert st == 0

        sets = {kind: matrices(n, kind, rng) for kind in ("uniform", "cosine")}
        for kind in ("uniform", "cosine"):
            cols.append(time_calls(linear_sum_assignment, sets[kind], args.seconds))
        if lwfm:
            for kind in ("uniform", "cosine"):
                cols.append(time_calls(call_lwfm, sets[kind], args.seconds))
        print("%-6d" % n + "".join(" %15.3f us" % (1e6 * t) for t in cols), flush=True)


if __name__ == "__main__":
    main()
