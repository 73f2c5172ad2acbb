"""Training-time forms of peer heads, for ``lwfm.train --method dn4``.

The reference models in ``lwfm_ref`` are written literally from the spec
(per query, per class loops) to be checked against; training needs the
same logits batched, and a classifier for the pretraining stage and the
batch term of the objective. A trainee adds exactly that and keeps the
reference's parameter names, so its ``state_dict`` (less ``fc.*``) is the
library's weight file.
"""

from __future__ import annotations

from typing import Any, Dict

import torch
import torch.nn as nn
import torch.nn.functional as F


def dn4_logits_batched(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor,
                       k: int) -> torch.Tensor:
    """DN4 image-to-class scores ``(n_q, way)`` of feature maps ``(n, C, H, W)``
    for classes of equal size (training episodes): per query descriptor, the
    sum of its ``k`` largest cosines with the class's descriptors, summed
    over the query's descriptors. Equal to ``lwfm_ref.peers.dn4_logits``."""
    s = F.normalize(support.flatten(2), dim=1, eps=1e-12)         # (n_s, C, P)
    q = F.normalize(query.flatten(2), dim=1, eps=1e-12)           # (n_q, C, P)
    way = int(labels.max()) + 1
    scores = []
    for c in range(way):
        d = s[labels == c].permute(1, 0, 2).reshape(s.shape[1], -1)   # (C, K*P)
        cos = torch.einsum("qcp,cm->qpm", q, d)                     # (n_q, P, K*P)
        scores.append(cos.topk(k, dim=2).values.sum(dim=(1, 2)))
    return torch.stack(scores, dim=1)


def dn4_trainee(ref, config: Dict[str, Any], num_classes: int) -> nn.Module:
    """``lwfm_ref.DN4`` with a classifier over its 64 pooled channels and
    batched episode logits (``episode_logits_fast``, as the trainer calls)."""

    class DN4Trainee(ref.DN4):
        def __init__(self) -> None:
            super().__init__(config)
            self.fc = nn.Linear(64, num_classes)

        def episode_logits_fast(self, support_feats, support_labels, query_feats,
                                return_pooled_query: bool = False):
            logits = dn4_logits_batched(support_feats, torch.as_tensor(support_labels),
                                        query_feats, int(self.config["neighbor_k"]))
            if return_pooled_query:
                return logits, query_feats.flatten(2).mean(2)
            return logits

    return DN4Trainee()


def _backbone_name(key: str) -> str:
    """A backbone tensor's name without the ``feature_extractor.`` prefix that
    LWFM-SPM's reference model puts before it (the peers' models have none)."""
    prefix = "feature_extractor."
    return key[len(prefix):] if key.startswith(prefix) else key


def load_backbone(model: nn.Module, state: Dict[str, torch.Tensor]) -> int:
    """Copy the backbone of another checkpoint (any method's run on the same
    backbone, or the DN4 / MML authors' ``state_dict``) into ``model``: names
    are compared without the ``feature_extractor.`` prefix on either side;
    returns how many tensors were copied. Every backbone tensor of ``model``
    must be found, with its shape."""
    own = model.state_dict()
    source = {_backbone_name(k): v for k, v in state.items()}
    wanted = [k for k in own if _backbone_name(k).startswith("features.")]
    missing = [k for k in wanted
               if _backbone_name(k) not in source
               or source[_backbone_name(k)].shape != own[k].shape]
    if not wanted or missing:
        raise ValueError(f"the checkpoint lacks backbone tensors {missing[:3]}... "
                         "(another backbone?)")
    model.load_state_dict({k: source[_backbone_name(k)] for k in wanted}, strict=False)
    return len(wanted)


__all__ = ["dn4_logits_batched", "dn4_trainee", "load_backbone"]
