"""lwfm.distributed: what crosses the network and how fast classify goes.

    PYTHONPATH=bindings/python LWFM_LIBRARY=build/liblwfm.so /usr/bin/python3 \\
        bench/bench_distributed.py --model build/tests/lwfm_small.npz --images 960 \\
        --workers 1,2 [--kill] [--json]

Scores miniImageNet test images (``--data``; ``--images`` of them, evenly
spaced over the 12,000, or all with ``--images 0``) against a ``--way``-way
``--shot``-shot support folder (the first images of the first classes,
linked into a temporary folder):

- one process, the single-process path (decode with PIL, ``Model.preprocess``,
  ``SupportSet.score`` in batches of 32), with 1 and with 2 OpenMP threads
  (``--threads``), each run in a child process (``OMP_NUM_THREADS`` is read
  at start-up); the first gives the reference logits. This process, which
  prepares the support set for the clusters, runs with 1 thread like it
  (LWFM-SPM's prepared support buffers differ in their last bits between 1
  and 2 threads);
- ``lwfm.distributed.classify`` on a local cluster of W single-threaded
  workers for each W of ``--workers`` (after a warm-up job that ships the
  model and the set: its time is reported as ``startup_s``);

checks that each cluster's logits equal the one-process logits bit for bit
(``--kill``: after one task in ten, one worker is killed), and measures the
bytes each side sends: the pickled payloads, a task's arguments and result,
and the loopback interface's byte counter over the timed job (everything
the client, scheduler and workers sent each other, control messages and
heartbeats included; other programs on the machine add to it). Never part
of the tests.
"""

import argparse
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "shared", "data", "mini-imagenet", "test")


def support_folder(data, way, shot):
    root = tempfile.mkdtemp(prefix="lwfm-bench-support-")
    for name in sorted(os.listdir(data))[:way]:
        os.mkdir(os.path.join(root, name))
        for f in sorted(os.listdir(os.path.join(data, name)))[:shot]:
            os.symlink(os.path.join(data, name, f), os.path.join(root, name, f))
    return root


def queries(data, n):
    from lwfm.distributed import list_images
    files = list_images([data])
    if n and n < len(files):
        files = [files[i * len(files) // n] for i in range(n)]
    return files


def one_process(model_path, support, paths, out):
    """The single-process path, timed; logits saved to `out` (.npy)."""
    import lwfm
    from lwfm.episodes import FolderSet
    t0 = time.time()
    model = lwfm.Model(model_path)
    sup = lwfm.SupportSet.from_folder(model, support)
    t1 = time.time()
    parts = []
    for i in range(0, len(paths), 32):
        x = np.stack([model.preprocess(FolderSet.load_one(lwfm._OneFile(p), 0, 0))[0]
                      for p in paths[i:i + 32]])
        parts.append(sup.score(x))
    t2 = time.time()
    np.save(out, np.concatenate(parts))
    return {"setup_s": t1 - t0, "seconds": t2 - t1, "images_per_s": len(paths) / (t2 - t1)}


def loopback_bytes():
    import psutil
    c = psutil.net_io_counters(pernic=True).get("lo")
    return c.bytes_sent if c else 0


def cluster_run(model_path, support, paths, workers, kill, chunk):
    import lwfm
    import lwfm.distributed as ld
    model = lwfm.Model(model_path)
    with ld.local_client(workers=workers, threads=1) as client:
        client.wait_for_workers(workers)
        t0 = time.time()
        ld.classify(client, model, support, paths[:workers * chunk], chunk=chunk)   # warm-up
        startup = time.time() - t0
        pids = client.run(os.getpid)
        killed = []

        def progress(done, total):
            if kill and not killed and done >= max(1, total // 10):
                killed.append(done)
                os.kill(pids[sorted(pids)[0]], signal.SIGKILL)

        lo0, t0 = loopback_bytes(), time.time()
        res = ld.classify(client, model, support, paths, chunk=chunk, progress=progress)
        dt, lo = time.time() - t0, loopback_bytes() - lo0
    return res, {"workers": workers, "startup_s": startup, "seconds": dt,
                 "images_per_s": len(paths) / dt, "loopback_bytes": lo,
                 "loopback_bytes_per_image": lo / len(paths),
                 "killed_after_tasks": killed[0] if killed else None}


def sizes(model_path, support, paths, chunk):
    """Pickled sizes of what crosses the network (Dask pickles with protocol 5)."""
    import lwfm
    import lwfm.distributed as ld
    model = lwfm.Model(model_path)
    mp = ld._model_payload(model)
    images, labels, classes, _ = ld._support_arrays(model, support)
    sup = lwfm.SupportSet(model, images, labels)
    sp = ld._support_payload(mp, sup)
    args = pickle.dumps((paths[:chunk], "fail"), protocol=5)
    kept, logits, bad = list(range(chunk)), np.zeros((chunk, sup.way), np.float32), []
    result = pickle.dumps((kept, logits, bad), protocol=5)
    return {"model_bytes": len(pickle.dumps(mp, protocol=5)),
            "weight_file_bytes": os.path.getsize(model_path),
            "support_bytes": len(pickle.dumps(sp, protocol=5)),
            "support_image_bytes": int(images.nbytes),
            "support_images": int(len(images)), "way": len(classes),
            "task_args_bytes_per_image": len(args) / chunk,
            "task_result_bytes_per_image": len(result) / chunk}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", default=DATA)
    p.add_argument("--images", type=int, default=960, help="0: all")
    p.add_argument("--way", type=int, default=20)
    p.add_argument("--shot", type=int, default=1)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--threads", default="1,2", help="threads of the one-process runs")
    p.add_argument("--chunk", type=int, default=32)
    p.add_argument("--kill", action="store_true", help="kill a worker after a tenth of the tasks")
    p.add_argument("--json", action="store_true")
    p.add_argument("--one-process", nargs=2, metavar=("SUPPORT", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.one_process:
        os.environ["OMP_NUM_THREADS"] = "1"   # before the library is loaded (see above)
    paths = queries(args.data, args.images)
    if args.one_process:
        print(json.dumps(one_process(args.model, args.one_process[0], paths, args.one_process[1])))
        return 0
    support = support_folder(args.data, args.way, args.shot)
    report = {"model": args.model, "images": len(paths), "way": args.way, "shot": args.shot,
              "chunk": args.chunk, "sizes": sizes(args.model, support, paths, args.chunk)}
    ref = os.path.join(support, "..", os.path.basename(support) + "-logits.npy")
    report["one_process"] = []
    for t in args.threads.split(","):
        env = dict(os.environ, OMP_NUM_THREADS=t)
        out = ref if not report["one_process"] else ref + f".{t}.npy"
        cmd = [sys.executable, __file__, "--model", args.model, "--data", args.data,
               "--images", str(args.images), "--one-process", support, out]
        run = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True,
                                        check=True).stdout)
        run["threads"] = int(t)
        report["one_process"].append(run)
    want = np.load(ref)
    report["clusters"] = []
    for w in (int(x) for x in args.workers.split(",")):
        res, stats = cluster_run(args.model, support, paths, w, args.kill, args.chunk)
        stats["same_logits"] = bool(np.array_equal(res.logits, want))
        stats["same_predictions"] = bool(np.array_equal(res.logits.argmax(1), want.argmax(1)))
        report["clusters"].append(stats)
    report["load_average"] = os.getloadavg()
    if args.json:
        print(json.dumps(report))
        return 0
    s = report["sizes"]
    print(f"{args.model}: {len(paths)} images, {args.way}-way {args.shot}-shot, chunk {args.chunk}")
    print(f"model {s['model_bytes']} B (weight file {s['weight_file_bytes']} B), support set "
          f"{s['support_bytes']} B ({s['support_images']} images), per image: task arguments "
          f"{s['task_args_bytes_per_image']:.0f} B, result {s['task_result_bytes_per_image']:.0f} B")
    for o in report["one_process"]:
        print(f"one process, {o['threads']} thread(s): {o['images_per_s']:.1f} images/s")
    for c in report["clusters"]:
        print(f"{c['workers']} worker(s): {c['images_per_s']:.1f} images/s (startup "
              f"{c['startup_s']:.1f} s), loopback {c['loopback_bytes_per_image']:.0f} B/image, "
              f"same logits: {c['same_logits']}, same predictions: {c['same_predictions']}"
              + (f", worker killed after {c['killed_after_tasks']} tasks"
                 if c["killed_after_tasks"] else ""))
    print(f"load average {report['load_average']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
