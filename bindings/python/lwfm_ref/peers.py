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

MML (peers.md section 3): pixel level = DN4 with its own k; part level = the
same top-k sum over the *columns* of the row-normalised descriptor matrix
(not re-normalised); distribution level from Gaussians fitted to the raw
descriptors (``distance``: ``wass`` = the authors' surrogate
``|mu_q - mu_c| / C + |S_q - S_c|_F / C^2``, ``kl`` = the KL divergence
from the class Gaussian to the query Gaussian, ``w2`` = the exact
2-Wasserstein distance, our addition); the score is minus the distance.
Fusion: ``z = [D | P | T]`` (class index fastest), eval-mode BatchNorm1d of
``3 * way`` columns, then ``w0 z_c + w1 z_{way+c} + w2 z_{2way+c}``. A
checkpoint trained for ``n`` ways has BatchNorm statistics for ``3n`` class
slots; for another number of ways each level uses the mean of its slots'
parameters (slots are exchangeable: classes come in random order).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from .backbones import Conv64F, build_backbone
from .model import DN4_CONFIG, _class_average

MML_CONFIG: Dict[str, Any] = dict(DN4_CONFIG, method="mml", neighbor_k=1, distance="wass")
MML_DISTANCES = ("wass", "kl", "w2")
_RIDGE = 0.01

#: RCN on Conv4 (peers.md 4): 5x5 region grid, RelationNet's normalisation.
RCN_CONFIG: Dict[str, Any] = {
    "method": "rcn", "backbone": "conv4", "hyperpixel_ids": [3], "feature_size": 5,
    "image_size": 84, "resize": 0, "mean": [0.92206] * 3, "std": [0.08426] * 3,
}

__all__ = ["DN4", "dn4_logits", "MML", "mml_levels", "MML_CONFIG", "MML_DISTANCES", "RCN",
           "RCN_CONFIG", "rcn_regions"]

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
        groups = _image_groups(s[labels == c], labels, way)       # each (K or 1, C, P)
        for group in groups:
            d = group.permute(0, 2, 1).reshape(-1, s.shape[1])    # (K*P, C): row k*P + m
            if neighbor_k > d.shape[0]:
                raise ValueError(f"neighbor_k {neighbor_k} exceeds class {c}'s {d.shape[0]} "
                                 "descriptors")
            d_hat = _unit_rows(d)
            for i in range(q.shape[0]):
                x_hat = _unit_rows(q[i].t())                      # (P_q, C)
                cos = x_hat @ d_hat.t()                           # (P_q, K*P)
                out[i, c] += cos.topk(neighbor_k, dim=1).values.sum() / len(groups)
    return out


def _image_groups(members: torch.Tensor, labels: torch.Tensor, way: int) -> List[torch.Tensor]:
    """The support images whose descriptors one image-to-class measure pools:
    all of the class's (the authors' measure) when every class has as many
    images, else each image alone, the class's score then being the mean over
    its images (pooling favours the class with most images; docs/methods.md)."""
    counts = torch.bincount(labels, minlength=way)
    if bool((counts == counts[0]).all()):
        return [members]
    return [members[i:i + 1] for i in range(members.shape[0])]


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


def _topk_sum(q_vecs: torch.Tensor, class_vecs: torch.Tensor, k: int) -> torch.Tensor:
    """sum over q_vecs' rows of their k largest inner products with class_vecs' rows."""
    if k > class_vecs.shape[0]:
        raise ValueError(f"neighbor_k {k} exceeds the class's {class_vecs.shape[0]} vectors")
    return (q_vecs @ class_vecs.t()).topk(k, dim=1).values.sum()


def _gaussian(x: torch.Tensor):
    """Mean and covariance (ddof 1, + 0.01 I) of the rows of x (n, C)."""
    mu = x.mean(dim=0)
    d = x - mu
    cov = d.t() @ d / (x.shape[0] - 1) + _RIDGE * torch.eye(x.shape[1], dtype=x.dtype)
    return mu, cov


def _sqrtm_spd(a: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp_min(0).sqrt()) @ v.t()


def _distance(kind: str, mq, sq, mc, sc) -> torch.Tensor:
    c = mq.shape[0]
    if kind == "wass":
        return (mq - mc).norm() / c + (sq - sc).norm() / (c * c)
    if kind == "kl":
        inv = torch.linalg.inv(sq)
        dm = mq - mc
        return 0.5 * (torch.trace(inv @ sc) + dm @ inv @ dm - c
                      + torch.linalg.slogdet(sq)[1] - torch.linalg.slogdet(sc)[1])
    if kind == "w2":
        root = _sqrtm_spd(sc)
        cross = _sqrtm_spd(root @ sq @ root)
        w2sq = (mq - mc).pow(2).sum() + torch.trace(sq) + torch.trace(sc) - 2 * torch.trace(cross)
        return w2sq.clamp_min(0).sqrt()
    raise ValueError(f"unknown MML distance {kind!r} (one of {MML_DISTANCES})")


def mml_levels(support_feats, support_labels, query_feats, neighbor_k: int, distance: str):
    """The three level scores ``(D, P, T)``, each ``(n_q, way)``."""
    s = support_feats.flatten(2)              # (n_s, C, P)
    q = query_feats.flatten(2)
    avg, way = _class_average(support_labels, s.shape[0], s.device, s.dtype)
    labels = avg.argmax(dim=1)
    n_q, C = q.shape[0], q.shape[1]
    D = torch.zeros(n_q, way, dtype=q.dtype)
    P = torch.zeros(n_q, way, dtype=q.dtype)
    T = torch.zeros(n_q, way, dtype=q.dtype)
    q_rows = [q[i].t() for i in range(n_q)]                          # raw (P, C)
    q_hat = [_unit_rows(r) for r in q_rows]
    q_gauss = [_gaussian(r) for r in q_rows]
    for c in range(way):
        members = s[labels == c]                                     # (K, C, P)
        rows = members.permute(0, 2, 1).reshape(-1, C)               # (K*P, C) raw
        mc, sc = _gaussian(rows)
        groups = _image_groups(members, labels, way)
        for group in groups:
            hat = _unit_rows(group.permute(0, 2, 1).reshape(-1, C))
            parts = torch.cat([_unit_rows(m.t()).t() for m in group])   # (K*C, P)
            for i in range(n_q):
                P[i, c] += _topk_sum(q_hat[i], hat, neighbor_k) / len(groups)
                T[i, c] += _topk_sum(q_hat[i].t(), parts, neighbor_k) / len(groups)
        for i in range(n_q):
            D[i, c] = -_distance(distance, q_gauss[i][0], q_gauss[i][1], mc, sc)
    return D, P, T


class MML(nn.Module):
    """MML with its Conv-64F backbone and fusion layer; ``state_dict`` keys are
    the authors' ``features.*`` and ``classifier.{Norm_layer,FC_layer}.*``."""

    def __init__(self, config: Optional[Dict[str, Any]] = None, train_way: int = 5) -> None:
        super().__init__()
        cfg = dict(MML_CONFIG)
        cfg.update(config or {})
        cfg.pop("format_version", None)
        if cfg["method"] != "mml" or cfg["backbone"] != "conv64f":
            raise ValueError("MML runs on the conv64f backbone with method 'mml'")
        if cfg["distance"] not in MML_DISTANCES:
            raise ValueError(f"distance must be one of {MML_DISTANCES}")
        self.config = cfg
        backbone = Conv64F(taps=cfg["hyperpixel_ids"], feature_size=cfg["feature_size"],
                           in_channels=int(cfg.get("in_channels", 3)))
        self.features = backbone.features
        self.__dict__["_backbone"] = backbone
        self.classifier = nn.Module()
        self.classifier.Norm_layer = nn.BatchNorm1d(3 * train_way)
        self.classifier.FC_layer = nn.Conv1d(1, 1, 3, dilation=train_way, bias=False)

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        return self._backbone(images)

    def _norm_params(self, way: int):
        bn = self.classifier.Norm_layer
        params = [bn.weight, bn.bias, bn.running_mean, bn.running_var]
        if bn.num_features == 3 * way:
            return params
        slots = bn.num_features // 3
        return [p.detach().reshape(3, slots).mean(dim=1).repeat_interleave(way) for p in params]

    def episode_logits(self, support_feats, support_labels, query_feats):
        D, P, T = mml_levels(support_feats, support_labels, query_feats,
                             int(self.config["neighbor_k"]), self.config["distance"])
        way = D.shape[1]
        z = torch.cat([D, P, T], dim=1)
        gamma, beta, mean, var = self._norm_params(way)
        z = (z - mean) / torch.sqrt(var + self.classifier.Norm_layer.eps) * gamma + beta
        w = self.classifier.FC_layer.weight.reshape(3)
        return w[0] * z[:, :way] + w[1] * z[:, way:2 * way] + w[2] * z[:, 2 * way:]

    def forward(self, support_images, support_labels, query_images):
        n_s = support_images.shape[0]
        feats = self.extract(torch.cat([support_images, query_images]))
        return self.episode_logits(feats[:n_s], support_labels, feats[n_s:])


def _cos_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos between the columns of a (C, R) and b (C, P): (R, P), 0 for zero vectors."""
    dots = a.t() @ b
    return dots / (a.norm(dim=0)[:, None] * b.norm(dim=0)[None, :]).clamp_min(1e-8)


def rcn_regions(meta: nn.Module, fs: torch.Tensor, fq: torch.Tensor):
    """One (support, query) pair of (C, R) region maps: ``sim[r]`` (best cosine
    of support region r over the query's regions), ``match[r]`` (that region)
    and the meta-learner weights ``w[r]`` (input: support and query features
    of the same cell, support first)."""
    cos = _cos_matrix(fs, fq)
    sim, match = cos.max(dim=1)
    side = int(round(fs.shape[1] ** 0.5))
    u = torch.cat([fs, fq], dim=0).reshape(1, -1, side, fs.shape[1] // side)
    w = meta(u).reshape(-1)
    return sim, match, w


class RCN(nn.Module):
    """Region Comparison Network (peers.md 4) in eval mode: ``feature_encoder``
    (Conv4 or ResNet-12) and ``explain_network.meta_learner`` (1x1 convs with
    BatchNorm and ReLU, 2C -> ... -> 1). Logits: per class, the mean over its
    supports of ``sum_r w[r] sim[r]`` (the authors' output is their softmax)."""

    def __init__(self, config: Optional[Dict[str, Any]] = None,
                 hidden: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        cfg = dict(RCN_CONFIG)
        cfg.update(config or {})
        cfg.pop("format_version", None)
        if cfg["method"] != "rcn":
            raise ValueError("RCN needs method 'rcn'")
        self.config = cfg
        self.feature_encoder = build_backbone(cfg)
        c = self.feature_encoder.out_channels
        if hidden is None:
            hidden = (64,) if c <= 64 else (c, 64)
        layers: list = []
        width = 2 * c
        for h in list(hidden) + [1]:
            layers += [nn.Conv2d(width, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU()]
            width = h
        self.explain_network = nn.Module()
        self.explain_network.meta_learner = nn.Sequential(*layers)

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        return self.feature_encoder(images)

    def episode_logits(self, support_feats, support_labels, query_feats):
        s = support_feats.flatten(2)
        q = query_feats.flatten(2)
        avg, way = _class_average(support_labels, s.shape[0], s.device, s.dtype)
        meta = self.explain_network.meta_learner
        e = torch.zeros(q.shape[0], s.shape[0], dtype=q.dtype)
        for i in range(q.shape[0]):
            for j in range(s.shape[0]):
                sim, _, w = rcn_regions(meta, s[j], q[i])
                e[i, j] = (w * sim).sum()
        return e @ avg

    def episode_logits_fast(self, support_feats, support_labels, query_feats):
        """:meth:`episode_logits` vectorised over all pairs (for training)."""
        s = support_feats.flatten(2)                                  # (n_s, C, R)
        q = query_feats.flatten(2)                                    # (n_q, C, R)
        avg, _ = _class_average(support_labels, s.shape[0], s.device, s.dtype)
        n_s, n_q, C, R = s.shape[0], q.shape[0], s.shape[1], s.shape[2]
        dots = torch.einsum("jcr,qcp->qjrp", s, q)
        den = (s.norm(dim=1)[None, :, :, None] * q.norm(dim=1)[:, None, None, :]).clamp_min(1e-8)
        sim = (dots / den).amax(dim=3)                                # (n_q, n_s, R)
        side = int(round(R ** 0.5))
        u = torch.cat([s[None].expand(n_q, -1, -1, -1), q[:, None].expand(-1, n_s, -1, -1)],
                      dim=2).reshape(n_q * n_s, 2 * C, side, R // side)
        w = self.explain_network.meta_learner(u).reshape(n_q, n_s, R)
        return (w * sim).sum(dim=2) @ avg

    def forward(self, support_images, support_labels, query_images):
        n_s = support_images.shape[0]
        feats = self.extract(torch.cat([support_images, query_images]))
        return self.episode_logits(feats[:n_s], support_labels, feats[n_s:])

    def episode_logits_batch_stats(self, support_images, support_labels, query_images,
                                   query_batch: int = 25, features: bool = False):
        """The authors' transductive protocol (peers.md 4.7): every BatchNorm
        uses the statistics of its batch: the backbone's the support set, then
        each batch of ``query_batch`` queries; the meta-learner's all the
        (query, support image, cell) rows of a query batch. ``features``:
        the inputs are feature maps (the backbone is skipped). The module's
        own mode and running statistics are left unchanged."""
        model = copy.deepcopy(self).train()
        with torch.no_grad():
            fs = support_images if features else model.extract(support_images)
            out = []
            for i in range(0, query_images.shape[0], query_batch):
                chunk = query_images[i:i + query_batch]
                fq = chunk if features else model.extract(chunk)
                out.append(model.episode_logits_fast(fs, support_labels, fq))
        return torch.cat(out)
