"""PyTorch reference implementation of the models libLWFM runs.

Ground truth for the library's tests and the model the converter checks
checkpoints against. Written from ``shared/spec/lwfm-spm.md`` (LWFM-SPM) and
``shared/spec/peers.md`` sections 1-2 (Conv-64F, DN4). Importing this package does
not change torch's global state (thread count, default dtype).
"""

from .backbones import (CONV64F_BLOCK_CHANNELS, RESNET18_BLOCK_CHANNELS, BasicBlock, Conv64F,
                        ResNet18Taps, adaptive_pool_bins, build_backbone, pool_and_concat)
from .model import (CIFARFS_MEAN, CIFARFS_STD, DEFAULT_CONFIG, DN4_CONFIG, LWFMSPM,
                    MINIIMAGENET_MEAN, MINIIMAGENET_STD, Matcher, batched_assignment, cosine,
                    make_config, pairwise_cosine, randomize_bn, solve_assignment)
from .peers import DN4, MML, MML_CONFIG, MML_DISTANCES, dn4_logits, mml_levels

__all__ = [
    "CONV64F_BLOCK_CHANNELS", "RESNET18_BLOCK_CHANNELS", "BasicBlock", "Conv64F", "ResNet18Taps",
    "adaptive_pool_bins", "build_backbone", "pool_and_concat",
    "CIFARFS_MEAN", "CIFARFS_STD", "DEFAULT_CONFIG", "DN4_CONFIG", "LWFMSPM",
    "MINIIMAGENET_MEAN", "MINIIMAGENET_STD", "Matcher", "batched_assignment", "cosine",
    "make_config", "pairwise_cosine", "randomize_bn", "solve_assignment",
    "DN4", "dn4_logits", "MML", "MML_CONFIG", "MML_DISTANCES", "mml_levels",
]
