#!/usr/bin/python3
"""Galleries of thousands of classes: a query's cost and the prepared set's memory.

    PYTHONPATH=bindings/python LWFM_LIBRARY=build/liblwfm.so \\
        /usr/bin/python3 bench/bench_gallery.py [--classes 100,1000,10000] [--shots 1,5] \\
        [--only lwfm-spm-omniglot,...] [--batch 8] [--threads 2] [--max-gb 4] [--json FILE]

For each model (method and feature shape) below, each number of classes and
shots, a fresh subprocess prepares a support set from random feature maps
(lwfm_support_prepare_features) and scores batches of random query feature
maps against it (lwfm_support_score_features):

  ms/query   median wall time of one batch of --batch queries, divided by --batch
  cpu ms     the same in CPU time of the process (all its threads): less
             sensitive than wall time to other processes taking the cores
  ratio      cpu ms/query against the same model's 100-class figure at that shot
             (less sensitive to a shared machine's load than the times)
  set MB     resident memory the prepared set added (RSS after prepare minus
             before; the input features were already resident), next to the
             sum of its buffers' sizes where the method's layout is known
  score MB   resident memory the first scoring call added and kept (the
             model's reused per-call scratch) and its peak (VmHWM) growth

Models: the bundled models' feature shapes (models/omniglot.npz: LWFM-SPM,
Conv-64F taps [2, 3], C = 128, 3 x 3; models/omniglot-rcn.npz: RCN, C = 64,
5 x 5), the test models of build/tests (lwfm_small.npz: LWFM-SPM ResNet-18
taps [7, 8], C = 1024, 3 x 3, the natural-image shape; dn4_random.npz: DN4,
C = 64) and MML converted from the authors' checkpoint in ../shared (C = 64).
DN4 and MML take any map size: they get 7 x 7 maps (Conv-64F on 28 x 28
Omniglot-sized images), since 21 x 21 maps of 84 x 84 images at 10,000
classes would need tens of GB. A configuration whose input and prepared set
would exceed --max-gb is skipped and says so. Nothing here asserts a time.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
if not SHARED.is_dir():
    SHARED = Path("/work/shared")
MML_CKPT = SHARED / "checkpoints" / "mml" / "mml_wass_conv64f_tieredimagenet_5way5shot.pth.tar"

# name -> (weight file or None for MML (converted), input size for the feature shape)
MODELS = {
    "lwfm-spm-omniglot": (ROOT / "models" / "omniglot.npz", 28),
    "lwfm-spm-resnet18": (ROOT / "build" / "tests" / "lwfm_small.npz", 84),
    "dn4": (ROOT / "build" / "tests" / "dn4_random.npz", 28),
    "mml": (None, 28),
    "rcn-omniglot": (ROOT / "models" / "omniglot-rcn.npz", 28),
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", default="100,1000,10000")
    ap.add_argument("--shots", default="1,5")
    ap.add_argument("--only", default=",".join(MODELS))
    ap.add_argument("--batch", type=int, default=8, help="queries per scoring call")
    ap.add_argument("--reps", type=int, default=4,
                    help="calls at most (and 2 s, but at least 2); the first, which grows "
                         "the scratch, is not timed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-gb", type=float, default=4.0,
                    help="skip configurations whose features + prepared set exceed this")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def hwm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_hwm():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def buffer_bytes(method, n, C, P):
    """The prepared set's buffers as the library lays them out (method.h's
    lwfm__prep_mem buffers), or None when not modelled here."""
    if method == "lwfm-spm":   # X, U, G (n P C floats each) and gn (n P L floats), L = 2
        return n * P * C * 4 * 3 + n * P * 2 * 4
    if method == "dn4":        # U
        return n * P * C * 4
    if method == "mml":        # U, V (floats), mu (C doubles), scatter (C x C doubles)
        return n * P * C * 4 * 2 + n * C * 8 + n * C * C * 8
    return None


def child(spec):
    import numpy as np
    import lwfm
    rng = np.random.default_rng(spec["classes"] * 10 + spec["shots"])
    res = dict(spec)
    with lwfm.Model(spec["path"]) as m:
        C, fh, fw = m.feature_shape(spec["size"], spec["size"])
        n = spec["classes"] * spec["shots"]
        res.update(C=C, fh=fh, fw=fw, method=m.config["method"])
        feats = np.abs(rng.standard_normal((n, C, fh, fw), dtype=np.float32))
        labels = np.repeat(np.arange(spec["classes"], dtype=np.int32), spec["shots"])
        queries = np.abs(rng.standard_normal((spec["batch"], C, fh, fw), dtype=np.float32))
        r0 = rss_bytes()
        t0 = time.perf_counter()
        s = m.prepare_support(feats, labels, features=True)
        res["prepare_s"] = time.perf_counter() - t0
        r1 = rss_bytes()
        res["set_bytes"] = r1 - r0
        res["buffer_bytes"] = buffer_bytes(res["method"], n, C, fh * fw)
        del feats
        reset_hwm()
        h0 = hwm_bytes()
        r2 = rss_bytes()
        t0 = time.perf_counter()
        s.score(queries)
        times = [time.perf_counter() - t0]
        cpu = []
        res["scratch_bytes"] = rss_bytes() - r2
        res["scratch_peak_bytes"] = hwm_bytes() - h0
        spent = times[0]
        while len(times) < 2 or (len(times) < spec["reps"] and spent < 2.0):
            t0, c0 = time.perf_counter(), time.process_time()
            s.score(queries)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            spent += times[-1]
        if len(times) > 1:
            times = times[1:]   # the first call also grew the arena
        res["ms_per_query"] = statistics.median(times) * 1e3 / spec["batch"]
        res["cpu_ms_per_query"] = statistics.median(cpu) * 1e3 / spec["batch"] if cpu else None
        res["calls"] = len(times)
        s.close()
    print(json.dumps(res))


def mml_model(tmp):
    out = Path(tmp) / "mml.npz"
    subprocess.run([sys.executable, "-m", "lwfm.convert", "--method", "mml", str(MML_CKPT),
                    str(out)], check=True, stdout=subprocess.DEVNULL)
    return out


def estimate_gb(name, classes, shots, C, P):
    n = classes * shots
    per = {"lwfm-spm": 4, "dn4": 2, "mml": 3, "rcn": 4}
    m = name.split("-omniglot")[0].split("-resnet18")[0]
    return n * P * C * 4 * per.get(m, 4) / 1e9 + (n * C * C * 8 / 1e9 if m == "mml" else 0)


def main():
    args = parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    import lwfm
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    classes = [int(x) for x in args.classes.split(",")]
    shots = [int(x) for x in args.shots.split(",")]
    rows = []
    with open("/proc/loadavg") as f:
        print("load before:", f.read().strip())
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            path, size = MODELS[name]
            path = mml_model(tmp) if path is None else path
            with lwfm.Model(path) as m:
                C, fh, fw = m.feature_shape(size, size)
            for shot in shots:
                for k in classes:
                    spec = dict(name=name, path=str(path), size=size, classes=k, shots=shot,
                                batch=args.batch, reps=args.reps)
                    if estimate_gb(name, k, shot, C, fh * fw) > args.max_gb:
                        rows.append(dict(spec, skipped=f"over --max-gb {args.max_gb}"))
                        print(f"{name} {k} x {shot}: skipped (memory)", file=sys.stderr)
                        continue
                    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                                         env=env, capture_output=True, text=True)
                    if out.returncode:
                        rows.append(dict(spec, skipped="failed: " + out.stderr[-300:]))
                        print(out.stderr, file=sys.stderr)
                        continue
                    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                    r = rows[-1]
                    print(f"{name} {k} x {shot}: {r['ms_per_query']:.2f} ms/query, "
                          f"set {r['set_bytes'] / 1e6:.1f} MB", file=sys.stderr)
    with open("/proc/loadavg") as f:
        print("load after:", f.read().strip())
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def print_table(rows):
    def cost(r):   # CPU time where measured (less load-sensitive), else wall time
        return r.get("cpu_ms_per_query") or r["ms_per_query"]

    base = {(r["name"], r["shots"]): cost(r) for r in rows
            if "skipped" not in r and r["classes"] == 100}
    print()
    print("| model | C x fh x fw | classes | shots | ms/query | cpu ms/query | ratio vs 100 "
          "| set MB (RSS) | buffers MB | score scratch MB (kept / peak) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['name']} | | {r['classes']} | {r['shots']} | skipped: "
                  f"{r['skipped'][:60]} | | | | | |")
            continue
        b = base.get((r["name"], r["shots"]))
        ratio = f"{cost(r) / b:.1f}" if b else ""
        cpu = f"{r['cpu_ms_per_query']:.2f}" if r.get("cpu_ms_per_query") else ""
        buf = f"{r['buffer_bytes'] / 1e6:.1f}" if r.get("buffer_bytes") else ""
        print(f"| {r['name']} | {r['C']} x {r['fh']} x {r['fw']} | {r['classes']} | "
              f"{r['shots']} | {r['ms_per_query']:.2f} | {cpu} | {ratio} | "
              f"{r['set_bytes'] / 1e6:.1f} | {buf} | {r['scratch_bytes'] / 1e6:.1f} / "
              f"{r['scratch_peak_bytes'] / 1e6:.1f} |")


if __name__ == "__main__":
    main()
