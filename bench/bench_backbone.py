#!/usr/bin/python3
"""Backbone throughput of libLWFM against the PyTorch reference, same run.

    make bench                       # or:
    PYTHONPATH=bindings/python LWFM_LIBRARY=build/liblwfm.so \
        /usr/bin/python3 bench/bench_backbone.py [--threads 2] [--reps 15]

For each backbone it builds the reference model (bindings/python/lwfm_ref) with random
weights and BatchNorm statistics, exports it to a weight file, loads that in
libLWFM, checks the two agree, then times the episode batch (default: 80
images of 84x84, a 5-way 1-shot 15-query episode) alternating the two
implementations rep by rep so that machine noise hits both alike. It prints
images/s, achieved GFLOP/s (2 x multiply-accumulates of the convolutions
that run) and the ratio libLWFM / PyTorch. Timings are medians.
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
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--batch", type=int, default=80)
    ap.add_argument("--size", type=int, default=84)
    ap.add_argument("--library", default=os.environ.get("LWFM_LIBRARY",
                                                        str(ROOT / "build" / "liblwfm.so")))
    ap.add_argument("--only", choices=["resnet18", "conv64f"], default=None)
    return ap.parse_args()


def main():
    args = parse_args()
    # Thread counts must be fixed before libgomp starts (torch and liblwfm
    # share the one GNU OpenMP runtime).
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["LWFM_LIBRARY"] = args.library
    for p in (ROOT / "bindings" / "python",):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    import numpy as np
    import torch

    import lwfm
    import lwfm_ref
    from lwfm.weights import save_weights

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cases = [
        ("resnet18", "ResNet-18 taps [7, 8], fs 3 (LWFM-SPM default)",
         lwfm_ref.make_config()),
        ("conv64f", "Conv-64F, native 21x21 (DN4)", dict(lwfm_ref.DN4_CONFIG)),
    ]
    print(f"libLWFM {lwfm.library_version()} vs PyTorch {torch.__version__}, "
          f"{args.threads} threads, batch {args.batch} x 3 x {args.size} x {args.size}, "
          f"{args.reps} reps (median)")
    print(f"{'backbone':<10} {'torch img/s':>12} {'lwfm img/s':>11} {'ratio':>7} "
          f"{'torch GF/s':>11} {'lwfm GF/s':>10} {'max rel err':>12}")
    peak = matmul_peak(Path(args.library).parent, args.threads)
    x = torch.randn(args.batch, 3, args.size, args.size)
    xn = x.numpy()
    for name, label, cfg in cases:
        if args.only and name != args.only:
            continue
        if cfg["method"] == "lwfm-spm":
            model = lwfm_ref.LWFMSPM(cfg).eval()
            ref = model.feature_extractor
        else:  # a peer method's file holds the bare backbone
            model = ref = lwfm_ref.build_backbone(cfg).eval()
        lwfm_ref.randomize_bn(model, seed=1)
        macs = count_macs(ref, args.size, torch)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.npz")
            sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
            save_weights(path, sd, cfg)
            lib_model = lwfm.Model(path)
        with torch.no_grad():
            expect = ref(x).numpy()
        got = lib_model.features(xn)
        err = float(np.abs(got - expect).max() / np.abs(expect).max())

        t_ref, t_lib = [], []
        with torch.no_grad():
            for _ in range(2):  # warm-up: primitive creation, allocator
                ref(x)
                lib_model.features(xn)
            for _ in range(args.reps):
                t0 = time.perf_counter()
                ref(x)
                t1 = time.perf_counter()
                lib_model.features(xn)
                t2 = time.perf_counter()
                t_ref.append(t1 - t0)
                t_lib.append(t2 - t1)
        lib_model.close()
        tr, tl = statistics.median(t_ref), statistics.median(t_lib)
        gflop = 2.0 * macs * args.batch / 1e9
        print(f"{name:<10} {args.batch / tr:12.1f} {args.batch / tl:11.1f} {tr / tl:7.2f} "
              f"{gflop / tr:11.1f} {gflop / tl:10.1f} {err:12.2e}   {label}")
        if peak:
            print(f"{'':<10} share of the oneDNN fp32 matmul peak ({peak:.0f} GFLOP/s): "
                  f"PyTorch {100 * gflop / tr / peak:.0f}%, libLWFM {100 * gflop / tl / peak:.0f}%")


def matmul_peak(build_dir, threads):
    """GFLOP/s of a 2048^3 oneDNN fp32 matmul (bench_peak, built with the
    library), or None when the binary is not there."""
    import subprocess
    exe = build_dir / "bench_peak"
    if not exe.exists():
        return None
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([str(exe), "2048", "10"], capture_output=True, text=True, env=env)
    return float(out.stdout) if out.returncode == 0 else None


def count_macs(backbone, size, torch):
    """Multiply-accumulates of every convolution run for one image."""
    total = [0]

    def hook(mod, inp, out):
        kh, kw = mod.kernel_size
        total[0] += out.numel() * (mod.in_channels // mod.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in backbone.modules()
               if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        backbone(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return total[0]


if __name__ == "__main__":
    main()
