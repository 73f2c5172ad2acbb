"""Calibrate a model's probabilities and its "none of these" threshold.

    python3 -m lwfm.calibrate --model models/omniglot.npz \\
        --data ../shared/data/omniglot/images_background.npz [--output M.npz]

Held-out classes only: the last ``--val-fraction`` of the training data's
classes, the ones ``lwfm.train`` held out (never the test split). On
``--episodes`` open-set episodes (``--way`` classes of 1 or 5 supports,
alternately, plus queries of one more held-out class that is not among
them), scored by the C library:

1. **Temperature** ``T``: the one that minimises the negative log-likelihood
   of the known queries under softmax(logits / T) (a golden-section search
   over log T).
2. **Threshold** on the largest calibrated probability: the one that
   minimises false accepts (unknown queries given a class) plus false rejects
   (known queries called unknown).

Both are measured again on as many *other* episodes (seed + 1): expected
calibration error (15 bins) before and after, and the threshold's false-
accept / false-reject rates. The model file is rewritten with
``config/calibration_temperature`` and ``config/unknown_threshold``
(logits unchanged; the command checks it) and the report printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .episodes import EpisodeSampler, open_dataset
from .weights import load_weights, save_weights


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def held_out_classes(n_classes: int, val_fraction: float) -> range:
    """The classes ``lwfm.train`` held out for the same fraction."""
    from .train import held_out_count
    return range(n_classes - held_out_count(n_classes, val_fraction), n_classes)


def open_set_logits(model, ds, classes: Sequence[int], episodes: int, way: int, query: int,
                    seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits of known queries, their labels, and logits of unknown queries
    (one class more than the episode's ``way``, its queries not in the support)."""
    sizes = [ds.class_sizes[c] for c in classes]
    known, labels, unknown = [], [], []
    for e in range(episodes):
        shot = 1 if e % 2 == 0 else 5
        sampler = EpisodeSampler(sizes, way + 1, shot, query, seed * 1000003 + e)
        sup, s_lab, qry, q_lab = sampler.episode()
        keep = [i for i, lab in enumerate(s_lab) if lab < way]
        load = lambda items: model.preprocess(  # noqa: E731
            [np.asarray(a) for a in ds.load([(classes[c], i) for c, i in items])])
        support = load([sup[i] for i in keep])
        logits = model.episode_score(support, np.asarray([s_lab[i] for i in keep], np.int32),
                                     load(qry), way=way)
        q_lab = np.asarray(q_lab)
        known.append(logits[q_lab < way])
        labels.append(q_lab[q_lab < way])
        unknown.append(logits[q_lab == way])
    return np.concatenate(known), np.concatenate(labels), np.concatenate(unknown)


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    p = softmax(logits, temperature)[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(p, 1e-300)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """argmin_T NLL, golden-section search on log T in [1e-4, 1e4] (the NLL
    is unimodal in T for a fixed set of logits)."""
    lo, hi = math.log(1e-4), math.log(1e4)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(logits, labels, math.exp(a)), nll(logits, labels, math.exp(b))
    for _ in range(80):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(logits, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(logits, labels, math.exp(b))
    return float(math.exp((lo + hi) / 2))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Sum over confidence bins of |accuracy - confidence| weighted by the bin's share."""
    conf = probs.max(axis=1)
    right = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.mean() * abs(right[inside].mean() - conf[inside].mean())
    return float(ece)


def rates(known_top: np.ndarray, unknown_top: np.ndarray, threshold: float) -> Tuple[float, float]:
    """(false accept, false reject) of a threshold on the top probability."""
    return float((unknown_top >= threshold).mean()), float((known_top < threshold).mean())


def fit_threshold(known_top: np.ndarray, unknown_top: np.ndarray) -> float:
    """The threshold minimising false accepts + false rejects (candidates: the
    observed top probabilities)."""
    candidates = np.unique(np.concatenate([known_top, unknown_top, [0.0]]))
    costs = [sum(rates(known_top, unknown_top, t)) for t in candidates]
    return float(candidates[int(np.argmin(costs))])


def measure(known, labels, unknown, temperature: float,
            threshold: Optional[float] = None) -> Dict[str, Any]:
    pk, pu = softmax(known, temperature), softmax(unknown, temperature)
    out = {"ece": expected_calibration_error(pk, labels), "nll": nll(known, labels, temperature),
           "accuracy": float((known.argmax(1) == labels).mean() * 100.0),
           "mean_top_probability": float(pk.max(1).mean())}
    if threshold is not None:
        out["false_accept"], out["false_reject"] = rates(pk.max(1), pu.max(1), threshold)
    return out


def write_calibrated(src: str, dst: str, temperature: float, threshold: float) -> None:
    tensors, config = load_weights(src)
    config = {k: v for k, v in config.items() if k != "format_version"}
    config["calibration_temperature"] = float(np.float32(temperature))
    config["unknown_threshold"] = float(np.float32(threshold))
    tmp = dst + ".tmp.npz"
    save_weights(tmp, tensors, config)
    os.replace(tmp, dst)


def calibrate(model_path: str, data: str, output: str, way: int = 5, query: int = 5,
              episodes: int = 200, seed: int = 1, val_fraction: float = 0.1) -> Dict[str, Any]:
    import lwfm
    ds = open_dataset(data)
    classes = list(held_out_classes(len(ds.class_sizes), val_fraction))
    with lwfm.Model(model_path) as model:
        _log(f"fitting on {episodes} open-set episodes of {len(classes)} held-out classes ...")
        fit = open_set_logits(model, ds, classes, episodes, way, query, seed)
        _log(f"measuring on {episodes} other episodes ...")
        test = open_set_logits(model, ds, classes, episodes, way, query, seed + 1)
    temperature = fit_temperature(fit[0], fit[1])
    threshold = fit_threshold(softmax(fit[0], temperature).max(1),
                              softmax(fit[2], temperature).max(1))
    report = {"model": model_path, "data": data, "held_out_classes": [classes[0], classes[-1]],
              "episodes": episodes, "way": way, "shots": [1, 5], "query": query, "seed": seed,
              "calibration_temperature": temperature, "unknown_threshold": threshold,
              "before": measure(*test, 1.0),
              "after": measure(*test, temperature, threshold)}
    write_calibrated(model_path, output, temperature, threshold)
    with lwfm.Model(output) as m2, lwfm.Model(model_path) as m1:
        x = np.random.default_rng(0).standard_normal((4,) + m1.input_shape).astype(np.float32)
        same = np.array_equal(m1.episode_score(x[:2], np.array([0, 1], np.int32), x[2:]),
                              m2.episode_score(x[:2], np.array([0, 1], np.int32), x[2:]))
    if not same:
        raise SystemExit("the calibrated model's logits differ from the original's (a bug)")
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m lwfm.calibrate",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="the model's training data (held-out classes)")
    p.add_argument("--output", default=None, help="calibrated model (default: rewrite --model)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="the held-out share of classes, as given to lwfm.train")
    p.add_argument("--way", type=int, default=5)
    p.add_argument("--query", type=int, default=5)
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    report = calibrate(args.model, args.data, args.output or args.model, args.way, args.query,
                       args.episodes, args.seed, args.val_fraction)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
