#!/usr/bin/python3
"""libLWFM against the PyTorch reference: every performance figure of issue 6 in one run.

    make bench                                   # the whole set
    PYTHONPATH=bindings/python LWFM_LIBRARY=build/liblwfm.so \\
        /usr/bin/python3 bench/bench_all.py [--quick] [--threads 2] [--reps 5] \\
        [--only backbone,stream,memory,scaling] [--json FILE] [--plot docs/images/x.png]

Sections (default LWFM-SPM configuration, ResNet-18 taps [7, 8], fs 3, SPM,
random weights with randomised BatchNorm statistics; inputs are random):

  backbone  images/s of a 5-way 1-shot 15-query episode's 80 images, PyTorch
            fp32 vs libLWFM fp32 and bf16, alternating rep by rep, with the
            features' relative error against the reference (ResNet-18 and
            Conv-64F); acceptance: fp32 >= 1.1x, bf16 >= 2x.
  stream    a prepared 5-way 5-shot support set, then query batches of 1, 16
            and 75 images: images/s of libLWFM (fp32, bf16) against the
            reference encoding the same queries (its backbone + its vectorised
            metric with the support features computed once).
  memory    peak resident memory (VmHWM after resetting it through
            /proc/self/clear_refs, each in a fresh subprocess) of loading the
            model and of one 5-way 5-shot episode; the backbone weights the
            library holds against the file's tensors; RSS over 30 repeated
            episodes (workspace reuse).
  scaling   time against way (5, 20, 50), shot (1, 5, 10), queries (1..1000),
            feature_size (3, 5, 7) and threads (1, 2), split into backbone /
            LWE / matcher / solver by the library's opt-in profiler
            (LWFM_PROFILE=1, one log line per call); the metric's time per
            (query, support) pair and its growth exponent against the
            previous point (<= 1: no worse than linear).

bf16 runs only where the library runs it (CPUs with AVX-512): elsewhere each
section says so and shows "—" in its bf16 columns.

Times are medians; the machine may be shared, so read the ratios measured in
the same run. Nothing here asserts a time.
"""

import argparse
import ctypes
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("backbone", "stream", "memory", "scaling")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=None, help="timed reps (default 7; --quick 3)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer reps, smaller scaling grid (about a minute on 2 cores)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help="comma-separated sections: " + ", ".join(SECTIONS))
    ap.add_argument("--library", default=os.environ.get("LWFM_LIBRARY",
                                                        str(ROOT / "build" / "liblwfm.so")))
    ap.add_argument("--json", default=None, help="also write all figures to this JSON file")
    ap.add_argument("--plot", default=None,
                    help="draw time against episode size (scaling section) into this PNG")
    ap.add_argument("--mem-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.reps is None:
        a.reps = 3 if a.quick else 7
    a.only = [s for s in a.only.split(",") if s]
    for s in a.only:
        if s not in SECTIONS:
            ap.error(f"unknown section {s!r}")
    return a


def setup(args):
    # Thread counts must be fixed before libgomp starts (torch and liblwfm
    # share the one GNU OpenMP runtime).
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["LWFM_LIBRARY"] = args.library
    for p in (ROOT / "bindings" / "python",):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))


def export_model(tmp, cfg, torch, name="model.npz"):
    """Reference model with random weights -> weight file; (path, model)."""
    import lwfm_ref
    from lwfm.weights import save_weights
    torch.manual_seed(0)
    if cfg["method"] == "lwfm-spm":
        model = lwfm_ref.LWFMSPM(cfg).eval()
    else:
        model = lwfm_ref.build_backbone(cfg).eval()
    lwfm_ref.randomize_bn(model, seed=1)
    path = os.path.join(tmp, name)
    save_weights(path, {k: v.detach().numpy() for k, v in model.state_dict().items()}, cfg)
    return path, model


def med(v):
    return statistics.median(v) if v else float("nan")


def table(title, header, rows, note=None):
    """Print a markdown table (what docs/benchmarks.md keeps)."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    if note:
        print(f"\n{note}")
    sys.stdout.flush()


# ---------------------------------------------------------------------------
# Profiler lines through the log callback
# ---------------------------------------------------------------------------

_PROFILE_RE = re.compile(r"profile (\w+): (.*) ms threads (\d+)")


class LogCapture:
    """Installs a log callback on the library and keeps the messages."""

    def __init__(self, level=0):
        import lwfm
        lib = lwfm._library()
        self.CB = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
        self.lines = []
        self._cb = self.CB(lambda lv, msg, user: self.lines.append(msg.decode()))
        lib.lwfm_set_log_callback.argtypes = [self.CB, ctypes.c_void_p, ctypes.c_int]
        lib.lwfm_set_log_callback(self._cb, None, level)

    def take_profiles(self):
        """Parsed profile lines since the last call: [(call, {stage: ms})]."""
        out, keep = [], []
        for line in self.lines:
            m = _PROFILE_RE.match(line)
            if not m:
                keep.append(line)
                continue
            words = m.group(2).split()
            out.append((m.group(1), {words[i]: float(words[i + 1])
                                     for i in range(0, len(words), 2)}))
        self.lines = keep
        return out


# ---------------------------------------------------------------------------
# Backbone
# ---------------------------------------------------------------------------

def alternate(torch, clock, reps, **calls):
    """{name: [seconds]}: the calls run one after another, round after round,
    timed with `clock`; round 0 (primitive creation, buffer growth) is
    dropped."""
    out = {name: [] for name in calls}
    with torch.no_grad():
        for rep in range(reps + 1):
            for name, call in calls.items():
                t0 = clock()
                call()
                if rep:
                    out[name].append(clock() - t0)
    return out


def bf16_runs(lwfm, path):
    """Whether the library runs bf16 here (oneDNN 2.6 has bf16 convolutions
    only on AVX-512 CPUs); when not, says why and the bf16 figures are left
    out."""
    try:
        lwfm.Model(path, precision="bf16").close()
        return True
    except lwfm.Error as e:
        print(f"(bf16 left out: {e})")
        return False


def bench_backbone(args, np, torch, lwfm, lwfm_ref, tmp, results):
    cases = [("ResNet-18 [7, 8], fs 3", lwfm_ref.make_config()),
             ("Conv-64F 21 x 21 (DN4)", dict(lwfm_ref.DN4_CONFIG))]
    x = torch.randn(80, 3, 84, 84)
    xn = x.numpy()
    rows, out = [], []
    na = "—"
    for label, cfg in cases:
        path, model = export_model(tmp, cfg, torch, "bb.npz")
        ref = model.feature_extractor if cfg["method"] == "lwfm-spm" else model
        has16 = bf16_runs(lwfm, path)

        def load_and_calls():
            m = {"fp32": lwfm.Model(path)}
            if has16:
                m["bf16"] = lwfm.Model(path, precision="bf16")
            calls = {"ref": lambda: ref(x)}
            calls.update({p: (lambda mp=mp: mp.features(xn)) for p, mp in m.items()})
            return m, calls

        models, calls = load_and_calls()
        with torch.no_grad():
            expect = ref(x).numpy()
        scale = np.abs(expect).max()
        err = {p: float(np.abs(mp.features(xn) - expect).max() / scale)
               for p, mp in models.items()}
        t = alternate(torch, time.perf_counter, args.reps, **calls)
        # The same on one thread, timed in CPU seconds of the process: other
        # processes on a shared machine cannot inflate it (no waiting counted).
        # Fresh models: oneDNN fixes a primitive's thread count when it is
        # created, so contexts made on two threads would keep using two.
        for mp in models.values():
            mp.close()
        torch.set_num_threads(1)
        models, calls = load_and_calls()
        c = alternate(torch, time.process_time, max(2, args.reps // 2), **calls)
        torch.set_num_threads(args.threads)
        for mp in models.values():
            mp.close()
        tm = {k: med(v) for k, v in t.items()}
        cm = {k: med(v) for k, v in c.items()}
        tr, t32, cr, c32 = tm["ref"], tm["fp32"], cm["ref"], cm["fp32"]
        t16, c16 = tm.get("bf16"), cm.get("bf16")
        r32 = tr / t32
        r16 = tr / t16 if t16 else None
        rows.append([label, f"{80 / tr:.1f}", f"{80 / t32:.1f}",
                     f"{80 / t16:.1f}" if t16 else na, f"**{r32:.2f}x**",
                     f"**{r16:.2f}x**" if t16 else na, f"{t32 / t16:.2f}x" if t16 else na,
                     f"{cr / c32:.2f}x / " + (f"{cr / c16:.2f}x" if c16 else na),
                     f"{err['fp32']:.1e}", f"{err['bf16']:.1e}" if t16 else na])
        out.append(dict(backbone=label, torch_img_s=80 / tr, fp32_img_s=80 / t32,
                        bf16_img_s=80 / t16 if t16 else None, fp32_vs_torch=r32,
                        bf16_vs_torch=r16, cpu1_fp32_vs_torch=cr / c32,
                        cpu1_bf16_vs_torch=cr / c16 if c16 else None,
                        cpu1_s=dict(torch=cr, fp32=c32, bf16=c16), err_fp32=err["fp32"],
                        err_bf16=err.get("bf16")))
    table(f"Backbone: 80 images 3 x 84 x 84 (5-way 1-shot, 15 queries per class), "
          f"{args.threads} threads, median of {args.reps}",
          ["backbone", "PyTorch img/s", "fp32 img/s", "bf16 img/s", "fp32 / PyTorch",
           "bf16 / PyTorch", "bf16 / fp32", "1 thread, CPU time: fp32 / bf16 vs PyTorch",
           "fp32 rel. err", "bf16 rel. err"], rows,
          "Targets (ResNet-18 row): fp32 >= 1.1x, bf16 >= 2x PyTorch (wall clock, same threads). "
          "The CPU-time column repeats the comparison on one thread in process CPU seconds, "
          "which other processes on a busy machine cannot inflate. Relative error: "
          "max |lib - ref| / max |ref| of the features.")
    results["backbone"] = out


# ---------------------------------------------------------------------------
# Streaming queries
# ---------------------------------------------------------------------------

def bench_stream(args, np, torch, lwfm, lwfm_ref, tmp, results):
    cfg = lwfm_ref.make_config()
    path, model = export_model(tmp, cfg, torch, "stream.npz")
    rng = np.random.default_rng(3)
    support = rng.standard_normal((25, 3, 84, 84)).astype(np.float32)
    labels = np.repeat(np.arange(5), 5).astype(np.int32)
    queries = rng.standard_normal((75, 3, 84, 84)).astype(np.float32)
    tl = torch.from_numpy(labels).long()
    with torch.no_grad():
        fs_ref = model.features(torch.from_numpy(support))  # the reference's "prepared" side
    precisions = ("fp32", "bf16") if bf16_runs(lwfm, path) else ("fp32",)
    models = {p: lwfm.Model(path, precision=p) for p in precisions}
    sets = {p: m.prepare_support(support, labels) for p, m in models.items()}
    # agreement of the streamed logits with the reference (fp32) on one batch
    with torch.no_grad():
        expect = model.episode_logits_fast(fs_ref, tl, model.features(torch.from_numpy(queries)))
    expect = expect.numpy()
    agree = {p: float((s.score(queries).argmax(1) == expect.argmax(1)).mean())
             for p, s in sets.items()}
    rows, out = [], []
    per_rep = {1: 15, 16: 4, 75: 1} if not args.quick else {1: 5, 16: 2, 75: 1}
    for batch, n_batches in per_rep.items():
        batches = [queries[(k * batch) % 75:][:batch] for k in range(n_batches)]
        calls = {"ref": lambda: [model.episode_logits_fast(fs_ref, tl,
                                                           model.features(torch.from_numpy(q)))
                                 for q in batches]}
        calls.update({p: (lambda sp=sp: [sp.score(q) for q in batches])
                      for p, sp in sets.items()})
        t = alternate(torch, time.perf_counter, args.reps, **calls)
        ips = {k: batch * n_batches / med(v) for k, v in t.items()}
        b16 = ips.get("bf16")
        rows.append([batch, f"{ips['ref']:.1f}", f"{ips['fp32']:.1f}",
                     f"{b16:.1f}" if b16 else "—", f"**{ips['fp32'] / ips['ref']:.2f}x**",
                     f"**{b16 / ips['ref']:.2f}x**" if b16 else "—"])
        out.append(dict(batch=batch, torch_img_s=ips["ref"], fp32_img_s=ips["fp32"],
                        bf16_img_s=b16))
    for s in sets.values():
        s.close()
    for m in models.values():
        m.close()
    table(f"Streaming queries: prepared 5-way 5-shot support set, {args.threads} threads, "
          f"median of {args.reps} reps of " +
          ", ".join(f"{n} x {b}" for b, n in per_rep.items()) + " queries",
          ["batch", "PyTorch img/s", "fp32 img/s", "bf16 img/s", "fp32 / PyTorch",
           "bf16 / PyTorch"], rows,
          f"PyTorch: reference backbone on the batch + its vectorised metric "
          f"(episode_logits_fast) against support features computed once. Predictions equal "
          f"to the reference's on 75 queries: fp32 {100 * agree['fp32']:.1f}%" +
          (f", bf16 {100 * agree['bf16']:.1f}%." if "bf16" in agree else "."))
    results["stream"] = dict(rows=out, agreement=agree)


# ---------------------------------------------------------------------------
# Memory (each measurement in a fresh subprocess)
# ---------------------------------------------------------------------------

def _status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_hwm():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def mem_child(args):
    """One memory measurement; prints a JSON object. kind: lib-load, ref-load,
    lib-episode, ref-episode, lib-repeat (RSS after each of 30 episodes)."""
    setup(args)
    import numpy as np
    kind, path = args.mem_child, args.model
    rng = np.random.default_rng(5)
    support = rng.standard_normal((25, 3, 84, 84)).astype(np.float32)
    labels = np.repeat(np.arange(5), 5).astype(np.int32)
    queries = rng.standard_normal((75, 3, 84, 84)).astype(np.float32)
    res = {}
    if kind.startswith("lib"):
        import lwfm
        precision = "bf16" if kind.endswith("bf16") else "fp32"
        convolutions = "direct" if kind.endswith("direct") else "auto"
        log = LogCapture(level=0)
        lwfm._library()
        base = _status_kb("VmRSS")
        _reset_hwm()
        model = lwfm.Model(path, precision=precision, convolutions=convolutions)
        res["load_peak_kb"] = _status_kb("VmHWM") - base
        res["load_rss_kb"] = _status_kb("VmRSS") - base
        held = [int(re.search(r"held: (\d+) bytes", l).group(1))
                for l in log.lines if "weights held" in l]
        res["weights_held_bytes"] = held[0] if held else None
        base = _status_kb("VmRSS")
        again = lwfm.Model(path, precision=precision,
                           convolutions=convolutions)  # one more model: its own cost
        res["load_again_kb"] = _status_kb("VmRSS") - base
        again.close()
        if "episode" in kind or "repeat" in kind:
            base = _status_kb("VmRSS")
            _reset_hwm()
            model.episode_score(support, labels, queries)
            res["episode_peak_kb"] = _status_kb("VmHWM") - base
            res["process_peak_kb"] = _status_kb("VmHWM")
            if "repeat" in kind:
                rss = []
                for _ in range(30):
                    model.episode_score(support, labels, queries)
                    rss.append(_status_kb("VmRSS"))
                res["repeat_rss_kb"] = rss
    else:
        import torch
        import lwfm_ref
        from lwfm.weights import load_weights
        torch.set_num_threads(args.threads)
        base = _status_kb("VmRSS")
        _reset_hwm()
        def load_reference():
            tensors, cfg = load_weights(path)
            cfg.pop("format_version", None)
            m = lwfm_ref.LWFMSPM(lwfm_ref.make_config(**cfg)).eval()
            m.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=False)
            return m  # the loaded arrays are freed on return

        model = load_reference()
        res["load_peak_kb"] = _status_kb("VmHWM") - base
        res["load_rss_kb"] = _status_kb("VmRSS") - base
        base = _status_kb("VmRSS")
        again = load_reference()
        res["load_again_kb"] = _status_kb("VmRSS") - base
        del again
        if "episode" in kind:
            ts, tq = torch.from_numpy(support), torch.from_numpy(queries)
            tl = torch.from_numpy(labels).long()
            with torch.no_grad():
                base = _status_kb("VmRSS")
                _reset_hwm()
                feats = model.features(torch.cat([ts, tq]))
                model.episode_logits_fast(feats[:25], tl, feats[25:])
            res["episode_peak_kb"] = _status_kb("VmHWM") - base
            res["process_peak_kb"] = _status_kb("VmHWM")
    print(json.dumps(res))


def run_child(args, kind, path):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--mem-child", kind, "--model", path,
           "--threads", str(args.threads), "--library", args.library]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_memory(args, np, torch, lwfm, lwfm_ref, tmp, results):
    cfg = lwfm_ref.make_config()
    path, model = export_model(tmp, cfg, torch, "mem.npz")
    file_bytes = sum(v.detach().numpy().nbytes for k, v in model.state_dict().items()
                     if k.startswith("feature_extractor.") and v.dtype == torch.float32)
    labels = {"ref-episode": "PyTorch reference", "lib-episode": "libLWFM fp32",
              "lib-episode-direct": "libLWFM fp32, convolutions=\"direct\"",
              "lib-episode-bf16": "libLWFM bf16"}
    kinds = ["ref-episode", "lib-episode", "lib-episode-direct"]
    if bf16_runs(lwfm, path):
        kinds.append("lib-episode-bf16")
    runs = {k: [] for k in kinds}
    for _ in range(1 if args.quick else 2):  # alternate; keep the smaller of the peaks
        for k in kinds:
            runs[k].append(run_child(args, k, path))
    best = {k: min(v, key=lambda r: r["episode_peak_kb"]) for k, v in runs.items()}
    rep = run_child(args, "lib-repeat", path)
    mb = lambda kb: f"{kb / 1024:.1f}"  # noqa: E731
    ref = best["ref-episode"]
    rows = []
    for k in kinds:
        r, label = best[k], labels[k]
        rows.append([label, mb(r["load_peak_kb"]), mb(r["load_rss_kb"]), mb(r["load_again_kb"]),
                     mb(r["episode_peak_kb"]), f"{r['episode_peak_kb'] / ref['episode_peak_kb']:.2f}",
                     mb(r["process_peak_kb"])])
    rss = rep["repeat_rss_kb"]
    held32 = best["lib-episode"]["weights_held_bytes"]
    held_direct = best["lib-episode-direct"]["weights_held_bytes"]
    held16 = best["lib-episode-bf16"]["weights_held_bytes"] if "lib-episode-bf16" in best else None
    table("Memory: loading the default model, one 5-way 5-shot 15-query episode (100 images "
          "of 3 x 84 x 84), MiB, each in a fresh process",
          ["", "first load: peak", "first load: kept", "one more model: kept",
           "first episode: peak above the loaded model",
           "episode peak / PyTorch's", "process peak"], rows,
          f"Backbone weights: file tensors {file_bytes / 2**20:.2f} MiB (f32, BatchNorm "
          f"separate); held by the library {held32 / 2**20:.2f} MiB in fp32 "
          f"({held_direct / 2**20:.2f} MiB with convolutions=\"direct\")"
          + (f" and {held16 / 2**20:.2f} MiB in bf16" if held16 else "") +
          f" (BatchNorm folded, one copy in the compute "
          f"layout: oneDNN's, or the Winograd transform, up to 4x the plain size, of 3 x 3 "
          f"convolutions on AVX2; the plain copy freed at load). RSS over 30 more episodes: first "
          f"{mb(rss[0])}, last {mb(rss[-1])}, max {mb(max(rss))} MiB (workspace reused). "
          f"Deltas of VmRSS / VmHWM (reset through /proc/self/clear_refs) over the step, taken "
          f"after the imports: the first load includes each runtime's lazy start (oneDNN, "
          f"libgomp threads; PyTorch's own is in its import); the episode is the first one "
          f"after loading (primitive creation and workspace growth included).")
    results["memory"] = dict(runs=best, repeat_rss_kb=rss, file_backbone_bytes=file_bytes,
                             held_fp32=held32, held_fp32_direct=held_direct, held_bf16=held16)


# ---------------------------------------------------------------------------
# Scaling, with the per-stage split from LWFM_PROFILE
# ---------------------------------------------------------------------------

STAGES = ("backbone", "lwe", "matcher", "solver")


def bench_scaling(args, np, torch, lwfm, lwfm_ref, tmp, results):
    log = LogCapture(level=1)
    rng = np.random.default_rng(7)
    models = {}

    def model_for(fs, threads):
        # one model per thread count: oneDNN fixes a primitive's thread count
        # when it is created (on the first call with a shape)
        if (fs, threads) not in models:
            path = os.path.join(tmp, f"s{fs}.npz")
            if not os.path.exists(path):
                export_model(tmp, lwfm_ref.make_config(feature_size=fs), torch, f"s{fs}.npz")
            models[fs, threads] = lwfm.Model(path)
        return models[fs, threads]

    quick = args.quick
    points = []  # (group, way, shot, n_query, fs, threads)
    for w in (5, 20) if quick else (5, 20, 50):
        points.append(("way", w, 1, 15 * w, 3, args.threads))
    for s in (1, 5, 10):
        points.append(("shot", 5, s, 75, 3, args.threads))
    for q in (1, 10, 100, 300) if quick else (1, 10, 100, 300, 1000):
        points.append(("queries", 5, 1, q, 3, args.threads))
    for fs in (3, 5, 7):
        points.append(("feature_size", 5, 1, 75, fs, args.threads))
    for th in (1, 2):
        points.append(("threads", 5, 1, 75, 3, th))
    rows, out = [], []
    prev = {}
    images = rng.standard_normal((1005, 3, 84, 84)).astype(np.float32)
    for group, way, shot, nq, fs, th in points:
        torch.set_num_threads(th)  # omp_set_num_threads for this (the calling) thread
        m = model_for(fs, th)
        ns = way * shot
        labels = np.repeat(np.arange(way), shot).astype(np.int32)
        sup, qry = images[:ns], images[ns:ns + nq] if ns + nq <= len(images) else None
        if qry is None:
            qry = rng.standard_normal((nq, 3, 84, 84)).astype(np.float32)
        big = (ns + nq) > 400
        reps = 1 if big or quick else max(1, args.reps // 2)
        m.episode_score(sup, labels, qry)  # warm-up: primitives for these shapes
        log.take_profiles()
        prof = []
        for _ in range(reps):
            m.episode_score(sup, labels, qry)
            prof += [p for c, p in log.take_profiles() if c == "lwfm_episode_score"]
        torch.set_num_threads(args.threads)
        st = {k: med([p[k] for p in prof]) for k in STAGES + ("total",)}
        metric = st["lwe"] + st["matcher"] + st["solver"]
        pairs = ns * nq
        key = group
        growth = ""
        if key in prev and group in ("way", "shot", "queries"):
            p0, m0 = prev[key]
            if pairs != p0:
                growth = f"{math.log(metric / m0) / math.log(pairs / p0):.2f}"
        prev[key] = (pairs, metric)
        rows.append([group, way, shot, nq, fs, th, ns + nq, pairs, f"{st['total']:.1f}",
                     f"{st['backbone']:.1f}", f"{st['lwe']:.2f}", f"{st['matcher']:.2f}",
                     f"{st['solver']:.2f}", f"{100 * metric / st['backbone']:.1f}%",
                     f"{1e3 * metric / pairs:.2f}", growth])
        out.append(dict(group=group, way=way, shot=shot, queries=nq, feature_size=fs, threads=th,
                        images=ns + nq, pairs=pairs, metric_ms=metric, reps=reps,
                        **{k + "_ms": v for k, v in st.items()}))
    for mdl in models.values():
        mdl.close()
    table("Scaling: one lwfm_episode_score call per point (default model; fs changes the pooled "
          "size), stages from LWFM_PROFILE, ms",
          ["vary", "way", "shot", "queries", "fs", "threads", "images", "pairs", "total",
           "backbone", "LWE", "matcher", "solver", "metric / backbone", "metric µs / pair",
           "growth exp."], rows,
          "LWE: centring, correlations (GEMM), attention, pooling, logits; matcher: the g_l MLP "
          "(per image and position); solver: the assignments and matched cosines. growth exp.: "
          "log(metric ratio) / log(pairs ratio) against the previous point of the same group "
          "(1 = linear in (query, support) pairs, below 1 better).")
    results["scaling"] = out


def plot_scaling(path, points):
    """Time against episode size (images per episode, log-log), drawn with PIL."""
    from PIL import Image, ImageDraw, ImageFont
    pts = [p for p in points if p["group"] in ("way", "shot", "queries") and p["threads"] >= 2]
    if not pts:
        return
    W, H, L, R, T, B = 900, 560, 80, 200, 40, 60
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    try:
        font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 13)
    except OSError:
        font = ImageFont.load_default()
    xs = [p["images"] for p in pts]
    series = [("total", "total_ms", (0, 0, 0)), ("backbone", "backbone_ms", (31, 119, 180)),
              ("metric (LWE + matcher + solver)", "metric_ms", (214, 39, 40)),
              ("matcher", "matcher_ms", (44, 160, 44)), ("solver", "solver_ms", (148, 103, 189))]
    ys = [max(p[k], 1e-3) for _, k, _ in series for p in pts]
    x0, x1 = math.log10(min(xs) * 0.8), math.log10(max(xs) * 1.25)
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    fx = lambda v: L + (math.log10(v) - x0) / (x1 - x0) * (W - L - R)  # noqa: E731
    fy = lambda v: H - B - (math.log10(max(v, 1e-3)) - y0) / (y1 - y0) * (H - T - B)  # noqa: E731
    for e in range(int(y0), int(y1) + 1):
        y = fy(10 ** e)
        d.line([(L, y), (W - R, y)], fill=(225, 225, 225))
        d.text((L - 8, y), f"{10 ** e:g}", fill="black", font=font, anchor="rm")
    for v in (1, 10, 100, 1000):
        if x0 <= math.log10(v) <= x1:
            x = fx(v)
            d.line([(x, T), (x, H - B)], fill=(225, 225, 225))
            d.text((x, H - B + 8), str(v), fill="black", font=font, anchor="mt")
    d.rectangle([L, T, W - R, H - B], outline="black")
    d.text(((L + W - R) / 2, H - 22), "images per episode (support + queries), log scale",
           fill="black", font=font, anchor="mm")
    d.text((12, T - 22), "ms per lwfm_episode_score call, log scale", fill="black", font=font)
    d.text((W - R, 12), "libLWFM, default LWFM-SPM (ResNet-18, fs 3), fp32", fill="black",
           font=font, anchor="ra")
    for i, (name, key, col) in enumerate(series):
        srt = sorted(pts, key=lambda p: (p["images"], p["pairs"]))
        for p in srt:
            x, y = fx(p["images"]), fy(p[key])
            mk = {"way": "o", "shot": "s", "queries": "t"}[p["group"]]
            if mk == "o":
                d.ellipse([x - 4, y - 4, x + 4, y + 4], outline=col, width=2)
            elif mk == "s":
                d.rectangle([x - 4, y - 4, x + 4, y + 4], outline=col, width=2)
            else:
                d.polygon([(x, y - 5), (x - 5, y + 4), (x + 5, y + 4)], outline=col)
        q = sorted([p for p in pts if p["group"] == "queries"], key=lambda p: p["images"])
        d.line([(fx(p["images"]), fy(p[key])) for p in q], fill=col, width=2)
        d.line([(W - R + 15, T + 20 + 22 * i), (W - R + 40, T + 20 + 22 * i)], fill=col, width=3)
        d.text((W - R + 46, T + 20 + 22 * i), name.split(" (")[0], fill="black", font=font,
               anchor="lm")
    ly = T + 20 + 22 * len(series) + 20
    for j, (mk, txt) in enumerate((("o", "vary way (1-shot)"), ("s", "vary shot (5-way)"),
                                   ("t", "vary queries (line)"))):
        x, y = W - R + 27, ly + 22 * j
        if mk == "o":
            d.ellipse([x - 4, y - 4, x + 4, y + 4], outline="black", width=2)
        elif mk == "s":
            d.rectangle([x - 4, y - 4, x + 4, y + 4], outline="black", width=2)
        else:
            d.polygon([(x, y - 5), (x - 5, y + 4), (x + 5, y + 4)], outline="black")
        d.text((W - R + 46, y), txt, fill="black", font=font, anchor="lm")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img.save(path)
    print(f"\nplot: {path}")


def main():
    args = parse_args()
    if args.mem_child:
        return mem_child(args)
    if "scaling" in args.only:
        os.environ["LWFM_PROFILE"] = "1"  # read by the library on its first episode call
    setup(args)
    import numpy as np
    import torch

    import lwfm
    import lwfm_ref
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = os.getloadavg()
    print(f"libLWFM {lwfm.library_version()} vs PyTorch {torch.__version__} (reference "
          f"bindings/python/lwfm_ref, eval, no_grad); {args.threads} threads of {os.cpu_count()} CPUs; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    results = {"threads": args.threads, "reps": args.reps, "quick": args.quick,
               "load_start": load}
    fns = {"backbone": bench_backbone, "stream": bench_stream, "memory": bench_memory,
           "scaling": bench_scaling}
    with tempfile.TemporaryDirectory() as tmp:
        for s in args.only:
            fns[s](args, np, torch, lwfm, lwfm_ref, tmp, results)
    results["load_end"] = os.getloadavg()
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in results['load_end'])}")
    if args.plot and "scaling" in results:
        plot_scaling(args.plot, results["scaling"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
