"""Datasets, preprocessing and the reproducible episode sampler.

The same three things are implemented in C by the ``lwfm`` command
(``tools/cli``); ``tests/python/test_cli.py`` checks that both sides agree,
so ``lwfm eval --seed S`` and ``python3 -m lwfm.evaluate --seed S`` score the
very same episodes.

Episode sampler (``EpisodeSampler``)
    A splitmix64 stream seeded with ``seed``; ``below(n)`` is
    ``next() % n``. Each episode draws ``way`` distinct classes with a
    partial Fisher-Yates shuffle of ``0..n_classes-1`` (the i-th drawn class
    gets label i), then for each drawn class, in label order, ``shot + query``
    distinct examples with a partial Fisher-Yates shuffle of that class's
    ``0..n_c-1``: the first ``shot`` are supports, the rest queries. Episodes
    follow each other on one stream.

Preprocessing (``preprocess``)
    Pixels scaled to [0, 1] (8-bit / 255, 16-bit / 65535); an alpha channel
    is composited over white; grey input for an RGB model is replicated,
    RGB input for a grey model becomes luma 0.299 R + 0.587 G + 0.114 B.
    Then resize to ``resize x resize`` (``image_size`` when ``resize`` is 0)
    with antialiased bilinear interpolation (PIL's / PyTorch's
    ``antialias=True``: a triangle filter widened by the scale factor when
    shrinking), centre crop ``image_size`` (offset ``round((resize -
    image_size) / 2)``, halves to even like torchvision), and
    ``(x - mean) / std`` per channel.

Datasets
    An Omniglot ``.npz`` (boolean array ``images`` ``(classes, drawings, H,
    W)``, True = paper; other members ignored) or a folder tree with one sub-folder per class (sorted by
    name; files sorted by name; ``.png``, ``.jpg``, ``.jpeg``, ``.webp``; EXIF
    orientation applied).
"""

from __future__ import annotations

import os
from typing import Any, List, Mapping, Sequence, Tuple

import numpy as np

__all__ = ["EpisodeSampler", "preprocess", "OmniglotSet", "FolderSet", "open_dataset",
           "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
_MASK = (1 << 64) - 1


class EpisodeSampler:
    """Reproducible few-shot episodes over classes with given sizes."""

    def __init__(self, class_sizes: Sequence[int], way: int, shot: int, query: int,
                 seed: int) -> None:
        self.class_sizes = [int(n) for n in class_sizes]
        if way < 1 or shot < 1 or query < 1:
            raise ValueError("way, shot and query must be >= 1")
        if way > len(self.class_sizes):
            raise ValueError(f"{way}-way episodes need {way} classes, the data has "
                             f"{len(self.class_sizes)}")
        self.eligible = [c for c, n in enumerate(self.class_sizes) if n >= shot + query]
        if len(self.eligible) < way:
            raise ValueError(f"only {len(self.eligible)} classes have at least "
                             f"shot + query = {shot + query} examples; {way} needed")
        self.way, self.shot, self.query = int(way), int(shot), int(query)
        self.state = int(seed) & _MASK

    def next(self) -> int:
        """splitmix64."""
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.next() % n

    def _pick(self, n: int, k: int) -> List[int]:
        perm = list(range(n))
        for i in range(k):
            j = i + self.below(n - i)
            perm[i], perm[j] = perm[j], perm[i]
        return perm[:k]

    def episode(self) -> Tuple[List[Tuple[int, int]], List[int], List[Tuple[int, int]], List[int]]:
        """``(support, support_labels, query, query_labels)``; items are
        ``(class, example)`` pairs, labels ``0..way-1``."""
        classes = [self.eligible[i] for i in self._pick(len(self.eligible), self.way)]
        support, s_labels, query, q_labels = [], [], [], []
        for label, c in enumerate(classes):
            picks = self._pick(self.class_sizes[c], self.shot + self.query)
            for i in picks[:self.shot]:
                support.append((c, i))
                s_labels.append(label)
            for i in picks[self.shot:]:
                query.append((c, i))
                q_labels.append(label)
        return support, s_labels, query, q_labels


def _centre_offset(size: int, crop: int) -> int:
    return int(round((size - crop) / 2.0))


def preprocess(images: np.ndarray, config: Mapping[str, Any]) -> np.ndarray:
    """Images ``(N, H, W)`` / ``(N, H, W, ch)`` (uint8, uint16, bool or float in
    [0, 1]) -> normalised float32 ``(N, in_ch, image_size, image_size)``.

    ``config`` is a model configuration (``image_size``, ``resize``, ``mean``,
    ``std``; ``in_channels`` defaults to ``len(mean)`` when that is 1 or 3).
    """
    import torch
    import torch.nn.functional as F

    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"images must be (N, H, W[, 1-4 channels]), got {arr.shape}")
    if arr.dtype == np.uint8:
        x = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        x = arr.astype(np.float32) / 65535.0
    elif arr.dtype == np.bool_:
        x = arr.astype(np.float32)
    else:
        x = arr.astype(np.float32)
    ch = x.shape[-1]
    if ch in (2, 4):
        alpha = x[..., -1:]
        x = x[..., :-1] * alpha + (1.0 - alpha)
        ch -= 1
    in_ch = int(config.get("in_channels", 3 if len(config["mean"]) == 3 else 1))
    if in_ch == 1 and ch == 3:
        x = 0.299 * x[..., 0:1] + 0.587 * x[..., 1:2] + 0.114 * x[..., 2:3]
    elif in_ch == 3 and ch == 1:
        x = np.repeat(x, 3, axis=-1)
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    size = int(config["image_size"])
    resize = int(config.get("resize", 0)) or size
    if t.shape[-2:] != (resize, resize):
        t = F.interpolate(t, size=(resize, resize), mode="bilinear", align_corners=False,
                          antialias=True)
    top = _centre_offset(resize, size)
    t = t[:, :, top:top + size, top:top + size]
    mean = torch.tensor(config["mean"], dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.tensor(config["std"], dtype=torch.float32).reshape(1, -1, 1, 1)
    return ((t - mean) / std).contiguous().numpy()


class OmniglotSet:
    """An Omniglot archive: boolean ``(classes, drawings, H, W)``, True = paper."""

    def __init__(self, path: str) -> None:
        with np.load(path, allow_pickle=False) as archive:
            names = [n for n in archive.files if archive[n].ndim == 4]
            if "images" in archive.files:
                names = ["images"]
            if len(names) != 1:
                raise ValueError(f"{path}: expected an 'images' array (classes, drawings, H, W), "
                                 f"found {archive.files}")
            data = archive[names[0]]
        if data.ndim != 4:
            raise ValueError(f"{path}: expected (classes, drawings, H, W), got {data.shape}")
        self.data = data
        self.class_sizes = [data.shape[1]] * data.shape[0]
        self.names = [f"class{c:04d}" for c in range(data.shape[0])]

    def load(self, items: Sequence[Tuple[int, int]]) -> np.ndarray:
        """Raw images of ``(class, example)`` items: bool ``(n, H, W)``."""
        return np.stack([self.data[c, i] for c, i in items])


class FolderSet:
    """A folder with one sub-folder of images per class."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.names = sorted(d for d in os.listdir(root)
                            if os.path.isdir(os.path.join(root, d)))
        self.files: List[List[str]] = []
        for name in self.names:
            folder = os.path.join(root, name)
            self.files.append(sorted(f for f in os.listdir(folder)
                                     if f.lower().endswith(IMAGE_EXTENSIONS)))
        keep = [i for i, f in enumerate(self.files) if f]
        self.names = [self.names[i] for i in keep]
        self.files = [self.files[i] for i in keep]
        if not self.names:
            raise ValueError(f"{root}: no class folders with images")
        self.class_sizes = [len(f) for f in self.files]

    def path(self, c: int, i: int) -> str:
        return os.path.join(self.root, self.names[c], self.files[c][i])

    def load_one(self, c: int, i: int) -> np.ndarray:
        """Decoded pixels, as the ``lwfm`` command decodes them: 8-bit grey /
        grey+alpha / RGB / RGBA, 16-bit grey as uint16, palette and tRNS
        transparency expanded. (PIL reduces 16-bit RGB to 8 bits; the C
        decoder keeps 16.)"""
        from PIL import Image  # python3-pil; only needed for folder datasets
        from PIL import ImageOps
        with Image.open(self.path(c, i)) as img:
            img.load()
            img = ImageOps.exif_transpose(img)  # as shown, as the lwfm command
            if img.mode in ("I", "I;16", "I;16B", "I;16L"):
                return np.asarray(img).astype(np.uint16)
            if img.mode == "P" or "transparency" in img.info:
                img = img.convert("LA" if img.mode in ("L", "1") else "RGBA")
            elif img.mode not in ("L", "LA", "RGB", "RGBA"):
                img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
            return np.asarray(img)

    def load(self, items: Sequence[Tuple[int, int]]) -> List[np.ndarray]:
        return [self.load_one(c, i) for c, i in items]


def open_dataset(path: str):
    """``OmniglotSet`` for a ``.npz`` file, ``FolderSet`` for a directory."""
    if os.path.isdir(path):
        return FolderSet(path)
    return OmniglotSet(path)
