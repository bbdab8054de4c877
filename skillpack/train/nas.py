"""The searchable CNN family (skillpack.config.architecture describes and names it), built from
timm's own EfficientNet blocks:

- fused stages: timm's EdgeResidual (Fused-MBConv: full kxk expansion conv, SE, 1x1 projection);
- mbconv stages: timm's InvertedResidual (1x1 expansion, depthwise kxk, SE, 1x1 projection) and,
  at expansion 1, timm's DepthwiseSeparableConv (EfficientNet's MBConv1: no 1x1 expansion);
- squeeze-excitation: timm's SqueezeExcite, reduced to a quarter of the block's input channels
  as in EfficientNet (its rd_ratio is of the expanded channels, hence 0.25 / expansion);
- stem and head: timm's ConvBnAct.

SiLU activations and BatchNorm as in EfficientNetV2. A block keeps a residual connection where
its input and output shapes agree (timm's blocks decide it). Only the network around the blocks
(stem -> stages -> head -> pool -> linear) is ours: timm's EfficientNet class wants ImageNet's
stem (stride 2) and a decoded block-string per stage, while our 28-32 px inputs keep full
resolution in the first stage.
"""
from __future__ import annotations

from functools import partial

import torch
from timm.models._efficientnet_blocks import (
    ConvBnAct,
    DepthwiseSeparableConv,
    EdgeResidual,
    InvertedResidual,
    SqueezeExcite,
)
from torch import nn

from skillpack.config.architecture import ArchSpec, StageSpec

ACTIVATION = nn.SiLU
SE_RATIO = 0.25   # squeeze to this share of the block's input channels


def make_block(stage: StageSpec, cin: int, stride: int, drop_path_rate: float = 0.0) -> nn.Module:
    """One block of `stage` from `cin` channels to stage.width."""
    se = partial(SqueezeExcite, rd_ratio=SE_RATIO / stage.expansion) if stage.se else None
    common = dict(stride=stride, act_layer=ACTIVATION, se_layer=se, drop_path_rate=drop_path_rate)
    if stage.block == "fused":
        return EdgeResidual(cin, stage.width, exp_kernel_size=stage.kernel, exp_ratio=stage.expansion, **common)
    if stage.expansion == 1:
        return DepthwiseSeparableConv(cin, stage.width, dw_kernel_size=stage.kernel, **common)
    return InvertedResidual(cin, stage.width, dw_kernel_size=stage.kernel, exp_ratio=stage.expansion, **common)


class PooledHead(nn.Module):
    """timm's classifier protocol over features -> global average pool -> dropout -> linear (self.pool,
    self.drop, self.fc), shared by the compact CNNs and this family."""

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x).flatten(1)
        return x if pre_logits else self.fc(self.drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc


class SearchNet(PooledHead):
    """Stem (3x3 conv, stride 1) -> stages (the first block of every stage but the first halves
    the resolution) -> [1x1 head conv] -> global average pool -> dropout -> linear."""

    def __init__(self, spec: ArchSpec, num_classes: int = 10, in_chans: int = 1, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, **_):
        super().__init__()
        self.spec, self.num_classes = spec, num_classes
        self.stem = ConvBnAct(in_chans, spec.stem, 3, act_layer=ACTIVATION)
        blocks, cin = [], spec.stem
        total = sum(s.depth for s in spec.stages)
        for index, stage in enumerate(spec.stages):
            for depth in range(stage.depth):
                stride = 2 if index > 0 and depth == 0 else 1
                blocks.append(make_block(stage, cin, stride, drop_path_rate * len(blocks) / max(total - 1, 1)))
                cin = stage.width
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBnAct(cin, spec.head, 1, act_layer=ACTIVATION) if spec.head else nn.Identity()
        self.num_features = self.head_hidden_size = spec.head or cin
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))
