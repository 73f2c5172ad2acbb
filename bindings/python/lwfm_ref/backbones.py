"""Backbones of the PyTorch reference model, with "hyperpixel" taps.

A backbone is a list of blocks numbered from 0. ``forward`` runs the blocks
in order, keeps the outputs of the tapped blocks, pools each of them to
``feature_size x feature_size`` with adaptive average pooling (PyTorch's bin
rule, see :func:`adaptive_pool_bins`) and concatenates them along channels.
``feature_size == 0`` keeps the native size; the taps must then agree in size.

Module and parameter names follow the layouts of the checkpoints the
library converts (docs: ``shared/spec/lwfm-spm.md`` section 2 and
``shared/spec/peers.md`` section 1).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "RESNET18_BLOCK_CHANNELS",
    "CONV64F_BLOCK_CHANNELS",
    "adaptive_pool_bins",
    "pool_and_concat",
    "BasicBlock",
    "ResNet18Taps",
    "Conv64F",
    "build_backbone",
]

#: Output channels of ResNet-18 blocks 0 (stem) .. 8 (layer4.1).
RESNET18_BLOCK_CHANNELS: Tuple[int, ...] = (64, 64, 64, 128, 128, 256, 256, 512, 512)
#: Output channels of Conv-64F blocks 0 .. 3.
CONV64F_BLOCK_CHANNELS: Tuple[int, ...] = (64, 64, 64, 64)


def adaptive_pool_bins(size: int, out: int) -> List[Tuple[int, int]]:
    """Half-open input ranges ``[start, end)`` of adaptive pooling cells.

    Output cell ``i`` of ``out`` covers inputs ``floor(i*size/out)`` up to
    ``ceil((i+1)*size/out) - 1``; cells may overlap, and when
    ``out > size`` some inputs feed several cells.
    """
    if size <= 0 or out <= 0:
        raise ValueError(f"adaptive_pool_bins: sizes must be positive (size={size}, out={out})")
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def _check_taps(taps: Sequence[int], n_blocks: int) -> Tuple[int, ...]:
    taps = tuple(int(t) for t in taps)
    if not taps:
        raise ValueError("at least one tapped block is required")
    for t in taps:
        if not 0 <= t < n_blocks:
            raise ValueError(f"tapped block id {t} out of range 0..{n_blocks - 1}")
    if len(set(taps)) != len(taps):
        raise ValueError(f"tapped block ids must be distinct, got {list(taps)}")
    return taps


def pool_and_concat(maps: Sequence[torch.Tensor], feature_size: int) -> torch.Tensor:
    """Pool every map to ``feature_size`` (0: keep) and concatenate channels."""
    if feature_size < 0:
        raise ValueError(f"feature_size must be >= 0, got {feature_size}")
    if feature_size > 0:
        maps = [F.adaptive_avg_pool2d(m, feature_size) for m in maps]
    else:
        sizes = {tuple(m.shape[-2:]) for m in maps}
        if len(sizes) != 1:
            raise ValueError(
                f"feature_size 0 needs taps of equal spatial size, got {sorted(sizes)}")
    return torch.cat(list(maps), dim=1)


class _TappedBackbone(nn.Module):
    """Shared tap logic; subclasses provide ``blocks()`` and channel counts."""

    block_channels: Tuple[int, ...] = ()

    def __init__(self, taps: Sequence[int], feature_size: int) -> None:
        super().__init__()
        self.taps = _check_taps(taps, len(self.block_channels))
        if feature_size < 0:
            raise ValueError(f"feature_size must be >= 0, got {feature_size}")
        self.feature_size = int(feature_size)

    def blocks(self) -> List[nn.Module]:
        """The blocks in id order (block ``i`` is ``blocks()[i]``)."""
        raise NotImplementedError

    def tap_channels(self) -> List[int]:
        """Channels of each tapped block, in tap order."""
        return [self.block_channels[t] for t in self.taps]

    @property
    def out_channels(self) -> int:
        """Channels of the concatenated output (``C``)."""
        return sum(self.tap_channels())

    def tap_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Unpooled outputs of the tapped blocks, in tap order.

        Blocks after the last tapped one are not run.
        """
        wanted = set(self.taps)
        last = max(self.taps)
        outputs = {}
        for block_id, block in enumerate(self.blocks()):
            x = block(x)
            if block_id in wanted:
                outputs[block_id] = x
            if block_id == last:
                break
        return [outputs[t] for t in self.taps]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, C, fs, fs) (native size when fs = 0)."""
        return pool_and_concat(self.tap_maps(x), self.feature_size)


class BasicBlock(nn.Module):
    """ResNet BasicBlock: conv3x3(stride)-BN-ReLU-conv3x3-BN + shortcut, ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class _Stem(nn.Module):
    """ResNet stem: conv 7x7 stride 2, BN, ReLU, max-pool 3x3 stride 2 pad 1."""

    def __init__(self, in_channels: int, first_padding: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=first_padding, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


class ResNet18Taps(_TappedBackbone):
    """torchvision-layout ResNet-18 returning pooled, concatenated taps.

    Block ids: 0 = stem output (after the max-pool), 1, 2 = ``layer1.0/1``,
    3, 4 = ``layer2.0/1``, 5, 6 = ``layer3.0/1``, 7, 8 = ``layer4.0/1``.
    All modules exist whatever the taps (checkpoints hold all of them);
    only the blocks up to the last tapped one run.
    """

    block_channels = RESNET18_BLOCK_CHANNELS

    def __init__(self, first_padding: int = 3, hyperpixel_ids: Sequence[int] = (7, 8),
                 feature_size: int = 3, in_channels: int = 3) -> None:
        super().__init__(hyperpixel_ids, feature_size)
        self.first_padding = int(first_padding)
        self.initial_block = _Stem(in_channels, self.first_padding)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))

    @property
    def hyperpixel_ids(self) -> Tuple[int, ...]:
        return self.taps

    def blocks(self) -> List[nn.Module]:
        out: List[nn.Module] = [self.initial_block]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            out.extend(layer)
        return out


class Conv64F(_TappedBackbone):
    """Conv-64F (DN4 / MML) with the authors' ``features.{0..13}`` layout.

    Four conv3x3(64, no bias)-BN-LeakyReLU(0.2) stages; the first two end in
    a 2x2 max-pool. Block ids 0..3 are the outputs after ``features`` indices
    3, 7, 10 and 13 (for an 84x84 input: 42x42, 21x21, 21x21, 21x21).
    """

    block_channels = CONV64F_BLOCK_CHANNELS
    #: Last ``features`` index of each block.
    block_ends: Tuple[int, ...] = (3, 7, 10, 13)

    def __init__(self, taps: Sequence[int] = (3,), feature_size: int = 0,
                 in_channels: int = 3) -> None:
        super().__init__(taps, feature_size)

        def stage(cin: int) -> List[nn.Module]:
            return [nn.Conv2d(cin, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64),
                    nn.LeakyReLU(0.2)]

        self.features = nn.Sequential(
            *stage(in_channels), nn.MaxPool2d(2, 2),   # 0..3
            *stage(64), nn.MaxPool2d(2, 2),            # 4..7
            *stage(64),                                # 8..10
            *stage(64),                                # 11..13
        )

    def blocks(self) -> List[nn.Module]:
        starts = (0,) + tuple(e + 1 for e in self.block_ends[:-1])
        return [self.features[s:e + 1] for s, e in zip(starts, self.block_ends)]


class Block12(nn.Module):
    """ResNet-12 block: three conv3x3-BN (LeakyReLU 0.1 after the first two),
    a 1x1 conv + BN shortcut, add, LeakyReLU 0.1, 2x2 max pooling."""

    def __init__(self, in_planes: int, planes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, bias=False),
                                        nn.BatchNorm2d(planes))
        self.relu = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.pool(self.relu(out + self.downsample(x)))


RESNET12_BLOCK_CHANNELS: Tuple[int, ...] = (64, 160, 320, 640)
CONV4_BLOCK_CHANNELS: Tuple[int, ...] = (64, 64, 64, 64)


class Conv4(_TappedBackbone):
    """RCN's Conv4 (peers.md 4.1) with its ``layer{1..4}.{0,1}.*`` keys: conv 3x3
    with bias (padding 0 in layers 1-2, 1 in layers 3-4), BN, ReLU, 2x2 max
    pooling in layers 1-2. 84x84 -> 41, 19, 19, 19 (block ids 0..3)."""

    block_channels = CONV4_BLOCK_CHANNELS

    def __init__(self, taps: Sequence[int] = (3,), feature_size: int = 0,
                 in_channels: int = 3) -> None:
        super().__init__(taps, feature_size)
        for i in range(4):
            mods = [nn.Conv2d(in_channels if i == 0 else 64, 64, 3, padding=0 if i < 2 else 1),
                    nn.BatchNorm2d(64), nn.ReLU()]
            if i < 2:
                mods.append(nn.MaxPool2d(2))
            setattr(self, f"layer{i + 1}", nn.Sequential(*mods))

    def blocks(self) -> List[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]


class ResNet12(_TappedBackbone):
    """ResNet-12 (peers.md 4.1) with the RCN authors' ``layer{1..4}.0.*`` keys.
    Block ids 0..3 are the stage outputs (84x84 input: 42, 21, 10, 5)."""

    block_channels = RESNET12_BLOCK_CHANNELS

    def __init__(self, taps: Sequence[int] = (3,), feature_size: int = 0,
                 in_channels: int = 3) -> None:
        super().__init__(taps, feature_size)
        widths = (in_channels,) + self.block_channels
        for i in range(4):
            setattr(self, f"layer{i + 1}", nn.Sequential(Block12(widths[i], widths[i + 1])))

    def blocks(self) -> List[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]


def build_backbone(config: dict) -> _TappedBackbone:
    """Backbone of a model configuration (see ``lwfm_ref.model``)."""
    name = config["backbone"]
    in_channels = int(config.get("in_channels", 3))
    if name == "resnet18":
        return ResNet18Taps(first_padding=config["first_padding"],
                            hyperpixel_ids=config["hyperpixel_ids"],
                            feature_size=config["feature_size"], in_channels=in_channels)
    if name == "conv64f":
        return Conv64F(taps=config["hyperpixel_ids"], feature_size=config["feature_size"],
                       in_channels=in_channels)
    if name == "conv4":
        return Conv4(taps=config["hyperpixel_ids"], feature_size=config["feature_size"],
                     in_channels=in_channels)
    if name == "resnet12":
        return ResNet12(taps=config["hyperpixel_ids"], feature_size=config["feature_size"],
                        in_channels=in_channels)
    raise ValueError(f"unsupported backbone {name!r} (reference has resnet18, resnet12, conv64f, conv4)")
