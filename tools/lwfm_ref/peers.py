"""PyTorch references of the peer metric heads (``shared/spec/peers.md``).

Written literally from the spec (per query, per class loops), in whatever
dtype the inputs have, so the library's vectorised kernels can be checked
against them. Features are ``(N, C, H, W)``; supports may come in any label
order with any number of images per class (at least one).

DN4 (peers.md section 2): every local descriptor (a position's C-vector) is
L2-normalised (divided by ``max(|x|, 1e-12)``, section 6.4); for query ``q``
and class ``c``, each query descriptor's ``neighbor_k`` largest cosines
with the class's pooled support descriptors are summed, and the sums over
the query's descriptors are the logit (no temperature).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from .backbones import Conv64F
from .model import DN4_CONFIG, _class_average

__all__ = ["DN4", "dn4_logits"]

_EPS_NORM = 1e-12


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(_EPS_NORM)


def dn4_logits(support_feats: torch.Tensor, support_labels: Any, query_feats: torch.Tensor,
               neighbor_k: int) -> torch.Tensor:
    """DN4 image-to-class scores ``(n_q, way)``."""
    s = support_feats.flatten(2)              # (n_s, C, P_s)
    q = query_feats.flatten(2)                # (n_q, C, P_q)
    if s.shape[1] != q.shape[1]:
        raise ValueError(f"support has {s.shape[1]} channels, queries {q.shape[1]}")
    avg, way = _class_average(support_labels, s.shape[0], s.device, s.dtype)
    labels = avg.argmax(dim=1)
    out = torch.zeros(q.shape[0], way, dtype=q.dtype)
    for c in range(way):
        members = s[labels == c]                                  # (K, C, P)
        d = members.permute(0, 2, 1).reshape(-1, s.shape[1])      # (K*P, C): row k*P + m
        if neighbor_k > d.shape[0]:
            raise ValueError(f"neighbor_k {neighbor_k} exceeds class {c}'s {d.shape[0]} "
                             "descriptors")
        d_hat = _unit_rows(d)
        for i in range(q.shape[0]):
            x_hat = _unit_rows(q[i].t())                          # (P_q, C)
            cos = x_hat @ d_hat.t()                               # (P_q, K*P)
            out[i, c] = cos.topk(neighbor_k, dim=1).values.sum()
    return out


class DN4(nn.Module):
    """DN4 with its Conv-64F backbone; ``state_dict`` keys are the authors'
    ``features.{0..13}.*``."""

    def __init__(self, config: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        cfg = dict(DN4_CONFIG)
        cfg.update(config or {})
        cfg.pop("format_version", None)
        if cfg["method"] != "dn4" or cfg["backbone"] != "conv64f":
            raise ValueError("DN4 runs on the conv64f backbone with method 'dn4'")
        self.config = cfg
        backbone = Conv64F(taps=cfg["hyperpixel_ids"], feature_size=cfg["feature_size"],
                           in_channels=int(cfg.get("in_channels", 3)))
        self.features = backbone.features
        self.__dict__["_backbone"] = backbone     # shares modules; not registered twice

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images -> local descriptors ``(N, 64, H, W)``."""
        return self._backbone(images)

    def episode_logits(self, support_feats: torch.Tensor, support_labels: Any,
                       query_feats: torch.Tensor) -> torch.Tensor:
        return dn4_logits(support_feats, support_labels, query_feats,
                          int(self.config["neighbor_k"]))

    def forward(self, support_images, support_labels, query_images):
        n_s = support_images.shape[0]
        feats = self.extract(torch.cat([support_images, query_images]))
        return self.episode_logits(feats[:n_s], support_labels, feats[n_s:])
