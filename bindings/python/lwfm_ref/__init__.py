"""PyTorch reference implementation of the models libLWFM runs.

Ground truth for the library's tests and the model the converter checks
checkpoints against. Written from ``shared/spec/lwfm-spm.md`` (LWFM-SPM) and
``shared/spec/peers.md`` (Conv-64F, ResNet-12, DN4, MML). Importing this package does
not change torch's global state (thread count, default dtype).
"""

from .backbones import (CONV4_BLOCK_CHANNELS, CONV64F_BLOCK_CHANNELS, Conv4, RESNET12_BLOCK_CHANNELS, RESNET18_BLOCK_CHANNELS,
                        BasicBlock, Block12, Conv64F, ResNet12,
                        ResNet18Taps, adaptive_pool_bins, build_backbone, pool_and_concat)
from .model import (CIFARFS_MEAN, CIFARFS_STD, DEFAULT_CONFIG, DN4_CONFIG, LWFMSPM,
                    MINIIMAGENET_MEAN, MINIIMAGENET_STD, Matcher, batched_assignment, cosine,
                    make_config, pairwise_cosine, randomize_bn, solve_assignment)
from .peers import (DN4, MML, MML_CONFIG, MML_DISTANCES, RCN, RCN_CONFIG, dn4_logits, mml_levels,
                    rcn_regions)

__all__ = [
    "CONV64F_BLOCK_CHANNELS", "RESNET12_BLOCK_CHANNELS", "RESNET18_BLOCK_CHANNELS", "Block12",
    "ResNet12", "BasicBlock", "Conv64F", "ResNet18Taps",
    "adaptive_pool_bins", "build_backbone", "pool_and_concat",
    "CIFARFS_MEAN", "CIFARFS_STD", "DEFAULT_CONFIG", "DN4_CONFIG", "LWFMSPM",
    "MINIIMAGENET_MEAN", "MINIIMAGENET_STD", "Matcher", "batched_assignment", "cosine",
    "make_config", "pairwise_cosine", "randomize_bn", "solve_assignment",
    "DN4", "dn4_logits", "MML", "MML_CONFIG", "MML_DISTANCES", "mml_levels", "RCN",
    "RCN_CONFIG", "rcn_regions", "Conv4", "CONV4_BLOCK_CHANNELS",
]
