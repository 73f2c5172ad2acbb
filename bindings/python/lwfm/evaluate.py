"""Few-shot evaluation of a weight file with the PyTorch reference model.

    python3 -m lwfm.evaluate --model models/omniglot.npz \\
        --data ../shared/data/omniglot/images_evaluation.npz \\
        --way 5 --shot 1 --query 15 --episodes 600 --seed 1 [--json]

The episodes and the preprocessing are those of ``lwfm eval`` with the same
arguments (see :mod:`lwfm.episodes`), so the two commands' numbers can be
compared episode by episode. ``--backend lwfm`` scores the same episodes
with the C library instead of the reference (``LWFM_LIBRARY``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .episodes import EpisodeSampler, open_dataset, preprocess
from .quantize import QUANT_PREFIX
from .weights import FILE_ONLY_KEYS, load_weights


def _reference_model(path: str):
    from .train import _import_reference
    ref = _import_reference()
    import torch
    tensors, config = load_weights(path)
    cfg = {k: v for k, v in config.items() if k not in FILE_ONLY_KEYS}
    first = next(v for k, v in tensors.items() if k.endswith(".weight") and v.ndim == 4)
    cfg["in_channels"] = int(first.shape[1])
    method = cfg["method"]
    if method == "dn4":
        model = ref.DN4(cfg)
    elif method == "mml":
        model = ref.MML(cfg, train_way=tensors["classifier.Norm_layer.weight"].shape[0] // 3)
    elif method == "rcn":
        hidden = []
        i = 1
        while f"explain_network.meta_learner.{3 * i}.weight" in tensors:
            hidden.append(tensors[f"explain_network.meta_learner.{3 * (i - 1)}.weight"].shape[0])
            i += 1
        model = ref.RCN(cfg, hidden=hidden)
    else:
        model = ref.LWFMSPM(cfg)
    # quant/ members are int8 calibration ranges for the library, not weights
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(np.asarray(v)) for k, v in tensors.items()
         if not k.startswith(QUANT_PREFIX)}, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked") and
               not k.startswith("fc.")]
    if missing or unexpected:
        raise SystemExit(f"{path}: weight file does not fit the reference model "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval(), cfg


def evaluate(model_path: str, data_path: str, way: int, shot: int, query: int,
             episodes: int, seed: int, backend: str = "torch",
             progress: bool = True) -> Dict[str, Any]:
    """Mean accuracy (percent), its 95% CI and the per-episode accuracies."""
    import torch
    model, cfg = _reference_model(model_path)
    lib_model = None
    if backend == "lwfm":
        import lwfm
        lib_model = lwfm.Model(model_path)
    # rcn with batch-statistics BatchNorm: queries in batches of query_batch,
    # 5 per class interleaved as the official loader makes them (peers.md 4.6)
    transductive = cfg.get("batch_norm") == "batch"
    ds = open_dataset(data_path)
    sampler = EpisodeSampler(ds.class_sizes, way, shot, query, seed)
    cache: Dict[Any, np.ndarray] = {}

    def images(items):
        out = []
        for item in items:
            if item not in cache:
                cache[item] = preprocess(ds.load([item])[0][None], cfg)[0]
            out.append(cache[item])
        return np.stack(out)

    accs: List[float] = []
    start = time.time()
    with torch.no_grad():
        for e in range(episodes):
            sup, s_lab, qry, q_lab = sampler.episode()
            if transductive:   # the authors' interleaved class order (c0, c1, ..., c0, ...)
                order = np.arange(len(qry)).reshape(way, query).T.ravel()
                qry, q_lab = [qry[i] for i in order], [q_lab[i] for i in order]
            xs, xq = images(sup), images(qry)
            if lib_model is not None:
                logits = lib_model.episode_score(xs, np.asarray(s_lab, np.int32), xq)
            elif transductive:
                logits = model.episode_logits_batch_stats(
                    torch.from_numpy(xs), torch.tensor(s_lab), torch.from_numpy(xq),
                    cfg.get("query_batch", 25)).numpy()
            else:
                extract = model.extract if hasattr(model, "extract") else model.features
                feats = extract(torch.from_numpy(np.concatenate([xs, xq])))
                logits = model.episode_logits(feats[:len(sup)], torch.tensor(s_lab),
                                              feats[len(sup):]).numpy()
            pred = np.asarray(logits).argmax(axis=1)
            accs.append(float((pred == np.asarray(q_lab)).mean()) * 100.0)
            if progress and sys.stderr.isatty():
                sys.stderr.write(f"\repisode {e + 1}/{episodes}  accuracy "
                                 f"{np.mean(accs):.2f}%\x1b[K")
                sys.stderr.flush()
    if progress and sys.stderr.isatty():
        sys.stderr.write("\n")
    a = np.asarray(accs)
    return {"accuracy": float(a.mean()), "ci95": float(1.96 * a.std() / math.sqrt(len(a))),
            "episodes": episodes, "way": way, "shot": shot, "query": query, "seed": seed,
            "model": model_path, "data": data_path, "backend": backend,
            "seconds": time.time() - start, "episode_accuracies": accs}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m lwfm.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="Omniglot .npz or folder-per-class tree")
    p.add_argument("--way", type=int, default=5)
    p.add_argument("--shot", type=int, default=1)
    p.add_argument("--query", type=int, default=15)
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--backend", choices=("torch", "lwfm"), default="torch")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if args.threads > 0:
        import torch
        torch.set_num_threads(args.threads)
    res = evaluate(args.model, args.data, args.way, args.shot, args.query, args.episodes,
                   args.seed, args.backend)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{args.way}-way {args.shot}-shot, {args.episodes} episodes: "
              f"accuracy {res['accuracy']:.2f}% +- {res['ci95']:.2f}% (95% CI)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
