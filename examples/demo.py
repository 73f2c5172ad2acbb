#!/usr/bin/python3
"""`make demo`: one few-shot episode through libLWFM, end to end.

    make demo                      # builds, then runs this
    LWFM_DATA=/path/to/omniglot/images_evaluation.npz make demo

Model: the bundled default model (models/default.npz) when it exists, else a
model given with --model, else -- until the bundled model is trained and
committed -- an LWFM-SPM network with RANDOM weights exported from the
PyTorch reference (the demo says so loudly: its accuracy then only shows
that the pipeline runs, not what a trained model achieves).

Data: Omniglot evaluation characters when LWFM_DATA (or --data) points at
images_evaluation.npz, else characters drawn procedurally at run time (the
repository carries no third-party data).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for sub in ("bindings/python", "tools"):
    sys.path.insert(0, str(ROOT / sub))

import numpy as np  # noqa: E402

import lwfm  # noqa: E402


def draw_glyphs(rng, n_classes, n_per_class, size=84):
    """Procedural 'characters': each class is a random set of strokes; its
    examples are the strokes jittered, shifted and thickened differently."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = np.zeros((n_classes, n_per_class, size, size), np.float32)
    for c in range(n_classes):
        strokes = rng.uniform(0.15, 0.85, (rng.integers(2, 5), 4))
        for k in range(n_per_class):
            img = np.zeros((size, size), np.float32)
            shift = rng.normal(0, 0.03, 2)
            width = rng.uniform(0.025, 0.045)
            for x0, y0, x1, y1 in strokes + rng.normal(0, 0.02, strokes.shape):
                x0, x1 = x0 + shift[0], x1 + shift[0]
                y0, y1 = y0 + shift[1], y1 + shift[1]
                # distance of every pixel to the segment
                dx, dy = x1 - x0, y1 - y0
                t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / (dx * dx + dy * dy + 1e-9), 0, 1)
                d = np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy))
                img = np.maximum(img, (d < width).astype(np.float32))
            images[c, k] = 1.0 - img  # ink is dark on white paper, as in Omniglot
    return images


def omniglot_episode(path, rng, way, shot, n_query, size):
    data = np.load(path)
    arr = data[data.files[0]]  # (classes, 20, 105, 105) bool, True = paper
    classes = rng.choice(arr.shape[0], way, replace=False)
    out = np.zeros((way, shot + n_query, size, size), np.float32)
    idx = np.minimum((np.arange(size) + 0.5) * arr.shape[2] / size, arr.shape[2] - 1).astype(int)
    for i, c in enumerate(classes):
        pick = rng.choice(arr.shape[1], shot + n_query, replace=False)
        out[i] = arr[c][pick][:, idx][:, :, idx].astype(np.float32)
    return out


def random_model(tmp):
    import torch

    import lwfm_ref
    from lwfm.weights import save_weights
    torch.manual_seed(0)
    model = lwfm_ref.LWFMSPM(lwfm_ref.make_config()).eval()
    path = os.path.join(tmp, "random-lwfm-spm.npz")
    save_weights(path, {k: v.detach().numpy() for k, v in model.state_dict().items()},
                 model.config)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", default=os.environ.get("LWFM_DATA"))
    ap.add_argument("--way", type=int, default=5)
    ap.add_argument("--shot", type=int, default=1)
    ap.add_argument("--query", type=int, default=5, help="queries per class")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("LWFM_LIBRARY", str(ROOT / args.build / "liblwfm.so"))
    rng = np.random.default_rng(args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        model_path, trained = args.model, True
        if model_path is None and (ROOT / "models" / "default.npz").exists():
            model_path = str(ROOT / "models" / "default.npz")
        if model_path is None:
            trained = False
            model_path = random_model(tmp)
        model = lwfm.Model(model_path)
    cfg = model.config
    size = cfg["image_size"]
    print(f"libLWFM {lwfm.library_version()}: {cfg['method']} on {cfg['backbone']}, "
          f"taps {cfg['hyperpixel_ids']}, {cfg['feature_size']}x{cfg['feature_size']} hyperpixels")
    if not trained:
        print("NOTE: no trained model is bundled yet; this run uses RANDOM weights, so the "
              "accuracy below\n      only shows the pipeline working, not a trained model's "
              "quality.")

    if args.data:
        grey = omniglot_episode(args.data, rng, args.way, args.shot, args.query, size)
        source = f"Omniglot characters from {args.data}"
    else:
        grey = draw_glyphs(rng, args.way, args.shot + args.query, size)
        source = "procedurally drawn characters (set LWFM_DATA for Omniglot)"
    print(f"episode: {args.way}-way {args.shot}-shot, {args.query} queries per class, {source}")

    # grey [0, 1] -> the model's channels and normalisation
    mean = np.array(cfg["mean"], np.float32)[:, None, None]
    std = np.array(cfg["std"], np.float32)[:, None, None]
    x = (np.repeat(grey[:, :, None], cfg["input_channels"], axis=2) - mean) / std
    support = x[:, :args.shot].reshape(-1, cfg["input_channels"], size, size)
    query = x[:, args.shot:].reshape(-1, cfg["input_channels"], size, size)
    labels = np.repeat(np.arange(args.way), args.shot)
    truth = np.repeat(np.arange(args.way), args.query)

    t0 = time.perf_counter()
    logits = model.episode_score(support, labels, query)
    dt = time.perf_counter() - t0
    pred = logits.argmax(1)
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    for i in range(len(query)):
        mark = "ok" if pred[i] == truth[i] else "WRONG"
        print(f"  query {i:2d} (class {truth[i]}): predicted {pred[i]}  p={prob[i, pred[i]]:.2f}"
              f"  {mark}")
    acc = 100.0 * float((pred == truth).mean())
    print(f"accuracy: {acc:.1f}% on {len(query)} queries ({dt * 1e3:.0f} ms for the episode"
          f"{'' if trained else ', random weights'})")
    model.close()


if __name__ == "__main__":
    main()
