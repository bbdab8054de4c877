"""Models through one registry: timm's.

Our compact CNNs for 28-32 px images are registered into timm with `register_model`, so
`timm.create_model("sp_cnn_m", num_classes=10, in_chans=1)` and every timm name go through
the same `build_model` call. No weights are downloaded: `pretrained` is always False here.
"""
from __future__ import annotations

import timm
import torch
from torch import nn
from timm.models import register_model


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class CompactCNN(nn.Module):
    """A VGG-style CNN sized for 28-32 px inputs: the MACs, not the parameter count, decide
    wall time on a CPU, so full resolution gets one thin conv and the depth sits at 14 and 7 px."""

    def __init__(self, widths=(32, 64, 128), num_classes: int = 10, in_chans: int = 1,
                 drop_rate: float = 0.1, **_):
        super().__init__()
        w1, w2, w3 = widths
        self.num_classes = num_classes
        self.num_features = w3
        self.features = nn.Sequential(
            _conv_bn(in_chans, w1),
            nn.MaxPool2d(2),             # 28 -> 14
            _conv_bn(w1, w2),
            _conv_bn(w2, w2),
            nn.MaxPool2d(2),             # 14 -> 7
            _conv_bn(w2, w3),
            _conv_bn(w3, w3),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(w3, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x).flatten(1)
        return x if pre_logits else self.fc(self.drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc


def _compact(widths):
    def create(pretrained: bool = False, **kwargs) -> CompactCNN:
        if pretrained:
            raise ValueError("skillpack's compact CNNs have no pretrained weights")
        kwargs.pop("pretrained_cfg", None)
        kwargs.pop("pretrained_cfg_overlay", None)
        return CompactCNN(widths=widths, **kwargs)
    return create


COMPACT_WIDTHS = {"sp_cnn_s": (16, 32, 64), "sp_cnn_m": (32, 64, 128), "sp_cnn_l": (64, 128, 256)}
for _name, _widths in COMPACT_WIDTHS.items():
    _fn = _compact(_widths)
    _fn.__name__ = _name
    _fn.__module__ = __name__
    register_model(_fn)


def build_model(name: str, num_classes: int, in_chans: int, img_size: int | None = None, **kwargs) -> nn.Module:
    """Any timm name (or ours), built for the data's channels and classes, never pretrained."""
    if name not in timm.list_models() and name not in COMPACT_WIDTHS:
        raise ValueError(f"train.model: unknown model {name!r}; `skillpack models` lists the choices")
    if img_size is not None and _accepts_img_size(name):
        kwargs.setdefault("img_size", img_size)
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _accepts_img_size(name: str) -> bool:
    return any(name.startswith(p) for p in ("vit_", "deit_", "swin", "beit", "eva", "cait", "xcit"))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass on one image (torch's own FLOP counter / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    return counter.get_total_flops() // 2
