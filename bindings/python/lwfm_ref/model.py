"""PyTorch reference of the LWFM-SPM model (``shared/spec/lwfm-spm.md``).

This is the ground truth the library is tested against, so it follows the
spec's *reference formulation* literally: the attended maps are built for
every (query, support) pair, the SPM cost is computed from the attended rows
and the matcher MLP ``g_l`` is applied per pair. :meth:`LWFMSPM.episode_logits_fast`
uses the spec's "facts" (positive rescaling changes no cosine and ``g_l`` is
positively homogeneous) and must agree with it; the tests check that.

Shapes: features are ``(N, C, H, W)`` or ``(N, C, P)`` with ``P = H*W``
positions; ``n_s`` supports, ``n_q`` queries, ``way`` classes. Everything
works in float32 and float64 (convert the model with ``.double()``).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from scipy.optimize import linear_sum_assignment

from .backbones import build_backbone

__all__ = [
    "MINIIMAGENET_MEAN",
    "MINIIMAGENET_STD",
    "CIFARFS_MEAN",
    "CIFARFS_STD",
    "DEFAULT_CONFIG",
    "DN4_CONFIG",
    "make_config",
    "cosine",
    "pairwise_cosine",
    "solve_assignment",
    "batched_assignment",
    "Matcher",
    "LWFMSPM",
    "randomize_bn",
]

MINIIMAGENET_MEAN = (125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0)
MINIIMAGENET_STD = (63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0)
CIFARFS_MEAN = (0.5071, 0.4866, 0.4409)
CIFARFS_STD = (0.2009, 0.1984, 0.2023)

#: LWFM-SPM defaults (spec section 4; miniImageNet / tieredImageNet preprocessing).
DEFAULT_CONFIG: Dict[str, Any] = {
    "method": "lwfm-spm",
    "backbone": "resnet18",
    "first_padding": 3,
    "hyperpixel_ids": [7, 8],
    "feature_size": 3,
    "temperature": 0.2,
    "temperature_attn": 5.0,
    "matcher_prob": 0.25,
    "learnable_matcher": True,
    "top_k": 1,
    "image_size": 84,
    "resize": 92,
    "mean": list(MINIIMAGENET_MEAN),
    "std": list(MINIIMAGENET_STD),
}

#: The DN4 checkpoints' configuration (Conv-64F, last block at native size).
DN4_CONFIG: Dict[str, Any] = {
    "method": "dn4",
    "backbone": "conv64f",
    "hyperpixel_ids": [3],
    "feature_size": 0,
    "neighbor_k": 3,
    "image_size": 84,
    "resize": 0,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
}

# Keys accepted by LWFMSPM besides those of DEFAULT_CONFIG.
_OPTIONAL_KEYS = {"num_classes", "in_channels"}

# Numerical constants of the spec (section 3).
_EPS_UNIT = 1e-6      # unit-normalisation of hyperpixels before R
_EPS_VAR = 1e-5       # two-sided normalisation of R
_EPS_COS = 1e-8       # cos(x, y) = <x, y> / max(|x||y|, 1e-8)


def make_config(**overrides: Any) -> Dict[str, Any]:
    """A full, validated LWFM-SPM configuration: DEFAULT_CONFIG + overrides.

    A ``format_version`` key (as in a config read back by
    ``lwfm.weights.load_weights``) is accepted and dropped.
    """
    overrides.pop("format_version", None)
    unknown = set(overrides) - set(DEFAULT_CONFIG) - _OPTIONAL_KEYS
    if unknown:
        raise ValueError(f"unknown configuration keys: {sorted(unknown)}")
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    cfg.update(copy.deepcopy(overrides))
    if cfg["method"] != "lwfm-spm":
        raise ValueError(f"LWFMSPM needs method 'lwfm-spm', got {cfg['method']!r}")
    cfg["hyperpixel_ids"] = [int(i) for i in cfg["hyperpixel_ids"]]
    for key in ("first_padding", "feature_size", "top_k", "image_size", "resize"):
        cfg[key] = int(cfg[key])
    for key in ("temperature", "temperature_attn", "matcher_prob"):
        cfg[key] = float(cfg[key])
    cfg["learnable_matcher"] = bool(cfg["learnable_matcher"])
    if cfg["temperature"] <= 0 or cfg["temperature_attn"] <= 0:
        raise ValueError("temperatures must be positive")
    if cfg["matcher_prob"] < 0:
        raise ValueError("matcher_prob must be >= 0")
    if cfg["top_k"] < 1:
        raise ValueError("top_k must be >= 1")
    return cfg


# ----------------------------------------------------------------------------
# Small numerical helpers
# ----------------------------------------------------------------------------

def cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine along the last dimension, ``<x,y> / max(|x||y|, 1e-8)``."""
    denom = (x.norm(dim=-1) * y.norm(dim=-1)).clamp_min(_EPS_COS)
    return (x * y).sum(dim=-1) / denom


def pairwise_cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``out[..., a, b] = cosine(u[..., a, :], v[..., b, :])``."""
    dots = u @ v.transpose(-1, -2)
    denom = (u.norm(dim=-1)[..., :, None] * v.norm(dim=-1)[..., None, :]).clamp_min(_EPS_COS)
    return dots / denom


def solve_assignment(cost: np.ndarray) -> np.ndarray:
    """Exact square linear assignment: ``sigma`` minimising ``sum_a cost[a, sigma[a]]``."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(f"square cost matrix required, got shape {cost.shape}")
    if not np.all(np.isfinite(cost)):
        raise ValueError("cost matrix has non-finite entries")
    rows, cols = linear_sum_assignment(cost)
    sigma = np.empty(cost.shape[0], dtype=np.int64)
    sigma[rows] = cols
    return sigma


def batched_assignment(cost: torch.Tensor) -> torch.Tensor:
    """:func:`solve_assignment` on every ``(P, P)`` matrix of ``(..., P, P)``.

    Returns a long tensor ``(..., P)``; no gradient flows through it.
    """
    flat = cost.detach().cpu().to(torch.float64).reshape(-1, cost.shape[-2], cost.shape[-1])
    flat_np = flat.numpy()
    sigma = np.stack([solve_assignment(c) for c in flat_np]) if len(flat_np) else \
        np.zeros((0, cost.shape[-1]), dtype=np.int64)
    return torch.from_numpy(sigma).reshape(cost.shape[:-1]).to(cost.device)


def _flatten_positions(feats: torch.Tensor) -> torch.Tensor:
    if feats.dim() == 4:
        return feats.flatten(2)
    if feats.dim() == 3:
        return feats
    raise ValueError(f"features must be (N, C, H, W) or (N, C, P), got shape {tuple(feats.shape)}")


def _centre(x: torch.Tensor) -> torch.Tensor:
    """Step 1: subtract, at every position, the mean over all channels."""
    return x - x.mean(dim=1, keepdim=True)


def _class_average(labels: Any, n_s: int, device: torch.device,
                   dtype: torch.dtype) -> Tuple[torch.Tensor, int]:
    """``W[j, c] = 1/|J_c|`` when support ``j`` has label ``c``, else 0."""
    labels = torch.as_tensor(labels).to(device=device).reshape(-1)
    if labels.numel() != n_s:
        raise ValueError(f"{labels.numel()} support labels for {n_s} supports")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError("support labels must be integers")
    labels = labels.long()
    if n_s == 0 or int(labels.min()) < 0:
        raise ValueError("support labels must be non-negative and the support set non-empty")
    way = int(labels.max()) + 1
    onehot = torch.nn.functional.one_hot(labels, way).to(dtype)
    counts = onehot.sum(dim=0)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"classes {missing} have no support image (labels must be 0..way-1)")
    return onehot / counts, way


def _attention(s: torch.Tensor, t: torch.Tensor,
               temperature_attn: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps 2-4 for one layer.

    ``s``: centred support slices ``(n_s, d, P)``; ``t``: centred query slices
    ``(n_q, d, P)``. Returns ``R (n_q, n_s, P, P)`` (``R[q, j, a, b]``, a:
    support position, b: query position), ``ws (n_q, n_s, P)`` (over a) and
    ``wq (n_q, n_s, P)`` (over b).
    """
    s_unit = s / torch.sqrt((s * s).sum(dim=1, keepdim=True) + _EPS_UNIT)
    t_unit = t / torch.sqrt((t * t).sum(dim=1, keepdim=True) + _EPS_UNIT)
    r = torch.einsum("jda,qdb->qjab", s_unit, t_unit)

    def standardise(x: torch.Tensor, dim: int) -> torch.Tensor:
        mean = x.mean(dim=dim, keepdim=True)
        var = x.var(dim=dim, unbiased=True, keepdim=True)
        return (x - mean) / torch.sqrt(var + _EPS_VAR)

    attn_s = torch.softmax(standardise(r, 2) / temperature_attn, dim=2)
    attn_q = torch.softmax(standardise(r, 3) / temperature_attn, dim=3)
    return r, attn_s.sum(dim=3), attn_q.sum(dim=2)


# ----------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------

class Matcher(nn.Module):
    """Per-layer matcher ``g_l(x) = x + relu(W2 relu(W1 x))`` (identity when
    not learnable). ``linear`` holds the residual branch; its parameters are
    ``linear.0.weight`` ``(d//2, d)`` and ``linear.2.weight`` ``(d, d//2)``.
    """

    def __init__(self, dim: int, learnable: bool = True) -> None:
        super().__init__()
        self.dim = int(dim)
        self.linear: Optional[nn.Sequential] = None
        if learnable:
            hidden = self.dim // 2
            self.linear = nn.Sequential(
                nn.Linear(self.dim, hidden, bias=False),
                nn.ReLU(),
                nn.Linear(hidden, self.dim, bias=False),
                nn.ReLU(),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``g_l`` along the last dimension."""
        if self.linear is None:
            return x
        return x + self.linear(x)


class LWFMSPM(nn.Module):
    """LWFM-SPM few-shot model: tapped backbone + layer-wise metric + SPM.

    Submodules: ``feature_extractor`` (the backbone), ``matchers`` (one
    :class:`Matcher` per tap; present only when ``matcher_prob > 0``, like in
    the reference checkpoints) and ``fc`` (training-only classifier over the
    ``C`` channels; present only when ``config['num_classes']`` is set).

    BatchNorm follows the module's mode: call ``.eval()`` for inference.
    """

    def __init__(self, config: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        self.config = make_config(**(config or {}))
        cfg = self.config
        self.feature_extractor = build_backbone(cfg)
        self.tap_dims: List[int] = self.feature_extractor.tap_channels()
        offsets = np.cumsum([0] + self.tap_dims[:-1]).tolist()
        self.layer_slices: List[Tuple[int, int]] = list(zip(offsets, self.tap_dims))
        self.out_channels = sum(self.tap_dims)
        self.matchers: Optional[nn.ModuleList] = None
        if cfg["matcher_prob"] > 0:
            self.matchers = nn.ModuleList(
                Matcher(d, cfg["learnable_matcher"]) for d in self.tap_dims)
        self.fc: Optional[nn.Linear] = None
        if cfg.get("num_classes"):
            self.fc = nn.Linear(self.out_channels, int(cfg["num_classes"]))

    # -- backbone -----------------------------------------------------------

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images ``(N, 3, H, W)`` -> pooled taps ``(N, C, fs, fs)``."""
        return self.feature_extractor(images)

    def forward(self, support_images: torch.Tensor, support_labels: Any,
                query_images: torch.Tensor) -> torch.Tensor:
        """Episode logits ``(n_q, way)`` from images (one backbone batch)."""
        n_s = support_images.shape[0]
        feats = self.features(torch.cat([support_images, query_images], dim=0))
        return self.episode_logits(feats[:n_s], support_labels, feats[n_s:])

    # -- metric -------------------------------------------------------------

    def _inputs(self, support_feats: torch.Tensor, support_labels: Any,
                query_feats: torch.Tensor):
        s = _flatten_positions(support_feats)
        q = _flatten_positions(query_feats)
        if s.shape[1:] != q.shape[1:]:
            raise ValueError(f"support features {tuple(s.shape)} and query features "
                             f"{tuple(q.shape)} differ in (C, P)")
        if s.shape[1] != self.out_channels:
            raise ValueError(f"features have {s.shape[1]} channels, model has {self.out_channels}")
        if self.matchers is not None and self.config["top_k"] > s.shape[2]:
            raise ValueError(f"top_k {self.config['top_k']} exceeds {s.shape[2]} positions")
        avg, _ = _class_average(support_labels, s.shape[0], s.device, s.dtype)
        return _centre(s), _centre(q), avg

    def _logits(self, pooled_s: torch.Tensor, pooled_q: torch.Tensor, avg: torch.Tensor,
                pair_scores: Optional[torch.Tensor]) -> torch.Tensor:
        """Steps 6 and 8 from pooled attended maps ``(n_q, n_s, C)`` and the
        per-pair SPM scores ``m (n_q, n_s)`` (None without SPM)."""
        s_bar = torch.einsum("qjc,jk->qkc", pooled_s, avg)
        q_bar = torch.einsum("qjc,jk->qkc", pooled_q, avg)
        logits = cosine(s_bar, q_bar)
        if pair_scores is not None:
            logits = logits + pair_scores @ avg
        return logits / self.config["temperature"]

    def _top_k_score(self, matched_cos: torch.Tensor) -> torch.Tensor:
        top = matched_cos.topk(self.config["top_k"], dim=-1).values.sum(dim=-1)
        return self.config["matcher_prob"] * top

    def episode_logits(self, support_feats: torch.Tensor, support_labels: Any,
                       query_feats: torch.Tensor) -> torch.Tensor:
        """Spec section 3 in the reference formulation -> logits ``(n_q, way)``.

        ``support_labels`` are integers ``0..way-1`` in any order; classes may
        have different numbers of supports (each needs at least one).
        """
        s, q, avg = self._inputs(support_feats, support_labels, query_feats)
        t_attn = self.config["temperature_attn"]

        # Steps 2-5: attended maps per pair and layer, (n_q, n_s, d_l, P).
        att_s: List[torch.Tensor] = []
        att_q: List[torch.Tensor] = []
        for off, d in self.layer_slices:
            s_l, q_l = s[:, off:off + d], q[:, off:off + d]
            _, ws, wq = _attention(s_l, q_l, t_attn)
            att_s.append(ws[:, :, None, :] * s_l[None])
            att_q.append(wq[:, :, None, :] * q_l[:, None])

        # Step 6 (pooling commutes with the class mean).
        pooled_s = torch.cat(att_s, dim=2).mean(dim=-1)
        pooled_q = torch.cat(att_q, dim=2).mean(dim=-1)

        # Step 7: SPM on the attended rows, per pair and layer.
        pair_scores = None
        if self.matchers is not None:
            per_layer = []
            for matcher, a_s, a_q in zip(self.matchers, att_s, att_q):
                u = a_s.transpose(-1, -2)            # (n_q, n_s, P, d): rows u_a
                v = a_q.transpose(-1, -2)            # rows v_b
                sigma = batched_assignment(1.0 - pairwise_cosine(u, v))
                gu, gv = matcher(u), matcher(v)
                gv_matched = torch.gather(gv, 2, sigma[..., None].expand_as(gv))
                per_layer.append(self._top_k_score(cosine(gu, gv_matched)))
            pair_scores = torch.stack(per_layer).amax(dim=0)

        return self._logits(pooled_s, pooled_q, avg, pair_scores)

    def episode_logits_fast(self, support_feats: torch.Tensor, support_labels: Any,
                            query_feats: torch.Tensor, return_pooled_query: bool = False):
        """Same result as :meth:`episode_logits`, using the spec's facts.

        The SPM cost is ``1 - R`` and ``g_l`` runs once per image and
        position; no per-pair attended map is materialised. With
        ``return_pooled_query`` also returns the pooled attended query maps
        averaged over the episode's pairs, ``(n_q, C)`` (the trainer's third
        loss term, spec section 6).
        """
        s, q, avg = self._inputs(support_feats, support_labels, query_feats)
        t_attn = self.config["temperature_attn"]
        n_pos = s.shape[2]
        pooled_s, pooled_q, per_layer = [], [], []
        for index, (off, d) in enumerate(self.layer_slices):
            s_l, q_l = s[:, off:off + d], q[:, off:off + d]
            r, ws, wq = _attention(s_l, q_l, t_attn)
            pooled_s.append(torch.einsum("qja,jda->qjd", ws, s_l) / n_pos)
            pooled_q.append(torch.einsum("qjb,qdb->qjd", wq, q_l) / n_pos)
            if self.matchers is not None:
                matcher = self.matchers[index]
                sigma = batched_assignment(1.0 - r)
                g_s = matcher(s_l.transpose(1, 2))   # (n_s, P, d)
                g_q = matcher(q_l.transpose(1, 2))   # (n_q, P, d)
                cos_all = pairwise_cosine(g_s[None], g_q[:, None])   # (n_q, n_s, P, P)
                matched = torch.gather(cos_all, 3, sigma[..., None]).squeeze(-1)
                per_layer.append(self._top_k_score(matched))
        pair_scores = torch.stack(per_layer).amax(dim=0) if per_layer else None
        pooled_q_all = torch.cat(pooled_q, dim=2)
        logits = self._logits(torch.cat(pooled_s, dim=2), pooled_q_all, avg, pair_scores)
        return (logits, pooled_q_all.mean(dim=1)) if return_pooled_query else logits


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random affine parameters and running statistics.

    weight ~ U(0.5, 1.5), bias ~ U(-0.2, 0.2), running_mean ~ U(-0.2, 0.2),
    running_var ~ U(0.5, 2.0), drawn from a generator seeded with ``seed``
    (in module order, so the result is reproducible). Returns ``model``.
    """
    gen = torch.Generator().manual_seed(int(seed))

    def draw(t: torch.Tensor, low: float, high: float) -> None:
        t.copy_(low + (high - low) * torch.rand(t.shape, generator=gen, dtype=torch.float64))

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                if module.affine:
                    draw(module.weight, 0.5, 1.5)
                    draw(module.bias, -0.2, 0.2)
                if module.track_running_stats:
                    draw(module.running_mean, -0.2, 0.2)
                    draw(module.running_var, 0.5, 2.0)
    return model
