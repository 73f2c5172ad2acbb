#!/usr/bin/python3
"""libLWFM's backbone against ONNX Runtime (the CPU engine users deploy) and
PyTorch, in one run, on the same threads, alternating rep by rep.

    npm install --prefix bench/ort --ignore-scripts onnxruntime-node   # once
    PYTHONPATH=bindings/python LWFM_LIBRARY=build/liblwfm.so \\
        /usr/bin/python3 bench/bench_ort.py [--reps 9] [--only resnet18] [--json FILE]

For each backbone (ResNet-18 taps [7, 8] fs 3; Conv-64F 21 x 21; ResNet-12 taps [2, 3] fs 5) the
reference encoder (bindings/python/lwfm_ref, random weights and BatchNorm
statistics) is exported to ONNX (opset 13, batch 80) and written as a libLWFM
weight file; the three engines' features are checked against each other, then
80 images of 3 x 84 x 84 (a 5-way 1-shot, 15-query episode) are timed in
three scenarios:

  quiet-1    1 thread each
  quiet-2    2 threads each
  busy-2     2 threads each while another process spins on one core (pinned
             to the last CPU): the load a vision pipeline puts beside us

and the ratios the performance issue asks for are printed: libLWFM fp32 /
ONNX Runtime fp32 per scenario, and busy-2 libLWFM against its own quiet-1.
Times are medians of wall-clock seconds; nothing here asserts a time. int8
is timed on a copy of the weight file calibrated as `lwfm.quantize --statistic
image-max` does it (on random images: the weights are random, accuracy is
not measured here, and the ranges do not change the speed); bf16 where the
CPU has it (AVX-512 with BF16), otherwise reported as refused.
"""

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bindings" / "python"))
sys.path.insert(0, str(ROOT / "bench"))
import ort_anchor  # noqa: E402

BATCH, SIZE = 80, 84
# The backbones timed: ResNet-18 as LWFM-SPM uses it (taps [7, 8], fs 3),
# Conv-64F as DN4 does (21 x 21), ResNet-12 with LWFM-SPM taps [2, 3], fs 5
# (its 10 x 10 and 5 x 5 maps: ONNX export needs bins that divide them).
CONFIGS = {
    "resnet18": lambda ref: ref.make_config(),
    "conv64f": lambda ref: dict(ref.DN4_CONFIG),
    "resnet12": lambda ref: ref.make_config(backbone="resnet12", hyperpixel_ids=[2, 3],
                                            feature_size=5),
}
SCENARIOS = (("quiet-1", 1, False), ("quiet-2", 2, False), ("busy-2", 2, True))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--only", choices=list(CONFIGS), default=None)
    ap.add_argument("--scenarios", default=",".join(s[0] for s in SCENARIOS))
    ap.add_argument("--json", default=None, help="also write the figures here")
    return ap.parse_args(argv)


def spin():
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    while True:
        pass


class Spinner:
    """Another process burning one core for the duration of a `with`."""

    def __enter__(self):
        self.p = multiprocessing.get_context("fork").Process(target=spin, daemon=True)
        self.p.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.p.terminate()
        self.p.join()


def load_avg():
    return os.getloadavg()[0]


def build_case(name, tmp, torch, lwfm_ref):
    """(reference encoder, weight file, onnx file) with random weights."""
    from bench_all import export_model
    cfg = CONFIGS[name](lwfm_ref)
    npz, model = export_model(tmp, cfg, torch, f"{name}.npz")
    ref = model.feature_extractor if cfg["method"] == "lwfm-spm" else model
    onnx = Path(tmp) / f"{name}.onnx"
    ort_anchor.export(torch, ref, torch.zeros(BATCH, 3, SIZE, SIZE), onnx)
    return ref, Path(npz), onnx


def calibrate_int8(lwfm, npz):
    """A copy of `npz` with int8 ranges (as `lwfm.quantize --statistic
    image-max` computes them) measured on 32 random images: the weights are
    random too, so this times int8, it does not rate its accuracy
    (docs/benchmarks.md#int8 does, on trained models)."""
    import numpy as np
    from lwfm.quantize import quant_members, write_with_members
    x = np.random.default_rng(1).standard_normal((32, 3, SIZE, SIZE)).astype(np.float32)
    with lwfm.Model(str(npz)) as m:
        members = quant_members(m.convolution_names(), m.convolution_ranges(x), 100.0)
    out = npz.with_name(npz.stem + "-int8.npz")
    write_with_members(str(npz), str(out), members)
    return out


def rel_err(got, expect):
    import numpy as np
    return float(np.abs(got - expect).max() / np.abs(expect).max())


def time_scenario(torch, lwfm, ref, npz, onnx, x, threads, reps):
    """{engine: median seconds} and the engines' errors against PyTorch."""
    torch.set_num_threads(threads)   # also the calling thread's OpenMP count
    engines = {"PyTorch": lambda: ref(torch.from_numpy(x))}
    models = [lwfm.Model(str(npz))]  # fresh: oneDNN fixes threads at creation
    engines["libLWFM fp32"] = lambda: models[0].features(x)
    int8 = lwfm.Model(str(npz.with_name(npz.stem + "-int8.npz")), precision="int8")
    models.append(int8)
    engines["libLWFM int8"] = lambda: int8.features(x)
    if bf16_available(lwfm, npz):
        models.append(lwfm.Model(str(npz), precision="bf16"))
        engines["libLWFM bf16"] = lambda: models[-1].features(x)
    if threads > 1:  # before/after: threads inside each primitive, as up to 0.1
        os.environ["LWFM_IMAGE_PARALLEL"] = "0"   # read when a context is made
        layer = lwfm.Model(str(npz))
        layer.features(x[:8])
        os.environ.pop("LWFM_IMAGE_PARALLEL")
        models.append(layer)
        engines["libLWFM fp32 layer-parallel"] = lambda: layer.features(x)
    ort = ort_anchor.OrtWorker(onnx, x, threads)
    try:
        with torch.no_grad():
            expect = ref(torch.from_numpy(x)).numpy()
        errs = {"libLWFM fp32": rel_err(models[0].features(x), expect),
                "ONNX Runtime": rel_err(ort.output(expect.shape), expect)}
        secs = {k: [] for k in engines}
        secs["ONNX Runtime"] = []
        with torch.no_grad():
            for rep in range(reps + 1):   # round 0: warm-up, dropped
                for k, call in engines.items():
                    t0 = time.perf_counter()
                    call()
                    if rep:
                        secs[k].append(time.perf_counter() - t0)
                t = ort.run()
                if rep:
                    secs["ONNX Runtime"].append(t)
        return {k: statistics.median(v) for k, v in secs.items()}, errs
    finally:
        ort.close()
        for m in models:
            m.close()


def bf16_available(lwfm, npz):
    try:
        lwfm.Model(str(npz), precision="bf16").close()
        return True
    except lwfm.Error:
        return False


def main(argv=None):
    args = parse_args(argv)
    if not ort_anchor.available():
        print(ort_anchor.INSTALL_HINT)
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    import numpy as np
    import torch
    import lwfm
    import lwfm_ref
    wanted = args.scenarios.split(",")
    x = np.random.default_rng(0).standard_normal((BATCH, 3, SIZE, SIZE)).astype(np.float32)
    print(f"libLWFM {lwfm.library_version()}, ONNX Runtime {ort_anchor.version()} (CPU), "
          f"PyTorch {torch.__version__}; {BATCH} images 3 x {SIZE} x {SIZE}, "
          f"median of {args.reps} alternating reps; CPUs {len(os.sched_getaffinity(0))}, "
          f"load {load_avg():.2f} at start")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in CONFIGS:
            if args.only and name != args.only:
                continue
            ref, npz, onnx = build_case(name, tmp, torch, lwfm_ref)
            calibrate_int8(lwfm, npz)
            for scen, threads, busy in SCENARIOS:
                if scen not in wanted:
                    continue
                if busy:
                    with Spinner():
                        med, errs = time_scenario(torch, lwfm, ref, npz, onnx, x, threads, args.reps)
                else:
                    med, errs = time_scenario(torch, lwfm, ref, npz, onnx, x, threads, args.reps)
                results.append(dict(backbone=name, scenario=scen, threads=threads,
                                    img_s={k: BATCH / v for k, v in med.items()},
                                    rel_err=errs, load=load_avg()))
                print_row(results[-1])
    print_summary(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def print_row(r):
    s = r["img_s"]
    cells = " ".join(f"{k} {v:7.1f}" for k, v in s.items())
    ratio = s["libLWFM fp32"] / s["ONNX Runtime"]
    print(f"{r['backbone']:<9} {r['scenario']:<8} img/s: {cells}  "
          f"fp32/ORT {ratio:.2f}x  (errors vs PyTorch: "
          + ", ".join(f"{k} {v:.1e}" for k, v in r["rel_err"].items())
          + f"; load {r['load']:.2f})", flush=True)


def print_summary(results):
    print("\n| backbone | scenario | ONNX Runtime img/s | libLWFM fp32 img/s | fp32 / ORT "
          "| libLWFM int8 img/s | int8 / ORT "
          "| fp32 layer-parallel (0.1) img/s | libLWFM bf16 img/s | PyTorch img/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    quiet1 = {}
    for r in results:
        s = r["img_s"]
        if r["scenario"] == "quiet-1":
            quiet1[r["backbone"]] = s["libLWFM fp32"]
        bf = s.get("libLWFM bf16")
        print(f"| {r['backbone']} | {r['scenario']} | {s['ONNX Runtime']:.1f} | "
              f"{s['libLWFM fp32']:.1f} | **{s['libLWFM fp32'] / s['ONNX Runtime']:.2f}x** | "
              f"{s['libLWFM int8']:.1f} | {s['libLWFM int8'] / s['ONNX Runtime']:.2f}x | "
              f"{s.get('libLWFM fp32 layer-parallel', s['libLWFM fp32']):.1f} | "
              f"{'%.1f' % bf if bf else 'refused (no AVX-512 BF16)'} | {s['PyTorch']:.1f} |")
    for r in results:
        if r["scenario"] == "busy-2" and r["backbone"] in quiet1:
            print(f"\n{r['backbone']}: busy-2 libLWFM fp32 / own quiet-1 = "
                  f"{r['img_s']['libLWFM fp32'] / quiet1[r['backbone']]:.2f}x "
                  f"(target >= 0.8x)")


if __name__ == "__main__":
    sys.exit(main())
