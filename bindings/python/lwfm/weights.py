"""Read and write libLWFM weight files (NumPy ``.npz`` archives).

A weight file holds the model's tensors as float32 arrays under their
PyTorch state_dict names (without ``module.``; no ``num_batches_tracked``,
no training-only ``fc.*``) and its configuration as small arrays under
``config/...``:

==========================  ==============  ==========================================
name                        dtype, shape    meaning
==========================  ==============  ==========================================
config/format_version       int32 ()        1
config/method               uint8 (n,)      ASCII: lwfm-spm, dn4, mml, rcn
config/backbone             uint8 (n,)      ASCII: resnet18, conv64f, resnet12, conv4
config/first_padding        int32 ()        resnet18 stem padding
config/hyperpixel_ids       int32 (L,)      tapped block ids
config/feature_size         int32 ()        pooled size fs (0 = native size)
config/temperature          float32 ()      logit temperature
config/temperature_attn     float32 ()      attention temperature
config/matcher_prob         float32 ()      SPM weight (0 disables SPM)
config/calibration_temperature float32 ()   probabilities = softmax(logits / it) (optional, 1)
config/unknown_threshold    float32 ()      "none of these" below this top probability (optional)
config/learnable_matcher    int32 ()        0 / 1
config/top_k                int32 ()        SPM matched pairs summed
config/neighbor_k           int32 ()        dn4 / mml nearest neighbours
config/distance             uint8 (n,)      mml distribution distance: wass (default), kl, w2
config/batch_norm           uint8 (n,)      rcn BatchNorm: running (default) or batch (statistics
                                            of each batch, the authors' transductive protocol)
config/query_batch          int32 ()        rcn with batch_norm 'batch': queries per batch (25)
config/image_size           int32 ()        network input size
config/resize               int32 ()        resize before the centre crop (0: none)
config/mean, config/std     float32 (3,)    per-channel normalisation (or (1,))
==========================  ==============  ==========================================

Which keys a method needs: all methods need ``method, backbone,
hyperpixel_ids, feature_size, image_size, resize, mean, std``; ``lwfm-spm``
also ``temperature, temperature_attn, matcher_prob, learnable_matcher,
top_k`` and, for resnet18, ``first_padding``; ``dn4`` and ``mml`` also
``neighbor_k``. Other known keys are written when present.

This module needs only NumPy.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple, Union

import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "FILE_ONLY_KEYS",
    "METHODS",
    "BACKBONES",
    "CONFIG_PREFIX",
    "WeightFileError",
    "normalize_tensor_names",
    "config_to_arrays",
    "arrays_to_config",
    "save_weights",
    "load_weights",
]

FORMAT_VERSION = 1
METHODS = ("lwfm-spm", "dn4", "mml", "rcn")
BACKBONES = ("resnet18", "conv64f", "resnet12", "conv4")
CONFIG_PREFIX = "config/"

PathLike = Union[str, "os.PathLike[str]"]

# Config keys by kind.
_STRING_KEYS = ("method", "backbone", "distance", "batch_norm")
_INT_KEYS = ("first_padding", "feature_size", "learnable_matcher", "top_k", "neighbor_k",
             "query_batch", "image_size", "resize")
_FLOAT_KEYS = ("temperature", "temperature_attn", "matcher_prob", "calibration_temperature",
               "unknown_threshold")
_INT_ARRAY_KEYS = ("hyperpixel_ids",)
_FLOAT_ARRAY_KEYS = ("mean", "std")
# All keys, in the order they are written.
_KNOWN_KEYS = ("format_version", "method", "backbone", "first_padding", "hyperpixel_ids",
               "feature_size", "temperature", "temperature_attn", "matcher_prob",
               "learnable_matcher", "top_k", "neighbor_k", "distance", "batch_norm", "query_batch",
               "calibration_temperature", "unknown_threshold", "image_size", "resize", "mean",
               "std")

# Keys a weight file records that are not the model's configuration: the
# format, and the calibration of its probabilities (lwfm.calibrate), which
# the reference model's logits do not depend on.
FILE_ONLY_KEYS = ("format_version", "calibration_temperature", "unknown_threshold")

# Model-building keys that the weight file does not record: the training-only
# classifier size, and the input channels (implied by the first conv weight).
_NOT_STORED = ("num_classes", "in_channels")

_REQUIRED_COMMON = ("method", "backbone", "hyperpixel_ids", "feature_size", "image_size",
                    "resize", "mean", "std")
_REQUIRED_BY_METHOD = {
    "lwfm-spm": ("temperature", "temperature_attn", "matcher_prob", "learnable_matcher",
                 "top_k"),
    "dn4": ("neighbor_k",),
    "mml": ("neighbor_k",),
    "rcn": (),
}


class WeightFileError(ValueError):
    """A weight file or configuration violates the format."""


# ----------------------------------------------------------------------------
# Tensors
# ----------------------------------------------------------------------------

def _is_dropped(name: str) -> bool:
    return name.endswith("num_batches_tracked") or name.startswith("fc.")


def normalize_tensor_names(state_dict: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Float32 copies of the tensors to store, in the input order.

    Strips a leading ``module.``, drops ``*num_batches_tracked`` and
    ``fc.*``, and refuses names under ``config/``, duplicate names after
    stripping, non-numeric arrays and non-finite values.
    """
    out: Dict[str, np.ndarray] = {}
    for raw_name, value in state_dict.items():
        if not isinstance(raw_name, str) or not raw_name:
            raise WeightFileError(f"tensor names must be non-empty strings, got {raw_name!r}")
        name = raw_name[len("module."):] if raw_name.startswith("module.") else raw_name
        if _is_dropped(name):
            continue
        if name.startswith(CONFIG_PREFIX):
            raise WeightFileError(f"tensor name {raw_name!r} collides with the config namespace")
        if name in out:
            raise WeightFileError(f"duplicate tensor name {name!r} (after stripping 'module.')")
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiub":
            raise WeightFileError(f"tensor {name!r} has non-numeric dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.all(np.isfinite(arr)):
            raise WeightFileError(f"tensor {name!r} has non-finite values")
        out[name] = arr
    return out


# ----------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------

def _ascii(key: str, value: Any) -> np.ndarray:
    if not isinstance(value, str) or not value:
        raise WeightFileError(f"config {key!r} must be a non-empty string, got {value!r}")
    try:
        data = value.encode("ascii")
    except UnicodeEncodeError as exc:
        raise WeightFileError(f"config {key!r} must be ASCII, got {value!r}") from exc
    return np.frombuffer(data, dtype=np.uint8).copy()


def _int_scalar(key: str, value: Any) -> np.ndarray:
    if isinstance(value, (bool, np.bool_)):
        value = int(value)
    if isinstance(value, (float, np.floating)) or not isinstance(value, (int, np.integer)):
        raise WeightFileError(f"config {key!r} must be an integer, got {value!r}")
    if not -2**31 <= int(value) < 2**31:
        raise WeightFileError(f"config {key!r} = {value} does not fit int32")
    return np.array(int(value), dtype=np.int32)


def _float_scalar(key: str, value: Any) -> np.ndarray:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise WeightFileError(f"config {key!r} must be a number, got {value!r}")
    arr = np.array(value, dtype=np.float32)
    if not np.isfinite(arr):
        raise WeightFileError(f"config {key!r} must be finite, got {value!r}")
    return arr


def config_to_arrays(config: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Validate a configuration and encode it as ``config/...`` arrays.

    ``format_version`` may be omitted (it is always written as 1). Unknown
    keys are refused and ``None`` values count as absent; see the module
    docstring for the keys each method needs. ``num_classes`` and ``in_channels`` (keys of the
    reference model's configuration) are accepted and not stored.
    """
    unknown = [k for k in config if k not in _KNOWN_KEYS and k not in _NOT_STORED]
    if unknown:
        raise WeightFileError(f"unknown config keys: {unknown}")
    cfg = {k: v for k, v in config.items() if v is not None and k not in _NOT_STORED}
    if cfg.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise WeightFileError(f"format_version must be {FORMAT_VERSION}")
    method = cfg.get("method")
    if method not in METHODS:
        raise WeightFileError(f"config 'method' must be one of {METHODS}, got {method!r}")
    if cfg.get("backbone") not in BACKBONES:
        raise WeightFileError(
            f"config 'backbone' must be one of {BACKBONES}, got {cfg.get('backbone')!r}")
    required = _REQUIRED_COMMON + _REQUIRED_BY_METHOD[method]
    if method == "lwfm-spm" and cfg["backbone"] == "resnet18":
        required += ("first_padding",)
    missing = [k for k in required if k not in cfg]
    if missing:
        raise WeightFileError(f"config for method {method!r} lacks {missing}")

    out: Dict[str, np.ndarray] = {
        CONFIG_PREFIX + "format_version": np.array(FORMAT_VERSION, dtype=np.int32)}
    for key in _KNOWN_KEYS[1:]:
        if key not in cfg:
            continue
        value = cfg[key]
        if key in _STRING_KEYS:
            arr = _ascii(key, value)
        elif key in _INT_KEYS:
            arr = _int_scalar(key, value)
        elif key in _FLOAT_KEYS:
            arr = _float_scalar(key, value)
        elif key in _INT_ARRAY_KEYS:
            values = list(value) if not isinstance(value, (str, bytes)) else None
            if not values:
                raise WeightFileError(f"config {key!r} must be a non-empty list of integers")
            arr = np.stack([_int_scalar(key, v) for v in values])
        else:
            values = list(value) if not isinstance(value, (str, bytes)) else None
            if not values or len(values) not in (1, 3):
                raise WeightFileError(f"config {key!r} must hold 1 or 3 numbers, got {value!r}")
            arr = np.stack([_float_scalar(key, v) for v in values])
        out[CONFIG_PREFIX + key] = arr

    _check_ranges(arrays_to_config(out))
    return out


def _check_ranges(cfg: Mapping[str, Any]) -> None:
    def positive(key: str) -> None:
        if key in cfg and not cfg[key] > 0:
            raise WeightFileError(f"config {key!r} must be positive, got {cfg[key]!r}")

    def non_negative(key: str) -> None:
        if key in cfg and cfg[key] < 0:
            raise WeightFileError(f"config {key!r} must be >= 0, got {cfg[key]!r}")

    for key in ("temperature", "temperature_attn", "top_k", "neighbor_k", "image_size",
                "calibration_temperature"):
        positive(key)
    if "unknown_threshold" in cfg and not 0.0 <= cfg["unknown_threshold"] <= 1.0:
        raise WeightFileError(
            f"config 'unknown_threshold' must be in [0, 1], got {cfg['unknown_threshold']!r}")
    for key in ("first_padding", "feature_size", "matcher_prob", "resize"):
        non_negative(key)
    if any(i < 0 for i in cfg["hyperpixel_ids"]):
        raise WeightFileError(f"config 'hyperpixel_ids' must be >= 0, got {cfg['hyperpixel_ids']}")
    if len(set(cfg["hyperpixel_ids"])) != len(cfg["hyperpixel_ids"]):
        raise WeightFileError(
            f"config 'hyperpixel_ids' must be distinct, got {cfg['hyperpixel_ids']}")
    if "distance" in cfg and cfg["distance"] not in ("wass", "kl", "w2"):
        raise WeightFileError(f"config 'distance' must be wass, kl or w2, got {cfg['distance']!r}")
    if "batch_norm" in cfg and cfg["batch_norm"] not in ("running", "batch"):
        raise WeightFileError(
            f"config 'batch_norm' must be running or batch, got {cfg['batch_norm']!r}")
    if cfg.get("batch_norm") == "batch" and cfg["method"] != "rcn":
        raise WeightFileError("config 'batch_norm' = 'batch' is for rcn models only")
    if "query_batch" in cfg and not 1 <= cfg["query_batch"] <= 4096:
        raise WeightFileError(f"config 'query_batch' must be in 1..4096, got {cfg['query_batch']}")
    if any(s <= 0 for s in cfg["std"]):
        raise WeightFileError(f"config 'std' must be positive, got {cfg['std']}")
    if len(cfg["mean"]) != len(cfg["std"]):
        raise WeightFileError("config 'mean' and 'std' must have the same length")


def arrays_to_config(arrays: Mapping[str, np.ndarray]) -> Dict[str, Any]:
    """Decode ``config/...`` arrays (other names are ignored) into a dict.

    Strings become ``str``, integer scalars ``int`` (``learnable_matcher``
    ``bool``), float scalars ``float`` (the float32 value), and arrays
    lists. Unknown ``config/`` keys are refused.
    """
    cfg: Dict[str, Any] = {}
    for name, value in arrays.items():
        if not name.startswith(CONFIG_PREFIX):
            continue
        key = name[len(CONFIG_PREFIX):]
        arr = np.asarray(value)
        if key not in _KNOWN_KEYS:
            raise WeightFileError(f"unknown config array {name!r}")
        if key in _STRING_KEYS:
            if arr.ndim != 1 or arr.dtype != np.uint8:
                raise WeightFileError(f"{name!r} must be a 1-D uint8 array")
            try:
                cfg[key] = arr.tobytes().decode("ascii")
            except UnicodeDecodeError as exc:
                raise WeightFileError(f"{name!r} is not ASCII") from exc
        elif key in _INT_ARRAY_KEYS or key in _FLOAT_ARRAY_KEYS:
            if arr.ndim != 1:
                raise WeightFileError(f"{name!r} must be 1-D, got shape {arr.shape}")
            integer = key in _INT_ARRAY_KEYS
            if integer and arr.dtype.kind not in "iu":
                raise WeightFileError(f"{name!r} must be an integer array")
            cfg[key] = [int(v) for v in arr] if integer else [float(v) for v in arr]
        else:
            if arr.size != 1:
                raise WeightFileError(f"{name!r} must be a scalar, got shape {arr.shape}")
            integer = key in _INT_KEYS or key == "format_version"
            if integer and arr.dtype.kind not in "iub":
                raise WeightFileError(f"{name!r} must be an integer")
            cfg[key] = int(arr.reshape(())) if integer else float(arr.reshape(()))
    if "learnable_matcher" in cfg:
        if cfg["learnable_matcher"] not in (0, 1):
            raise WeightFileError(f"config 'learnable_matcher' must be 0 or 1, "
                                  f"got {cfg['learnable_matcher']}")
        cfg["learnable_matcher"] = bool(cfg["learnable_matcher"])
    return cfg


# ----------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------

def save_weights(path: PathLike, state_dict_numpy: Mapping[str, Any],
                 config: Mapping[str, Any], compressed: bool = True) -> Dict[str, np.ndarray]:
    """Write a weight file atomically (temporary file + rename).

    ``state_dict_numpy`` maps state_dict names to arrays (anything
    ``np.asarray`` accepts); names are normalised by
    :func:`normalize_tensor_names`. ``config`` is validated by
    :func:`config_to_arrays`. ``compressed`` selects deflate (``True``) or
    stored members. Returns the tensors as written.
    """
    tensors = normalize_tensor_names(state_dict_numpy)
    if not tensors:
        raise WeightFileError("no tensors to save")
    arrays = config_to_arrays(config)
    arrays.update(tensors)

    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                    dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            (np.savez_compressed if compressed else np.savez)(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return tensors


def load_weights(path: PathLike) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Read a weight file: ``(tensors, config)``.

    ``tensors`` maps names to arrays in file order; ``config`` is decoded by
    :func:`arrays_to_config` and must carry ``format_version`` 1.
    """
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise WeightFileError(f"{path}: not a valid .npz weight file ({exc})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise WeightFileError(f"{path}: a single .npy array, not an .npz weight file")
    with archive:
        arrays = {name: archive[name] for name in archive.files}
    config = arrays_to_config(arrays)
    if config.get("format_version") != FORMAT_VERSION:
        raise WeightFileError(
            f"{path}: format_version {config.get('format_version')!r}, expected {FORMAT_VERSION}")
    tensors = {k: v for k, v in arrays.items() if not k.startswith(CONFIG_PREFIX)}
    return tensors, config
