"""Read and write libLWFM weight files (NumPy ``.npz`` archives).

A weight file holds the model's tensors as float32 arrays under their
PyTorch state_dict names (without ``module.``; no ``num_batches_tracked``,
no training-only ``fc.*``) and its configuration as small arrays under
``config/...`` (docs/weight-format.md, section 4): strings as ASCII
``uint8`` arrays, integers as ``int32``, numbers as ``float32``, lists
(``hyperpixel_ids``, ``mean``, ``std``) as 1-D arrays.

The configuration's keys, their types, bounds and rules, the methods that
use them and their defaults are the library's: :func:`config_schema` is
``lwfm_config_schema_json()`` of libLWFM, the table the library reads
configurations with, so :func:`save_weights` refuses exactly what
``lwfm.Model`` would refuse. A writer stores every key whose schema entry
says ``write`` for the model's method and backbone (e.g. ``lwfm-spm``:
``temperature, temperature_attn, matcher_prob, learnable_matcher, top_k``;
``dn4`` and ``mml``: ``neighbor_k``; every resnet18 model:
``first_padding``); other known keys are written when present.

The schema comes from the shared library when it can be loaded (as
``lwfm.Model`` loads it: ``LWFM_LIBRARY``, the installed one, then
``liblwfm.so.0``); without it (the trainer and the converter need only NumPy
and PyTorch) from ``lwfm/_schema.py``, a copy that the tests check is
identical to the library's (regenerate it with ``python3 -m lwfm.weights
--write-schema``).
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
import sys
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "FILE_ONLY_KEYS",
    "METHODS",
    "BACKBONES",
    "CONFIG_PREFIX",
    "WeightFileError",
    "config_schema",
    "default_config",
    "normalize_tensor_names",
    "config_to_arrays",
    "arrays_to_config",
    "save_weights",
    "load_weights",
]

# The schema's format version, methods and backbones (tests/python/
# test_config_schema.py checks these constants against it).
FORMAT_VERSION = 1
METHODS = ("lwfm-spm", "dn4", "mml", "rcn")
BACKBONES = ("resnet18", "conv64f", "resnet12", "conv4")
CONFIG_PREFIX = "config/"

PathLike = Union[str, "os.PathLike[str]"]

# Keys a weight file records that are not the model's configuration: the
# format, and the calibration of its probabilities (lwfm.calibrate), which
# the reference model's logits do not depend on.
FILE_ONLY_KEYS = ("format_version", "calibration_temperature", "unknown_threshold")

# Model-building keys that the weight file does not record: the training-only
# classifier size, and the input channels (implied by the first conv weight).
_NOT_STORED = ("num_classes", "in_channels")


class WeightFileError(ValueError):
    """A weight file or configuration violates the format."""


# ----------------------------------------------------------------------------
# The schema (lwfm_config_schema_json() of the library)
# ----------------------------------------------------------------------------

_schema_lock = threading.Lock()
_schema_cache: Optional[Dict[str, Any]] = None


def _library_schema_text() -> Optional[str]:
    """The library's schema document, or None when the library cannot be
    loaded (or predates lwfm_config_schema_json)."""
    from . import _library  # the package's loader: LWFM_LIBRARY, installed, soname

    try:
        lib = _library()
        fn = lib.lwfm_config_schema_json
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_char_p
    fn.argtypes = []
    text = fn()
    if not text:
        raise WeightFileError("libLWFM returned no configuration schema")
    return text.decode("utf-8")


def _schema() -> Dict[str, Any]:
    global _schema_cache
    with _schema_lock:
        if _schema_cache is None:
            text = _library_schema_text()
            if text is None:
                from ._schema import SCHEMA_JSON
                text = SCHEMA_JSON
            _schema_cache = json.loads(text)
        return _schema_cache


def config_schema() -> Dict[str, Any]:
    """The configuration schema: ``lwfm_config_schema_json()`` of libLWFM
    parsed (a copy), or, when the library cannot be loaded, the identical
    copy shipped as ``lwfm/_schema.py``. See lwfm.h for its members:
    ``format_version``, ``methods``, ``backbones``, ``keys`` (name, type,
    bounds, use, defaults) and ``rules``."""
    return copy.deepcopy(_schema())


def _keys() -> Dict[str, Dict[str, Any]]:
    """The keys a weight file stores, by name, in the schema's order."""
    return {k["name"]: k for k in _schema()["keys"] if k["stored"]}


def _used(key: Mapping[str, Any], method: str, backbone: str) -> bool:
    return method in key["methods"] and backbone in key["backbones"]


def _default(key: Mapping[str, Any], method: str, backbone: str) -> Any:
    by = key["default"]
    if by is None:
        return None
    value = by[backbone if key["default_by"] == "backbone" else method]
    if key["type"] == "float":
        return float(value)
    if key["type"] == "float_list":
        return [float(v) for v in value]
    return copy.copy(value)


def default_config(method: str, backbone: str) -> Dict[str, Any]:
    """The library's configuration of a model whose file holds only
    ``method`` and ``backbone``: every key the model uses (the schema's
    ``methods``, ``backbones`` and ``when``) with the library's default,
    besides the calibration keys (a file records those; see
    :data:`FILE_ONLY_KEYS`)."""
    if method not in _schema()["methods"] or backbone not in _schema()["backbones"]:
        raise WeightFileError(f"unknown method / backbone {method!r} / {backbone!r}")
    config: Dict[str, Any] = {"method": method, "backbone": backbone}
    for name, key in _keys().items():
        if key["required"] or key.get("calibration") or not _used(key, method, backbone):
            continue
        when = key.get("when") or {}
        if all(config.get(k) == v for k, v in when.items()):
            config[name] = _default(key, method, backbone)
    return config


def _write_schema_module(path: Optional[str] = None) -> str:
    """Write lwfm/_schema.py from the loaded library's schema; returns the path."""
    text = _library_schema_text()
    if text is None:
        raise OSError("cannot load libLWFM (set LWFM_LIBRARY=/path/to/liblwfm.so)")
    path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "_schema.py")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(_schema_module_text(text))
    return path


def _schema_module_text(text: str) -> str:
    return ('"""The configuration schema of libLWFM, lwfm_config_schema_json(), for\n'
            'lwfm.weights without the library. Generated by `python3 -m lwfm.weights\n'
            '--write-schema`; do not edit (tests/python/test_config_schema.py checks\n'
            'that it equals the library\'s)."""\n\n'
            f"SCHEMA_JSON = r'''{text}'''\n")


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


def _list(key: str, value: Any) -> List[Any]:
    try:
        values = list(value) if not isinstance(value, (str, bytes)) else None
    except TypeError:
        values = None
    if not values:
        raise WeightFileError(f"config {key!r} must be a non-empty list, got {value!r}")
    return values


def _encode(key: Mapping[str, Any], value: Any) -> np.ndarray:
    name, kind = key["name"], key["type"]
    if kind == "string":
        return _ascii(name, value)
    if kind in ("int", "bool"):
        return _int_scalar(name, value)
    if kind == "float":
        return _float_scalar(name, value)
    if kind == "int_list":
        return np.stack([_int_scalar(name, v) for v in _list(name, value)])
    if kind == "float_list":
        return np.stack([_float_scalar(name, v) for v in _list(name, value)])
    raise WeightFileError(f"config {name!r} has schema type {kind!r}, unknown to lwfm.weights")


def config_to_arrays(config: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Validate a configuration and encode it as ``config/...`` arrays.

    ``format_version`` may be omitted (it is always written as 1). Unknown
    keys are refused and ``None`` values count as absent. The keys the
    library's schema marks ``write`` for the method and backbone are
    required; every value is checked against the schema's bounds and rules
    (:func:`config_schema`), so the library loads what this writes.
    ``num_classes`` and ``in_channels`` (keys of the reference model's
    configuration) are accepted and not stored.
    """
    keys = _keys()
    unknown = [k for k in config if k not in keys and k not in _NOT_STORED]
    if unknown:
        raise WeightFileError(f"unknown config keys: {unknown}")
    cfg = {k: v for k, v in config.items() if v is not None and k not in _NOT_STORED}
    version = _schema()["format_version"]
    if cfg.get("format_version", version) != version:
        raise WeightFileError(f"format_version must be {version}")
    cfg["format_version"] = version
    for name in ("method", "backbone"):
        if cfg.get(name) not in keys[name]["values"]:
            raise WeightFileError(f"config {name!r} must be one of {tuple(keys[name]['values'])}, "
                                  f"got {cfg.get(name)!r}")
    method, backbone = cfg["method"], cfg["backbone"]
    missing = [n for n, k in keys.items()
               if k["write"] and _used(k, method, backbone) and n not in cfg]
    if missing:
        raise WeightFileError(f"config for method {method!r} lacks {missing}")

    out = {CONFIG_PREFIX + n: _encode(k, cfg[n]) for n, k in keys.items() if n in cfg}
    _check_ranges(arrays_to_config(out))
    return out


def _check_value(key: Mapping[str, Any], value: Any) -> None:
    """One key against its schema entry (the float bounds rounded to float32,
    as the library compares float32 values)."""
    name, kind = key["name"], key["type"]
    if kind == "string":
        if value not in key["values"]:
            raise WeightFileError(f"config {name!r} must be one of {tuple(key['values'])}, "
                                  f"got {value!r}")
        return
    values = list(value) if kind.endswith("_list") else [value]
    if kind.endswith("_list"):
        lengths = key.get("lengths") or range(key["min_length"], key["max_length"] + 1)
        if len(values) not in lengths:
            raise WeightFileError(f"config {name!r} must have {' or '.join(map(str, lengths))} "
                                  f"entries, got {len(values)}: {value!r}")
    lo, hi = key["min"], key["max"]
    if kind.startswith("float"):
        lo, hi = float(np.float32(lo)), float(np.float32(hi))
    for v in values:
        if not lo <= v <= hi:
            raise WeightFileError(f"config {name!r} = {value!r} is outside [{key['min']}, "
                                  f"{key['max']}]")
    if key.get("increasing") and any(b <= a for a, b in zip(values, values[1:])):
        raise WeightFileError(f"config {name!r} must be strictly increasing, got {value!r}")


def _rule_value(cfg: Mapping[str, Any], name: str) -> Any:
    """A key's value, or the library's default for the model when absent."""
    if name in cfg:
        return cfg[name]
    return _default(_keys()[name], cfg["method"], cfg["backbone"])


def _check_rule(rule: Mapping[str, Any], cfg: Mapping[str, Any]) -> None:
    """One rule between keys of the schema (lwfm_config_schema_json() in
    lwfm.h says what each kind means)."""
    kind, name, method = rule["rule"], rule["key"], cfg["method"]
    value = _rule_value(cfg, name)
    other = _rule_value(cfg, rule["other"]) if "other" in rule else None
    if kind == "value_only_for":
        if method not in rule["methods"] and value == rule["value"]:
            raise WeightFileError(f"config {name!r} = {value!r} is for "
                                  f"{'/'.join(rule['methods'])} models only (this is {method})")
        return
    if method not in rule["methods"]:
        return
    if "if_positive" in rule and not _rule_value(cfg, rule["if_positive"]) > 0:
        return
    why = f" ({rule['why']})" if "why" in rule else ""
    if kind == "same_length":
        if rule["other"] in cfg and len(value) != len(other):
            raise WeightFileError(f"config {name!r} and {rule['other']!r} must have the same "
                                  "length")
    elif kind == "zero_or_at_least":
        if value != 0 and value < other:
            raise WeightFileError(f"config {name!r} ({value}) is smaller than "
                                  f"{rule['other']!r} ({other})")
    elif kind == "square_at_most":
        if value * value > rule["max"]:
            raise WeightFileError(f"config {name!r} = {value} gives {value * value} positions, "
                                  f"more than {rule['max']}{why}")
    elif kind == "at_least":
        if value < rule["min"]:
            raise WeightFileError(f"{method} needs config {name!r} >= {rule['min']}{why}")
    elif kind == "at_most_square_of":
        if value > other * other:
            raise WeightFileError(f"config {name!r} = {value} exceeds the {other * other} "
                                  f"positions of a {other}x{other} {rule['other']!r}{why}")
    else:
        raise WeightFileError(f"the library's configuration schema has a rule {kind!r} that "
                              "this lwfm.weights does not know; update the Python bindings")


def _check_ranges(cfg: Mapping[str, Any]) -> None:
    """Every key of a decoded configuration against the library's schema:
    its bounds, then the rules between keys."""
    keys = _keys()
    for name, value in cfg.items():
        _check_value(keys[name], value)
    for rule in _schema()["rules"]:
        _check_rule(rule, cfg)


def arrays_to_config(arrays: Mapping[str, np.ndarray]) -> Dict[str, Any]:
    """Decode ``config/...`` arrays (other names are ignored) into a dict.

    Strings become ``str``, integer scalars ``int`` (``bool`` keys such as
    ``learnable_matcher`` ``bool``), float scalars ``float`` (the float32
    value), and arrays lists. Unknown ``config/`` keys are refused.
    """
    keys = _keys()
    cfg: Dict[str, Any] = {}
    for name, value in arrays.items():
        if not name.startswith(CONFIG_PREFIX):
            continue
        key = name[len(CONFIG_PREFIX):]
        arr = np.asarray(value)
        if key not in keys:
            raise WeightFileError(f"unknown config array {name!r}")
        kind = keys[key]["type"]
        if kind == "string":
            if arr.ndim != 1 or arr.dtype != np.uint8:
                raise WeightFileError(f"{name!r} must be a 1-D uint8 array")
            try:
                cfg[key] = arr.tobytes().decode("ascii")
            except UnicodeDecodeError as exc:
                raise WeightFileError(f"{name!r} is not ASCII") from exc
        elif kind.endswith("_list"):
            if arr.ndim != 1:
                raise WeightFileError(f"{name!r} must be 1-D, got shape {arr.shape}")
            integer = kind == "int_list"
            if integer and arr.dtype.kind not in "iu":
                raise WeightFileError(f"{name!r} must be an integer array")
            cfg[key] = [int(v) for v in arr] if integer else [float(v) for v in arr]
        else:
            if arr.size != 1:
                raise WeightFileError(f"{name!r} must be a scalar, got shape {arr.shape}")
            integer = kind in ("int", "bool")
            if integer and arr.dtype.kind not in "iub":
                raise WeightFileError(f"{name!r} must be an integer")
            cfg[key] = int(arr.reshape(())) if integer else float(arr.reshape(()))
            if kind == "bool":
                if cfg[key] not in (0, 1):
                    raise WeightFileError(f"config {key!r} must be 0 or 1, got {cfg[key]}")
                cfg[key] = bool(cfg[key])
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


def _main(argv: Sequence[str]) -> int:
    if list(argv) != ["--write-schema"]:
        print("usage: python3 -m lwfm.weights --write-schema   (rewrite lwfm/_schema.py from "
              "the library that LWFM_LIBRARY names)", file=sys.stderr)
        return 2
    print(f"wrote {_write_schema_module()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
