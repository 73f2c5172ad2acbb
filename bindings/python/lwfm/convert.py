"""Convert a PyTorch checkpoint into a libLWFM weight file.

Usage::

    python3 -m lwfm.convert --method lwfm-spm [--backbone resnet18] \\
        [--hyperpixel-ids 7 8] [--feature-size 3] [--temperature 0.2] \\
        [--temperature-attn 5.0] [--matcher-prob 0.25] [--top-k 1] \\
        [--no-learnable-matcher] [--first-padding 3] [--image-size 84] \\
        [--resize 92] [--mean M M M] [--std S S S] INPUT.pth OUTPUT.npz
    python3 -m lwfm.convert --method dn4 [--neighbor-k 3] INPUT.pth.tar OUTPUT.npz
    python3 -m lwfm.convert --method mml [--neighbor-k 1] [--distance wass|kl|w2] \
        INPUT.pth.tar OUTPUT.npz

The checkpoint may be ``{'params': sd}`` (the LWFM-SPM reference trainer),
``{'state_dict': sd}`` (DN4 / MML releases) or a bare state_dict; a leading
``module.`` (``nn.DataParallel``) is stripped. A checkpoint holds no
hyperparameters, so they come from the options (defaults: spec section 4 for
lwfm-spm, the released checkpoints' settings for dn4 and mml) and are recorded in
the weight file.

The tensors are checked against the PyTorch reference model (``lwfm_ref``)
built for that configuration, in the model's state_dict order
(``num_batches_tracked`` and the training-only ``fc.*`` are ignored). The
first missing, unexpected or wrongly shaped key is reported and nothing is
written (exit status 2). The output is written to a temporary file and
renamed, so a failed run never leaves a partial file.

Checkpoints are first read with torch's weights-only unpickler. The authors'
DN4 files also pickle non-tensor objects and need full unpickling: the
converter then falls back to it with a note on stderr (``--weights-only``
refuses instead). Only convert checkpoints from a trusted source.

Exit status: 0 success, 1 input/output error, 2 usage error or a checkpoint
that does not match the configuration. Messages go to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections import OrderedDict
from typing import Any, Dict, Optional, Sequence, Tuple

from .weights import WeightFileError, config_schema, config_to_arrays, default_config, save_weights

__all__ = ["ConversionError", "extract_state_dict", "check_state_dict", "build_config",
           "convert", "main"]

# Defaults: the library's (its configuration schema, lwfm.weights.default_config;
# for lwfm-spm, spec section 4), except where the released DN4 / MML
# checkpoints were trained otherwise (shared/checkpoints/README.md): Conv-64F's
# last block at its native size, 84 x 84 images without a resize, normalised
# with 0.5.
_RELEASE_SETTINGS: Dict[str, Any] = {
    "backbone": "conv64f", "hyperpixel_ids": [3], "feature_size": 0, "image_size": 84,
    "resize": 0, "mean": [0.5] * 3, "std": [0.5] * 3,
}


def _method_defaults() -> Dict[str, Dict[str, Any]]:
    out = {"lwfm-spm": default_config("lwfm-spm", "resnet18")}
    for method in ("dn4", "mml"):
        out[method] = dict(default_config(method, "conv64f"), **_RELEASE_SETTINGS)
    for config in out.values():
        del config["method"]
    return out


_DEFAULTS: Dict[str, Dict[str, Any]] = _method_defaults()
# Options each method accepts (besides the preprocessing ones, accepted by all).
_METHOD_OPTIONS = {
    "lwfm-spm": {"backbone", "first_padding", "hyperpixel_ids", "feature_size", "temperature",
                 "temperature_attn", "matcher_prob", "learnable_matcher", "top_k"},
    "dn4": {"neighbor_k"},
    "mml": {"neighbor_k", "distance"},
}
_PREPROCESSING = {"image_size", "resize", "mean", "std"}
_ALL_OPTIONS = set().union(*_METHOD_OPTIONS.values()) | _PREPROCESSING


class ConversionError(Exception):
    """The checkpoint or the options do not describe a convertible model."""


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def _import_reference():
    """Import ``lwfm_ref``, the reference model installed beside ``lwfm``."""
    try:
        return importlib.import_module("lwfm_ref")
    except ImportError as exc:
        raise ConversionError(
            "cannot import the reference model package 'lwfm_ref' (it is installed "
            "with lwfm; in a checkout, put bindings/python on PYTHONPATH)") from exc


# ----------------------------------------------------------------------------
# Checkpoint handling
# ----------------------------------------------------------------------------

def _load_checkpoint(path: str, weights_only: bool) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError):
        raise
    except Exception as exc:  # the restricted unpickler refuses some objects
        if weights_only:
            raise ConversionError(
                f"{path}: cannot be loaded with weights_only=True ({exc})") from exc
        _log(f"note: {path} needs full unpickling (it holds objects other than tensors); "
             "convert only checkpoints from a trusted source (--weights-only refuses this)")
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except (OSError, EOFError):
            raise
        except Exception as exc2:
            raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({exc2})") from exc2


def extract_state_dict(checkpoint: Any) -> "OrderedDict[str, Any]":
    """The state_dict inside a checkpoint, with ``module.`` stripped.

    Accepts ``{'params': sd}``, ``{'state_dict': sd}`` or a bare state_dict
    (a mapping whose values are all tensors).
    """
    import torch

    if not isinstance(checkpoint, dict):
        raise ConversionError(f"checkpoint is a {type(checkpoint).__name__}, not a dict")
    if "params" in checkpoint:
        sd = checkpoint["params"]
    elif "state_dict" in checkpoint:
        sd = checkpoint["state_dict"]
    elif checkpoint and all(torch.is_tensor(v) for v in checkpoint.values()):
        sd = checkpoint
    else:
        raise ConversionError(
            "checkpoint has neither 'params' nor 'state_dict' and is not a bare state_dict "
            f"(top-level keys: {sorted(map(str, checkpoint))[:10]})")
    if not isinstance(sd, dict):
        raise ConversionError(f"the checkpoint's state_dict is a {type(sd).__name__}")

    out: "OrderedDict[str, Any]" = OrderedDict()
    for key, value in sd.items():
        if not isinstance(key, str):
            raise ConversionError(f"state_dict key {key!r} is not a string")
        name = key[len("module."):] if key.startswith("module.") else key
        if name in out:
            raise ConversionError(f"duplicate key {name!r} after stripping 'module.'")
        if not torch.is_tensor(value):
            raise ConversionError(f"state_dict entry {key!r} is a {type(value).__name__}, "
                                  "not a tensor")
        out[name] = value
    return out


def _ignored(name: str) -> bool:
    return name.endswith("num_batches_tracked") or name.startswith("fc.")


def check_state_dict(expected: "OrderedDict[str, Tuple[int, ...]]",
                     state_dict: "OrderedDict[str, Any]") -> None:
    """Raise :class:`ConversionError` naming the first offending key.

    ``expected`` maps the reference model's keys to shapes, in model order.
    Missing keys and wrong shapes are found in that order, then unexpected
    keys in checkpoint order. Ignored keys (``num_batches_tracked``,
    ``fc.*``) are skipped on both sides.
    """
    for name, shape in expected.items():
        if _ignored(name):
            continue
        if name not in state_dict:
            raise ConversionError(f"missing key {name!r} (expected shape {shape})")
        got = tuple(state_dict[name].shape)
        if got != tuple(shape):
            raise ConversionError(
                f"wrong shape for key {name!r}: checkpoint {got}, model {tuple(shape)}")
        if not state_dict[name].is_floating_point():
            raise ConversionError(
                f"key {name!r} has dtype {state_dict[name].dtype}, expected floating point")
    for name in state_dict:
        if not _ignored(name) and name not in expected:
            raise ConversionError(f"unexpected key {name!r} (not in the {len(expected)}-key "
                                  "reference model for this configuration)")


# ----------------------------------------------------------------------------
# Configuration and reference model
# ----------------------------------------------------------------------------

def build_config(method: str, options: Dict[str, Any]) -> Dict[str, Any]:
    """Method defaults overridden by the given options (None = not given),
    checked against the library's configuration schema."""
    if method not in _DEFAULTS:
        raise ConversionError(f"unsupported method {method!r}")
    given = {k: v for k, v in options.items() if v is not None}
    unknown = set(given) - _ALL_OPTIONS
    if unknown:
        raise ConversionError(f"unknown options {sorted(unknown)}")
    foreign = sorted(set(given) - _METHOD_OPTIONS[method] - _PREPROCESSING)
    if foreign:
        flags = ", ".join("--" + k.replace("_", "-") for k in foreign)
        raise ConversionError(f"option(s) {flags} not applicable to --method {method}")
    config: Dict[str, Any] = {"method": method}
    config.update(_DEFAULTS[method])
    config.update(given)
    try:  # the library's bounds and rules (lwfm.weights), before reading a checkpoint
        config_to_arrays(config)
    except WeightFileError as exc:
        raise ConversionError(f"invalid configuration: {exc}") from exc
    return config


def _reference_model(config: Dict[str, Any], train_way: int = 5):
    ref = _import_reference()
    try:
        if config["method"] == "lwfm-spm":
            model_config = {k: v for k, v in config.items() if k in ref.DEFAULT_CONFIG}
            return ref.LWFMSPM(model_config)
        if config["backbone"] != "conv64f":
            raise ConversionError(f"{config['method']} checkpoints use the conv64f backbone")
        if config["method"] == "mml":
            return ref.MML(config, train_way=train_way)
        return ref.Conv64F(taps=config["hyperpixel_ids"], feature_size=config["feature_size"])
    except ValueError as exc:
        raise ConversionError(f"invalid configuration: {exc}") from exc


_BACKBONE_PREFIX = "feature_extractor."


def backbone_state_dict(expected: "OrderedDict[str, Tuple[int, ...]]",
                        state_dict: "OrderedDict[str, Any]") -> "OrderedDict[str, Any]":
    """For ``--backbone-only``: the backbone tensors of an LWFM-SPM model
    (``feature_extractor.*``) taken from another method's checkpoint, where
    they may lack the prefix (DN4's ``features.*``); every other key of the
    checkpoint is dropped. The model must need nothing else."""
    head = [k for k in expected if not k.startswith(_BACKBONE_PREFIX)]
    if head:
        raise ConversionError(
            f"--backbone-only leaves {head[0]!r} without weights: only the backbone comes from "
            "the checkpoint, so the model must have no learned head (add --no-learnable-matcher)")
    out: "OrderedDict[str, Any]" = OrderedDict()
    for name in expected:
        short = name[len(_BACKBONE_PREFIX):]
        if name in state_dict and short in state_dict:
            raise ConversionError(f"the checkpoint holds both {name!r} and {short!r}")
        key = name if name in state_dict else short
        if key in state_dict:
            out[name] = state_dict[key]
    return out


def convert(input_path: str, output_path: str, method: str, options: Dict[str, Any],
            compressed: bool = True, weights_only: bool = False,
            backbone_only: bool = False) -> Dict[str, Any]:
    """Convert one checkpoint; returns a summary dict. Raises
    :class:`ConversionError` (bad checkpoint / options) or ``OSError``.

    ``backbone_only`` (lwfm-spm): take only the backbone from the checkpoint
    (e.g. DN4's trained Conv-64F) for a model without learned head
    parameters (``learnable_matcher`` false): a training-free LWFM-SPM."""
    config = build_config(method, options)
    if backbone_only and method != "lwfm-spm":
        raise ConversionError("--backbone-only applies to --method lwfm-spm")
    _log(f"reading {input_path}")
    state_dict = extract_state_dict(_load_checkpoint(input_path, weights_only))
    n_read = len(state_dict)
    train_way = 5
    norm = state_dict.get("classifier.Norm_layer.weight")
    if method == "mml" and norm is not None and norm.dim() == 1 and norm.numel() % 3 == 0:
        train_way = norm.numel() // 3      # the fusion layer's class slots
    model = _reference_model(config, train_way)
    expected = OrderedDict((k, tuple(v.shape)) for k, v in model.state_dict().items()
                           if not _ignored(k))
    if backbone_only:
        state_dict = backbone_state_dict(expected, state_dict)
    check_state_dict(expected, state_dict)

    tensors = OrderedDict((k, state_dict[k].detach().cpu().float().numpy()) for k in expected)
    try:
        save_weights(output_path, tensors, config, compressed=compressed)
    except WeightFileError as exc:
        raise ConversionError(str(exc)) from exc
    n_values = sum(t.size for t in tensors.values())
    dropped = n_read - len(tensors)
    return {"config": config, "tensors": len(tensors), "values": n_values,
            "dropped": dropped, "output": output_path}


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------

def _help(text: str, key: str, default: str = "") -> str:
    """Help text with the library's bounds of the key (its configuration
    schema) and the converter's default for lwfm-spm (or `default`)."""
    k = next(k for k in config_schema()["keys"] if k["name"] == key)
    default = default or " ".join(map(str, _as_list(_DEFAULTS["lwfm-spm"][key])))
    return f"{text} ({default}; {k['min']}..{k['max']})"


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _parser() -> argparse.ArgumentParser:
    schema = {k["name"]: k for k in config_schema()["keys"]}
    p = argparse.ArgumentParser(
        prog="python3 -m lwfm.convert",
        usage="%(prog)s --method {lwfm-spm,dn4,mml} [options] INPUT OUTPUT",
        description="Convert a PyTorch checkpoint (LWFM-SPM reference trainer, DN4 or MML "
                    "release) "
                    "into a libLWFM .npz weight file.")
    p.add_argument("--method", required=True, choices=sorted(_DEFAULTS),
                   help="model type of the checkpoint")
    g = p.add_argument_group("lwfm-spm model (defaults: spec section 4)")
    # the backbones the reference model builds for lwfm-spm (lwfm_ref)
    g.add_argument("--backbone", choices=["resnet18", "conv64f"])
    g.add_argument("--first-padding", type=int, metavar="N",
                   help=_help("resnet18 stem padding", "first_padding"))
    g.add_argument("--hyperpixel-ids", nargs="+", metavar="ID",
                   help=_help("tapped block ids, strictly increasing", "hyperpixel_ids"))
    g.add_argument("--feature-size", type=int, metavar="FS",
                   help=_help("pooled size fs, 0 = native", "feature_size"))
    g.add_argument("--temperature", type=float, metavar="T",
                   help=_help("logit temperature", "temperature"))
    g.add_argument("--temperature-attn", type=float, metavar="T",
                   help=_help("attention temperature", "temperature_attn",
                              f"{_DEFAULTS['lwfm-spm']['temperature_attn']}; 2.0 for CUB models"))
    g.add_argument("--matcher-prob", type=float, metavar="W",
                   help=_help("SPM weight, 0 disables SPM", "matcher_prob",
                              f"{_DEFAULTS['lwfm-spm']['matcher_prob']}; 1.0 for CIFAR-FS/CUB"))
    g.add_argument("--top-k", type=int, metavar="K", help=_help("matched pairs summed", "top_k"))
    g.add_argument("--no-learnable-matcher", dest="learnable_matcher", action="store_const",
                   const=False, default=None, help="the model has no matcher MLPs")
    g.add_argument("--backbone-only", action="store_true",
                   help="take only the backbone from INPUT (e.g. a DN4 checkpoint's Conv-64F), "
                        "for a model without learned head (needs --no-learnable-matcher)")
    g = p.add_argument_group("dn4 / mml model")
    g.add_argument("--neighbor-k", type=int, metavar="K",
                   help=_help("nearest neighbours", "neighbor_k",
                              f"dn4 {_DEFAULTS['dn4']['neighbor_k']}, "
                              f"mml {_DEFAULTS['mml']['neighbor_k']}"))
    g.add_argument("--distance", choices=schema["distance"]["values"],
                   help="mml distribution-level distance: the authors' Wasserstein surrogate "
                        "(wass, default), KL divergence (kl) or the exact 2-Wasserstein "
                        "distance (w2)")
    g = p.add_argument_group("preprocessing (recorded in the weight file)")
    g.add_argument("--image-size", type=int, metavar="N",
                   help=_help("network input size", "image_size"))
    g.add_argument("--resize", type=int, metavar="N",
                   help="resize before centre crop, 0 = straight to image size "
                        "(lwfm-spm 92, dn4 0)")
    g.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"),
                   help="per-channel mean (miniImageNet for lwfm-spm, 0.5 for dn4)")
    g.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"),
                   help="per-channel std (miniImageNet for lwfm-spm, 0.5 for dn4)")
    g = p.add_argument_group("output")
    g.add_argument("--uncompressed", action="store_true",
                   help="store the arrays without deflate compression")
    g.add_argument("--weights-only", action="store_true",
                   help="refuse checkpoints that need full unpickling")
    # Both optional for argparse so that "--hyperpixel-ids 7 8 IN OUT" works;
    # _split_paths() takes back the paths the greedy ID list swallowed.
    p.add_argument("input", nargs="?", metavar="INPUT",
                   help="PyTorch checkpoint (.pth / .pth.tar)")
    p.add_argument("output", nargs="?", metavar="OUTPUT", help="weight file to write (.npz)")
    return p


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True


def _split_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Separate --hyperpixel-ids values from trailing paths, check 2 paths."""
    extra = []
    if args.hyperpixel_ids is not None:
        tokens = args.hyperpixel_ids
        n = 0
        while n < len(tokens) and _is_int(tokens[n]):
            n += 1
        if n == 0:
            parser.error("--hyperpixel-ids needs at least one integer")
        args.hyperpixel_ids = [int(t) for t in tokens[:n]]
        extra = tokens[n:]
    paths = [p for p in (args.input, args.output) if p is not None] + extra
    if len(paths) != 2:
        parser.error(f"expected INPUT and OUTPUT paths, got {paths}")
    args.input, args.output = paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    _split_paths(parser, args)
    options = {k: getattr(args, k) for k in sorted(_ALL_OPTIONS)}
    try:
        summary = convert(args.input, args.output, args.method, options,
                          compressed=not args.uncompressed, weights_only=args.weights_only,
                          backbone_only=args.backbone_only)
    except ConversionError as exc:
        _log(f"error: {exc}; nothing written")
        return 2
    except OSError as exc:
        _log(f"error: {exc}; nothing written")
        return 1
    cfg = summary["config"]
    shown = ", ".join(f"{k}={v}" for k, v in cfg.items() if k not in ("mean", "std"))
    _log(f"wrote {summary['output']}: {summary['tensors']} tensors, {summary['values']:,} "
         f"values ({summary['dropped']} other keys dropped)")
    _log(f"config: {shown}, mean={[round(m, 6) for m in cfg['mean']]}, "
         f"std={[round(s, 6) for s in cfg['std']]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
