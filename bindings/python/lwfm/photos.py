"""Natural-image training data for ``lwfm.train``: decoded once, augmented in batches.

A folder-per-class tree of photos (miniImageNet's 84 x 84 JPEGs, or a user's
own) is decoded once into one uint8 array ``(n, S, S, 3)`` at the model's
input size, with the same geometry as inference (``resize`` then centre crop,
:func:`lwfm.episodes.preprocess`), and cached as ``.npy`` in the work
directory so that a resumed run starts in seconds. Training batches are then
augmented as tensors, the whole batch at once:

- random resized crops (area ``crop_scale``..1 of the image, aspect 3/4..4/3)
  and horizontal flips, as one ``affine_grid`` / ``grid_sample`` call;
- colour jitter: brightness, contrast and saturation factors in
  ``1 +- jitter``, applied in that order on [0, 1] pixels;
- then the model's mean / std normalisation.

Every random draw comes from the trainer's NumPy generator, so a run is
reproducible for a seed and resumable from its checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np

from .episodes import FolderSet, preprocess


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cache_key(ds: FolderSet, size: int, resize: int) -> str:
    h = hashlib.sha256(f"{os.path.abspath(ds.root)}|{size}|{resize}".encode())
    for name, files in zip(ds.names, ds.files):
        h.update(name.encode())
        h.update("\0".join(files).encode())
    return h.hexdigest()[:16]


def decode_folder(ds: FolderSet, config: Mapping[str, Any], cache_dir: str) -> np.ndarray:
    """Every image of ``ds`` (class by class) as uint8 ``(n, S, S, 3)`` at the
    model's geometry; read from / written to ``cache_dir`` (``None``: no cache)."""
    size = int(config["image_size"])
    resize = int(config.get("resize", 0))
    path = None
    if cache_dir:
        path = os.path.join(cache_dir, f"photos-{_cache_key(ds, size, resize)}.npy")
        if os.path.exists(path):
            _log(f"decoded images from the cache {path}")
            return np.load(path, mmap_mode="r")
    geometry = {"image_size": size, "resize": resize, "mean": [0.0] * 3, "std": [1.0] * 3,
                "in_channels": 3}
    total = sum(ds.class_sizes)
    out = np.empty((total, size, size, 3), dtype=np.uint8)
    k = 0
    for c, n in enumerate(ds.class_sizes):
        for i in range(n):
            unit = preprocess(ds.load_one(c, i)[None], geometry)[0]   # (3, S, S) in [0, 1]
            out[k] = np.clip(np.rint(unit.transpose(1, 2, 0) * 255.0), 0, 255)
            k += 1
        if (c + 1) % 8 == 0 or c + 1 == len(ds.class_sizes):
            _log(f"  decoded {c + 1}/{len(ds.class_sizes)} classes ({k} images)")
    if path:
        tmp = path + ".tmp.npy"
        np.save(tmp, out)
        os.replace(tmp, path)
    return out


class PhotoAugment:
    """Batch augmentation of uint8 ``(n, S, S, 3)`` photos into normalised
    float tensors ``(n, 3, S, S)``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], crop_scale: float = 0.25,
                 jitter: float = 0.4, flip: bool = True) -> None:
        if not 0.0 < crop_scale <= 1.0:
            raise ValueError(f"crop scale {crop_scale} must be in (0, 1]")
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"colour jitter {jitter} must be in [0, 1)")
        self.mean = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
        self.crop_scale, self.jitter, self.flip = crop_scale, jitter, flip

    def _crop_params(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Affine matrices ``(n, 2, 3)`` mapping output to input coordinates in
        [-1, 1]: a crop of a random area and aspect, at a random place, flipped
        at random."""
        area = rng.uniform(self.crop_scale, 1.0, size=n)
        log_ratio = rng.uniform(np.log(3 / 4), np.log(4 / 3), size=n)
        sx = np.sqrt(area * np.exp(log_ratio))
        sy = np.sqrt(area / np.exp(log_ratio))
        # A side longer than the image is cut to it and the other side keeps
        # the area (so the whole image, area 1, is never stretched).
        sx, sy = np.where(sx > 1, 1.0, np.where(sy > 1, area, sx)), \
            np.where(sy > 1, 1.0, np.where(sx > 1, area, sy))
        tx = rng.uniform(-1.0, 1.0, size=n) * (1.0 - sx)
        ty = rng.uniform(-1.0, 1.0, size=n) * (1.0 - sy)
        flip = np.where(rng.random(n) < 0.5, -1.0, 1.0) if self.flip else np.ones(n)
        theta = np.zeros((n, 2, 3), np.float32)
        theta[:, 0, 0], theta[:, 0, 2] = sx * flip, tx
        theta[:, 1, 1], theta[:, 1, 2] = sy, ty
        return theta

    def _jitter(self, x, rng: np.random.Generator):
        import torch
        n = x.shape[0]
        j = self.jitter
        b, c, s = (torch.from_numpy(rng.uniform(1 - j, 1 + j, size=(n, 1, 1, 1)).astype(np.float32))
                   for _ in range(3))
        x = x * b
        grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - grey.mean(dim=(2, 3), keepdim=True)) * c + grey.mean(dim=(2, 3), keepdim=True)
        grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - grey) * s + grey
        return x.clamp_(0.0, 1.0)

    def __call__(self, images_u8: np.ndarray, rng: np.random.Generator):
        import torch
        import torch.nn.functional as F
        x = torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float() / 255.0
        theta = torch.from_numpy(self._crop_params(x.shape[0], rng))
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                          align_corners=False)
        if self.jitter > 0:
            x = self._jitter(x, rng)
        return ((x - torch.from_numpy(self.mean)) / torch.from_numpy(self.std)).contiguous()

    def plain(self, images_u8: np.ndarray):
        """No augmentation: normalised ``(n, 3, S, S)`` (validation)."""
        import torch
        x = torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float() / 255.0
        return ((x - torch.from_numpy(self.mean)) / torch.from_numpy(self.std)).contiguous()


def channel_stats(images_u8: np.ndarray, limit: int = 4096) -> Tuple[list, list]:
    """Per-channel mean / std over (at most ``limit`` evenly spaced) images, in [0, 1]."""
    step = max(1, len(images_u8) // limit)
    sample = np.asarray(images_u8[::step], dtype=np.float64) / 255.0
    mean = sample.mean(axis=(0, 1, 2))
    std = sample.std(axis=(0, 1, 2))
    return [round(float(m), 4) for m in mean], [round(float(s), 4) for s in std]


def split_classes(ds: FolderSet, n_val: int) -> Dict[str, Any]:
    """Per-image labels, and the image ranges of the training / held-out classes
    (the last ``n_val`` classes, as for every other dataset)."""
    sizes = np.asarray(ds.class_sizes)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    n_train_images = int(sizes[:len(sizes) - n_val].sum())
    return {"labels": labels, "train_end": n_train_images, "n_train": len(sizes) - n_val}
