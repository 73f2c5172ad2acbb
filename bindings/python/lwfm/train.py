"""Train an LWFM-SPM model and write the library's weight file.

    python3 -m lwfm.train --data ../shared/data/omniglot/images_background.npz \\
        --output models/omniglot.npz --workdir runs/omniglot --seed 1

Objective (spec section 6): per step one episode (``--way`` classes, ``--shot``
supports and ``--query`` queries per class) and one ordinary batch
(``--batch`` images); loss = ``lambda * CE(episode logits)`` +
``CE(fc(pooled batch features))`` + ``CE(fc(mean over the episode's pairs of
the pooled attended query map), query's class)``. SGD with Nesterov momentum
0.9, weight decay 5e-4, gradient-norm clip 2.0, linear warm-up then cosine
decay. Trained from scratch (no ImageNet weights offline).

Data: an Omniglot ``.npz`` (every character rotated by 0/90/180/270 degrees
counts as its own class, the usual Omniglot augmentation, plus random shifts)
or a folder-per-class tree (random shifts and horizontal flips). The last
``--val-fraction`` of the classes are held out; every ``--val-every`` steps
the model is scored on ``--val-episodes`` 5-way 1-shot episodes of them and
the best one is written to ``--output``.

Deterministic for a given ``--seed`` and thread count; ``--resume`` continues
from ``WORKDIR/checkpoint.pt`` (model, optimiser, step and random states).
Uses CUDA when available unless ``--device cpu``. Needs the
reference model ``lwfm_ref``, installed beside ``lwfm``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .episodes import FolderSet, OmniglotSet, open_dataset, preprocess
from .photos import PhotoAugment, channel_stats, decode_folder, split_classes
from .weights import save_weights


def _import_reference():
    import lwfm_ref  # installed beside lwfm (bindings/python in a checkout)
    return lwfm_ref


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------

class TrainData:
    """Images with class ids: preprocessed float32 ``(n_images, ch, S, S)``, or,
    for photos, uint8 ``(n_images, S, S, 3)`` with a :class:`PhotoAugment`."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, n_classes: int,
                 fill: np.ndarray, flip: bool, photo: Optional[PhotoAugment] = None) -> None:
        self.images = images
        self.labels = labels
        self.n_classes = n_classes
        self.by_class = [np.nonzero(labels == c)[0] for c in range(n_classes)]
        self.fill = fill          # normalised value of white paper / zero padding
        self.flip = flip
        self.photo = photo

    def augmented(self, idx: np.ndarray, rng: np.random.Generator, shift: int):
        """A training batch as a float tensor: photos get random resized crops,
        flips and colour jitter; characters random shifts."""
        import torch
        if self.photo is not None:
            return self.photo(self.images[idx], rng)
        return torch.from_numpy(augment(self.images[idx], rng, self.fill, shift, self.flip))

    def plain(self, idx: np.ndarray):
        """Images as the model sees them at inference (validation)."""
        import torch
        if self.photo is not None:
            return self.photo.plain(self.images[idx])
        return torch.from_numpy(self.images[idx])


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def held_out_count(n_cls: int, val_fraction: float) -> int:
    """How many classes (the last ones) a run holds out for validation; the
    one rule, also used by ``lwfm.calibrate``."""
    return max(5, int(round(n_cls * val_fraction))) if val_fraction > 0 else 0


def _held_out_count(path: str, n_cls: int, val_fraction: float) -> int:
    n_val = held_out_count(n_cls, val_fraction)
    if n_cls - n_val < 5:
        raise SystemExit(f"{path}: {n_cls} classes are too few to train on")
    return n_val


def load_photo_data(path: str, config: Dict[str, Any], val_fraction: float, cache_dir: str,
                    crop_scale: float, jitter: float) -> Tuple[TrainData, TrainData, Dict[str, Any]]:
    """A folder of photos: decoded once (cached in ``cache_dir``), kept as
    uint8, augmented per batch (:mod:`lwfm.photos`)."""
    ds = FolderSet(path)
    n_val = _held_out_count(path, len(ds.class_sizes), val_fraction)
    cfg = dict(config, in_channels=3)
    _log(f"decoding {path} ({len(ds.class_sizes)} classes, {n_val} held out) ...")
    images = decode_folder(ds, cfg, cache_dir)
    split = split_classes(ds, n_val)
    end = split["train_end"]
    if "mean" not in config or "std" not in config:
        cfg["mean"], cfg["std"] = channel_stats(images[:end])
    fill = np.zeros(3, np.float32)
    aug = PhotoAugment(cfg["mean"], cfg["std"], crop_scale, jitter)
    train = TrainData(images[:end], split["labels"][:end], split["n_train"], fill, True, aug)
    val = TrainData(images[end:], split["labels"][end:] - split["n_train"], n_val, fill, False,
                    aug)
    return train, val, cfg


def load_training_data(path: str, config: Dict[str, Any], val_fraction: float,
                       rotations: bool) -> Tuple[TrainData, TrainData, Dict[str, Any]]:
    """Split classes into train / held-out, preprocess once, fix mean / std.

    Returns ``(train, val, config)``; the config gets ``mean`` / ``std``
    computed over the training images (unless given) and ``in_channels``.
    """
    ds = open_dataset(path)
    n_cls = len(ds.class_sizes)
    n_val = _held_out_count(path, n_cls, val_fraction)
    raw_cfg = dict(config)
    omniglot = isinstance(ds, OmniglotSet)
    if omniglot:
        raw_cfg.setdefault("in_channels", 1)
    else:
        raw_cfg.setdefault("in_channels", 3)
    ch = raw_cfg["in_channels"]
    # Scale to [0, 1] first (mean 0, std 1), then measure the statistics.
    unit = dict(raw_cfg, mean=[0.0] * ch, std=[1.0] * ch)

    def build(classes: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
        imgs, labels = [], []
        for k, c in enumerate(classes):
            items = [(c, i) for i in range(ds.class_sizes[c])]
            if omniglot:
                raw = ds.load(items)
                imgs.append(preprocess(raw, unit))
            else:
                imgs.append(np.concatenate([preprocess(a[None], unit) for a in ds.load(items)]))
            labels.append(np.full(len(items), k, dtype=np.int64))
            if not omniglot and (k + 1) % 10 == 0:
                _log(f"  loaded {k + 1}/{len(classes)} classes")
        return np.concatenate(imgs), np.concatenate(labels)

    _log(f"preprocessing {path} ({n_cls} classes, {n_val} held out) ...")
    train_x, train_y = build(range(n_cls - n_val))
    val_x, val_y = build(range(n_cls - n_val, n_cls))
    if "mean" not in config or "std" not in config:
        mean = train_x.mean(axis=(0, 2, 3)).astype(np.float64)
        std = train_x.std(axis=(0, 2, 3)).astype(np.float64)
        raw_cfg["mean"] = [round(float(m), 4) for m in mean]
        raw_cfg["std"] = [round(float(s), 4) for s in std]
    mean = np.asarray(raw_cfg["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(raw_cfg["std"], np.float32).reshape(1, -1, 1, 1)
    train_x = (train_x - mean) / std
    val_x = (val_x - mean) / std
    paper = 1.0 if omniglot else 0.0
    fill = ((paper - mean) / std).reshape(-1)

    n_train = n_cls - n_val
    if omniglot and rotations:
        xs, ys = [train_x], [train_y]
        for r in (1, 2, 3):
            xs.append(np.ascontiguousarray(np.rot90(train_x, r, axes=(2, 3))))
            ys.append(train_y + r * n_train)
        train_x, train_y = np.concatenate(xs), np.concatenate(ys)
        n_train *= 4
    train = TrainData(np.ascontiguousarray(train_x, dtype=np.float32), train_y, n_train, fill,
                      flip=not omniglot)
    val = TrainData(np.ascontiguousarray(val_x, dtype=np.float32), val_y, n_val, fill,
                    flip=False)
    return train, val, raw_cfg


def augment(batch: np.ndarray, rng: np.random.Generator, fill: np.ndarray, shift: int,
            flip: bool) -> np.ndarray:
    """Random shifts of up to ``shift`` pixels (padding with ``fill``) and, for
    natural images, horizontal flips."""
    n, ch, h, w = batch.shape
    out = np.empty_like(batch)
    padded = np.empty((ch, h + 2 * shift, w + 2 * shift), dtype=batch.dtype)
    offsets = rng.integers(0, 2 * shift + 1, size=(n, 2))
    flips = rng.random(n) < 0.5 if flip else np.zeros(n, dtype=bool)
    for i in range(n):
        padded[...] = fill.reshape(-1, 1, 1)
        padded[:, shift:shift + h, shift:shift + w] = batch[i]
        dy, dx = offsets[i]
        crop = padded[:, dy:dy + h, dx:dx + w]
        out[i] = crop[:, :, ::-1] if flips[i] else crop
    return out


def sample_episode(data: TrainData, rng: np.random.Generator, way: int, shot: int,
                   query: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of supports, queries (class by class) and the classes drawn."""
    classes = rng.choice(data.n_classes, size=way, replace=False)
    sup, qry = [], []
    for c in classes:
        pick = rng.choice(data.by_class[c], size=shot + query, replace=False)
        sup.append(pick[:shot])
        qry.append(pick[shot:])
    return np.concatenate(sup), np.concatenate(qry), classes


# ----------------------------------------------------------------------------
# Model pieces
# ----------------------------------------------------------------------------

def export_weights(model, config: Dict[str, Any], path: str) -> None:
    """Write the inference weights (no ``fc``) in the library's format."""
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()
             if not k.startswith("fc.")}
    cfg = {k: v for k, v in config.items() if k not in ("num_classes", "in_channels")}
    save_weights(path, state, cfg)


def validate(model, data: TrainData, episodes: int, seed: int, device, shot: int = 1,
             way: int = 5, query: int = 15) -> Tuple[float, float]:
    """Mean accuracy (percent) and 95% CI on held-out 5-way episodes (fewer ways or
    queries when the held-out classes are fewer or smaller)."""
    import torch
    rng = np.random.default_rng(seed)
    way = min(way, data.n_classes)
    query = min(query, min(len(ix) for ix in data.by_class) - shot)
    if way < 2 or query < 1:
        raise SystemExit("too few held-out classes or images to validate on; "
                         "raise --val-fraction")
    accs = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for _ in range(episodes):
            sup, qry, _ = sample_episode(data, rng, way, shot, query)
            x = data.plain(np.concatenate([sup, qry])).to(device)
            feats = embed(model, x)
            labels = torch.arange(way, device=device).repeat_interleave(shot)
            logits = model.episode_logits_fast(feats[:len(sup)], labels, feats[len(sup):])
            truth = torch.arange(way, device=device).repeat_interleave(query)
            accs.append(float((logits.argmax(1) == truth).float().mean()) * 100.0)
    model.train(was_training)
    a = np.asarray(accs)
    return float(a.mean()), float(1.96 * a.std() / math.sqrt(len(a)))


# ----------------------------------------------------------------------------
# Main loop
# ----------------------------------------------------------------------------

class Progress:
    """One self-overwriting stderr line (plain lines when not a terminal)."""

    def __init__(self, total: int, every: int = 50) -> None:
        self.total, self.every = total, every
        self.tty = sys.stderr.isatty()
        self.start = time.time()
        self.first_step: Optional[int] = None

    def update(self, step: int, text: str) -> None:
        if self.first_step is None:
            self.first_step = step - 1
        if not self.tty and step % self.every and step != self.total:
            return
        done = step - self.first_step
        rate = done / max(time.time() - self.start, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else 0.0
        width = 24
        filled = int(width * step / self.total)
        bar = "#" * filled + "." * (width - filled)
        line = (f"[{bar}] {step}/{self.total} {text} {rate:.2f} it/s "
                f"eta {int(eta // 60)}m{int(eta % 60):02d}s")
        if self.tty:
            sys.stderr.write("\r" + line + "\x1b[K")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def message(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r\x1b[K")
        _log(text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m lwfm.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="Omniglot .npz or folder-per-class tree")
    p.add_argument("--output", required=True, help="weight file to write (best on validation)")
    p.add_argument("--workdir", required=True, help="checkpoints and log")
    p.add_argument("--resume", action="store_true", help="continue from WORKDIR/checkpoint.pt")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=8000, help="length of the schedule")
    p.add_argument("--stop-at", type=int, default=0,
                   help="save a checkpoint and exit after this step (continue with --resume)")
    p.add_argument("--method", choices=["lwfm-spm", "dn4", "rcn"], default="lwfm-spm",
                   help="lwfm-spm (spec section 6 objective, SGD), dn4 (DN4's head on Conv-64F "
                        "with the same objective and stages, for method-against-method "
                        "comparisons) or rcn (the RCN authors' recipe: MSE between the softmax "
                        "and the one-hot labels, Adam)")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="start from the backbone of another run's checkpoint (e.g. its "
                        "WORKDIR/pretrained.pt, written at the end of the pretraining stage)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (lwfm-spm 0.05 with SGD, rcn 1e-3 with Adam)")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--lambda", dest="lam", type=float, default=1.0,
                   help="weight of the episode loss")
    p.add_argument("--way", type=int, default=5)
    p.add_argument("--shot", type=int, default=1)
    p.add_argument("--query", type=int, default=15)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--shift", type=int, default=2, help="random shift in pixels")
    p.add_argument("--no-rotations", action="store_true",
                   help="Omniglot: do not add rotated characters as classes")
    p.add_argument("--pretrain-steps", type=int, default=0,
                   help="stage 1: steps of plain classification of the training classes "
                        "before the episodic steps (photos: see docs/models.md)")
    p.add_argument("--pretrain-batch", type=int, default=64)
    p.add_argument("--pretrain-lr", type=float, default=0.05)
    p.add_argument("--crop-scale", type=float, default=0.25,
                   help="photos: smallest area of a random resized crop")
    p.add_argument("--jitter", type=float, default=0.4,
                   help="photos: brightness / contrast / saturation jitter (0: none)")
    p.add_argument("--mean", type=float, nargs="+", default=None,
                   help="input normalisation (default: measured on the training images); "
                        "give the one the --init-from backbone was trained with, e.g. "
                        "0.5 for the DN4 authors' weights")
    p.add_argument("--std", type=float, nargs="+", default=None)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--val-episodes", type=int, default=300)
    p.add_argument("--checkpoint-every", type=int, default=100,
                   help="steps between checkpoints (also written at every validation), so "
                        "that a killed run loses at most this many steps")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    # Model configuration.
    p.add_argument("--backbone", default=None, help="conv64f (default for Omniglot) or resnet18")
    p.add_argument("--taps", type=int, nargs="+", default=None, help="hyperpixel_ids")
    p.add_argument("--feature-size", type=int, default=3)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--resize", type=int, default=None)
    p.add_argument("--matcher-prob", type=float, default=0.25)
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--temperature-attn", type=float, default=5.0)
    return p


def _model_config(args, omniglot: bool) -> Dict[str, Any]:
    return _with_normalisation(_method_config(args, omniglot), args, 1 if omniglot else 3)


def _method_config(args, omniglot: bool) -> Dict[str, Any]:
    if args.method == "dn4":     # peers.md 2: native 21 x 21 descriptors of the last block
        return {"method": "dn4", "backbone": "conv64f", "hyperpixel_ids": [3],
                "feature_size": 0, "neighbor_k": 3,
                "image_size": args.image_size or (28 if omniglot else 84),
                "resize": args.resize if args.resize is not None else (0 if omniglot else 92)}
    if args.method == "rcn":     # peers.md 4: the last block on a 5 x 5 region grid
        return {"method": "rcn", "backbone": args.backbone or "conv4", "hyperpixel_ids": [3],
                "feature_size": 5, "image_size": args.image_size or (28 if omniglot else 84),
                "resize": args.resize if args.resize is not None else 0}
    backbone = args.backbone or ("conv64f" if omniglot else "resnet18")
    cfg: Dict[str, Any] = {
        "method": "lwfm-spm", "backbone": backbone,
        "hyperpixel_ids": args.taps or ([2, 3] if backbone == "conv64f" else [7, 8]),
        "feature_size": args.feature_size, "temperature": args.temperature,
        "temperature_attn": args.temperature_attn, "matcher_prob": args.matcher_prob,
        "learnable_matcher": True, "top_k": args.top_k,
        "image_size": args.image_size or (28 if omniglot else 84),
        "resize": args.resize if args.resize is not None else (0 if omniglot else 92),
    }
    if backbone == "resnet18":
        cfg["first_padding"] = 3
    return cfg


def _with_normalisation(cfg: Dict[str, Any], args, channels: int) -> Dict[str, Any]:
    """``--mean`` / ``--std`` (one value for every channel, or one per channel)
    override the statistics the data loaders would measure."""
    if (args.mean is None) != (args.std is None):
        raise SystemExit("--mean and --std go together")
    if args.mean is not None:
        for key, values in (("mean", args.mean), ("std", args.std)):
            if len(values) not in (1, channels) or (key == "std" and min(values) <= 0):
                raise SystemExit(f"--{key}: give 1 or {channels} values (std > 0)")
            cfg[key] = [float(v) for v in values] * (channels // len(values))
    return cfg


def tune_allocator() -> None:
    """Keep freed activation memory in the process (glibc only).

    glibc serves every allocation above 32 MB with its own mmap and returns it
    on free, so each step's 100-400 MB activations were page-faulted in anew:
    as much system time as user time. With mmap off and trimming deferred,
    the heap's pages are reused from step to step (2.7x faster steps on
    Conv-64F, batch 64, 2 threads)."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return                      # not glibc: nothing to tune
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    mallopt(M_MMAP_MAX, 0)
    mallopt(M_TRIM_THRESHOLD, 1 << 40)


def inplace_activations(model) -> None:
    """In-place (Leaky)ReLU: one activation-sized tensor less per layer and
    step. Autograd refuses (loudly) any use that this would make wrong."""
    import torch.nn as nn
    for mod in model.modules():
        if isinstance(mod, (nn.ReLU, nn.LeakyReLU)):
            mod.inplace = True


class Schedule:
    """The two stages of a run, on one step counter: ``pretrain`` steps of
    plain classification (``fc`` on pooled features), then ``steps`` episodic
    steps (spec section 6). Each stage: linear warm-up, then cosine decay."""

    def __init__(self, args) -> None:
        self.pretrain, self.total = args.pretrain_steps, args.pretrain_steps + args.steps
        self.args = args

    def stage(self, step: int) -> str:
        return "pretrain" if step < self.pretrain else "episodic"

    def lr(self, step: int) -> float:
        a = self.args
        if step < self.pretrain:
            peak, s, length = a.pretrain_lr, step, self.pretrain
        else:
            peak, s, length = a.lr, step - self.pretrain, a.steps
        if s < a.warmup:
            return peak * (s + 1) / a.warmup
        frac = (s - a.warmup) / max(1, length - a.warmup)
        return 0.5 * peak * (1.0 + math.cos(math.pi * min(1.0, frac)))


def make_optimizer(params, args, stage: str, rcn: bool):
    import torch
    if rcn:
        return torch.optim.Adam(params, lr=args.lr)
    lr = args.pretrain_lr if stage == "pretrain" else args.lr
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True,
                           weight_decay=args.weight_decay)


def embed(model, x):
    """Feature maps of a batch: ``extract`` for the peer heads' models,
    ``features`` (pooled taps) for LWFM-SPM."""
    return (model.extract if hasattr(model, "extract") else model.features)(x)


def pretrain_loss(model, train: TrainData, rng, args, device):
    """Stage 1: ``CE(fc(pooled features))`` on an augmented batch."""
    import torch
    import torch.nn.functional as F
    idx = rng.integers(0, len(train.labels), size=args.pretrain_batch)
    x = train.augmented(idx, rng, args.shift).to(device)
    logits = model.fc(embed(model, x).flatten(2).mean(2))
    target = torch.from_numpy(train.labels[idx]).to(device)
    return F.cross_entropy(logits, target), logits, target


def episodic_loss(model, train: TrainData, rng, args, device, rcn: bool):
    """Stage 2 (spec section 6): ``lambda * CE(episode)`` + ``CE(fc(batch))`` +
    ``CE(fc(attended query))``; RCN: MSE of the softmax against one-hot labels."""
    import torch
    import torch.nn.functional as F
    way, shot, query = args.way, args.shot, args.query
    s_labels = torch.arange(way, device=device).repeat_interleave(shot)
    q_labels = torch.arange(way, device=device).repeat_interleave(query)
    sup, qry, _ = sample_episode(train, rng, way, shot, query)
    batch_idx = rng.integers(0, len(train.labels), size=0 if rcn else args.batch)
    x = train.augmented(np.concatenate([sup, qry, batch_idx]), rng, args.shift).to(device)
    n_s, n_q = len(sup), len(qry)
    if rcn:
        feats = model.extract(x)
        logits = model.episode_logits_fast(feats[:n_s], s_labels, feats[n_s:])
        loss = F.mse_loss(torch.softmax(logits, dim=1), F.one_hot(q_labels, way).float())
        return loss, logits, q_labels
    feats = embed(model, x)
    logits, pooled_q = model.episode_logits_fast(feats[:n_s], s_labels, feats[n_s:n_s + n_q],
                                                 return_pooled_query=True)
    q_global = torch.from_numpy(train.labels[qry]).to(device)
    b_global = torch.from_numpy(train.labels[batch_idx]).to(device)
    loss = (args.lam * F.cross_entropy(logits, q_labels)
            + F.cross_entropy(model.fc(feats[n_s + n_q:].flatten(2).mean(2)), b_global)
            + F.cross_entropy(model.fc(pooled_q), q_global))
    return loss, logits, q_labels


def _device(args):
    import torch
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(args.device)


def _load_data(args, config):
    if os.path.isdir(args.data) and args.method != "rcn":
        return load_photo_data(args.data, config, args.val_fraction, args.workdir,
                               args.crop_scale, args.jitter)
    return load_training_data(args.data, config, args.val_fraction,
                              rotations=not args.no_rotations)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    ref = _import_reference()
    import torch

    from .trainees import dn4_trainee, load_backbone

    tune_allocator()
    device = _device(args)
    os.makedirs(args.workdir, exist_ok=True)
    ckpt_path = os.path.join(args.workdir, "checkpoint.pt")

    omniglot = not os.path.isdir(args.data)
    rcn = args.method == "rcn"
    if rcn and args.pretrain_steps:
        raise SystemExit("--pretrain-steps is for lwfm-spm (RCN's recipe has no classifier)")
    config = _model_config(args, omniglot)
    train, val, config = _load_data(args, config)
    _log(f"train: {train.n_classes} classes, {len(train.labels)} images; "
         f"held out: {val.n_classes} classes; image {train.images.shape[1:]}; "
         f"mean {config['mean']} std {config['std']}; device {device}")

    smallest = min(len(ix) for ix in train.by_class)
    if smallest < args.shot + args.query:
        raise SystemExit(f"a training class has only {smallest} images; --shot {args.shot} "
                         f"--query {args.query} need {args.shot + args.query}")
    torch.manual_seed(args.seed)
    if args.lr is None:
        args.lr = 1e-3 if rcn else 0.05
    if rcn:
        model = ref.RCN(config).to(device)
    elif args.method == "dn4":
        model = dn4_trainee(ref, config, train.n_classes).to(device)
    else:
        model = ref.LWFMSPM(dict(config, num_classes=train.n_classes)).to(device)
    if args.init_from and not args.resume:
        source = torch.load(args.init_from, map_location=device)
        n = load_backbone(model, source.get("model", source.get("state_dict", source)))
        _log(f"backbone ({n} tensors) from {args.init_from}")
    inplace_activations(model)
    params = [p for p in model.parameters() if p.requires_grad]
    sched = Schedule(args)
    rng = np.random.default_rng(args.seed)
    step, best = 0, -1.0
    history: List[Dict[str, Any]] = []
    opt = make_optimizer(params, args, sched.stage(0), rcn)
    if args.resume:
        if not os.path.exists(ckpt_path):
            raise SystemExit(f"--resume: no checkpoint at {ckpt_path}")
        ck = torch.load(ckpt_path, map_location=device)
        model.load_state_dict(ck["model"])
        step, best, history = ck["step"], ck["best"], ck["history"]
        opt = make_optimizer(params, args, sched.stage(step), rcn)
        opt.load_state_dict(ck["optimizer"])
        rng.bit_generator.state = ck["numpy_rng"]
        torch.set_rng_state(ck["torch_rng"])
        _log(f"resumed at step {step} ({sched.stage(step)} stage; best held-out accuracy "
             f"{best:.2f}%)")

    def save_checkpoint() -> None:
        tmp = ckpt_path + ".tmp"
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                    "step": step, "best": best, "history": history, "config": config,
                    "args": vars(args)}, tmp)
        os.replace(tmp, ckpt_path)

    progress = Progress(sched.total)
    run_loss, run_acc = None, None
    model.train()
    stop_at = args.stop_at if 0 < args.stop_at < sched.total else sched.total
    while step < stop_at:
        stage = sched.stage(step)
        if step == sched.pretrain and step > 0:
            opt = make_optimizer(params, args, stage, rcn)   # fresh momentum for stage 2
        for group in opt.param_groups:
            group["lr"] = sched.lr(step)
        if stage == "pretrain":
            loss, logits, truth = pretrain_loss(model, train, rng, args, device)
        else:
            loss, logits, truth = episodic_loss(model, train, rng, args, device, rcn)
        if not torch.isfinite(loss):
            raise SystemExit(f"step {step}: loss is {float(loss)}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5 if rcn else 2.0)
        opt.step()
        step += 1

        acc = float((logits.argmax(1) == truth).float().mean()) * 100.0
        run_loss = float(loss) if run_loss is None else 0.98 * run_loss + 0.02 * float(loss)
        run_acc = acc if run_acc is None else 0.98 * run_acc + 0.02 * acc
        progress.update(step, f"{stage} loss {run_loss:.3f} acc {run_acc:.1f}% "
                              f"lr {sched.lr(step - 1):.4f}")
        if step == sched.pretrain:
            run_loss, run_acc = None, None     # the two stages' losses differ in kind

        if step % args.checkpoint_every == 0:
            save_checkpoint()
        if step % args.val_every == 0 or step in (sched.total, stop_at, sched.pretrain):
            mean, ci = validate(model, val, args.val_episodes, args.seed + 7, device)
            improved = mean > best
            history.append({"step": step, "stage": stage, "val_acc": mean, "val_ci95": ci,
                            "loss": run_loss, "train_acc": run_acc})
            if improved:
                best = mean
                export_weights(model, config, args.output)
            progress.message(f"step {step}: held-out 5-way 1-shot {mean:.2f} +- {ci:.2f}%"
                             + (f"  -> wrote {args.output}" if improved else ""))
            save_checkpoint()
            if step == sched.pretrain:      # stage 1 kept for other heads (--init-from)
                shutil.copyfile(ckpt_path, os.path.join(args.workdir, "pretrained.pt"))
            with open(os.path.join(args.workdir, "history.json"), "w") as fh:
                json.dump({"config": config, "args": vars(args), "history": history}, fh,
                          indent=1)
    if step < sched.total:
        _log(f"stopped at step {step} of {sched.total}; continue with --resume")
        return 0
    _log(f"done: best held-out 5-way 1-shot accuracy {best:.2f}% -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
