"""Models through one registry: timm's.

Our small-image models are registered into timm with `register_model`, so
`timm.create_model("sp_cnn_m", num_classes=10, in_chans=1)` and every timm name go through
the same `build_model` call. No weights are downloaded: `pretrained` is always False.

- sp_cnn_xs|s|m|l   VGG-style CNNs sized for 28-32 px inputs
- sp_dwcnn_xs|s|m|l the same with depthwise-separable convolutions (MobileNet's block)
- sp_condcnn_xs|s|m|l the same with CondConv blocks (timm's CondConv2d, 4 experts, per-sample
  routing): ~4x the conv parameters at the MACs of sp_cnn (+ the routing and kernel mixing)
- sp_vit_micro_p4, sp_vit_tiny_p4, sp_vit_small_p4   ViT with 4 px patches (7x7 tokens at
  28 px, 8x8 at 32 px); micro (4 blocks of 64) is for tests and quick runs
- sp_nas_<stem>_<stages>[_<head>]  the searchable EfficientNetV2-style family (fused-MBConv /
  MBConv stages; skillpack.config.architecture spells the names, skillpack.train.nas builds
  them): any valid name builds; sp_nas_fused_ref and sp_nas_mbconv_ref are registered by name
- any timm name: resnet18/34/50, efficientnet_b0..b4, efficientnet_cc_b0_4e (CondConv),
  mobilenetv3_small_100 / mobilenetv3_large_100, vit_*, ...
"""
from __future__ import annotations

import numpy as np
import timm
import torch
from timm.layers import CondConv2d
from timm.models import register_model
from torch import nn

from skillpack.config.architecture import NAMED_ARCHITECTURES, ArchError, is_arch_name, parse_arch_name
from skillpack.config.architecture import PREFIX as ARCH_PREFIX
from skillpack.train.losses import ArcMarginHead
from skillpack.train.nas import PooledHead, SearchNet


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def separable_conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Depthwise 3x3 + pointwise 1x1: ~1/9 + 1/cout of a full 3x3 conv's MACs."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
                         nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


CONDCONV_EXPERTS = 4   # CondConv's experts per layer (the paper's CondConv-EfficientNet-B0 uses 4 and 8)


class CondConvBN(nn.Module):
    """A CondConv 3x3 conv + BN + ReLU (CondConv, Yang et al. 2019): the kernel is a per-sample
    mix of `num_experts` kernels, routed as timm's efficientnet CondConv blocks route:
    global average pool -> linear -> sigmoid. Per sample, one 3x3 conv of the static layer's
    MACs, plus the routing (cin x experts) and the mixing (experts x the kernel's size)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, num_experts: int = CONDCONV_EXPERTS):
        super().__init__()
        self.routing = nn.Linear(cin, num_experts)
        self.conv = CondConv2d(cin, cout, 3, stride=stride, padding=1, bias=False, num_experts=num_experts)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)

    def routing_weights(self, x: torch.Tensor) -> torch.Tensor:
        """N x experts mixing weights in (0, 1), one row per sample."""
        return torch.sigmoid(self.routing(x.mean((2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x, self.routing_weights(x))))


def cond_conv_bn(cin: int, cout: int, stride: int = 1) -> CondConvBN:
    return CondConvBN(cin, cout, stride)


class CompactCNN(PooledHead):
    """A VGG-style CNN sized for 28-32 px inputs: the MACs, not the parameter count, decide
    wall time on a CPU, so full resolution gets one thin conv and the depth sits at 1/2 and
    1/4 resolution. `block` is conv_bn, separable_conv_bn or cond_conv_bn (the first conv is
    always a static full one)."""

    def __init__(self, widths=(32, 64, 128), num_classes: int = 10, in_chans: int = 1,
                 block=conv_bn, drop_rate: float = 0.0, **_):
        super().__init__()
        w1, w2, w3 = widths
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = w3
        self.features = nn.Sequential(
            conv_bn(in_chans, w1),
            nn.MaxPool2d(2),
            block(w1, w2),
            block(w2, w2),
            nn.MaxPool2d(2),
            block(w2, w3),
            block(w3, w3),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(w3, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _no_pretrained(kwargs: dict) -> dict:
    if kwargs.pop("pretrained", False):
        raise ValueError("skillpack's own models have no pretrained weights")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return kwargs


def _register(name: str, factory) -> None:
    def create(pretrained: bool = False, **kwargs):
        return factory(**_no_pretrained({"pretrained": pretrained, **kwargs}))
    create.__name__ = name
    create.__module__ = __name__
    register_model(create)


# xs: sp_condcnn_xs has 0.64x the parameters of sp_cnn_s (44,666 vs 70,330 at 10 classes, 1 channel):
# the CondConv claim is equal accuracy with 30% fewer parameters
COMPACT_WIDTHS = {"xs": (8, 14, 24), "s": (16, 32, 64), "m": (32, 64, 128), "l": (64, 128, 256)}
for _size, _widths in COMPACT_WIDTHS.items():
    _register(f"sp_cnn_{_size}", lambda w=_widths, **kw: CompactCNN(widths=w, **kw))
    _register(f"sp_dwcnn_{_size}", lambda w=_widths, **kw: CompactCNN(widths=w, block=separable_conv_bn, **kw))
    _register(f"sp_condcnn_{_size}", lambda w=_widths, **kw: CompactCNN(widths=w, block=cond_conv_bn, **kw))

VIT_SIZES = {"micro": dict(embed_dim=64, depth=4, num_heads=4), "tiny": dict(embed_dim=192, depth=12, num_heads=3),
             "small": dict(embed_dim=384, depth=12, num_heads=6)}
for _size, _dims in VIT_SIZES.items():
    def _vit(d=_dims, img_size: int = 32, **kw):
        from timm.models.vision_transformer import VisionTransformer

        # Mean-pooled tokens instead of a class token: every patch reaches the logits directly,
        # which suits small data and gives Grad-CAM a gradient at every position.
        kw.setdefault("class_token", False)
        kw.setdefault("global_pool", "avg")
        return VisionTransformer(img_size=img_size, patch_size=4, **d, **kw)
    _register(f"sp_vit_{_size}_p4", _vit)

for _name, _spec in NAMED_ARCHITECTURES.items():
    _register(_name, lambda s=_spec, **kw: SearchNet(s, **kw))

# skillpack.model_names.OUR_MODEL_NAMES spells these names for params validation, which imports
# neither torch nor timm (tests/test_model_names.py keeps the two equal).
OUR_MODELS = [f"sp_cnn_{s}" for s in COMPACT_WIDTHS] + [f"sp_dwcnn_{s}" for s in COMPACT_WIDTHS] + \
             [f"sp_condcnn_{s}" for s in COMPACT_WIDTHS] + [f"sp_vit_{s}_p4" for s in VIT_SIZES] + \
             list(NAMED_ARCHITECTURES)


def build_model(name: str, num_classes: int, in_chans: int, img_size: int | None = None, **kwargs) -> nn.Module:
    """Any timm name (or ours), built for the data's channels and classes, never pretrained.
    num_classes=0 gives the backbone without classifier (pooled embeddings). A `sp_nas_...` name
    that is not registered is built from the architecture it spells (a search tries thousands;
    they stay out of timm's registry)."""
    if name.startswith(ARCH_PREFIX) and name not in NAMED_ARCHITECTURES:
        try:
            spec = parse_arch_name(name)
        except ArchError as err:   # one line naming the part of the architecture that is wrong
            raise ValueError(f"train.model: {err}") from None
        return SearchNet(spec, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if not is_known_model(name):
        raise ValueError(f"train.model: unknown model {name!r}; `skillpack models` lists the choices")
    if img_size is not None and _accepts_img_size(name):
        kwargs.setdefault("img_size", img_size)
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


def is_known_model(name: str) -> bool:
    """A name timm's registry (ours included) can build, or a valid `sp_nas_...` architecture."""
    return timm.is_model(name) or is_arch_name(name)


def _accepts_img_size(name: str) -> bool:
    return any(name.startswith(p) for p in ("vit_", "sp_vit_", "deit_", "swin", "beit", "eva", "cait", "xcit"))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass on one image (torch's own FLOP counter / 2, on
    the model's device). It counts aten ops, not modules, so a CondConv2d counts as what it
    runs: its one grouped conv (the static conv's MACs per image) and the kernel mixing matmul;
    the routing's linear counts as a linear. Pooling, BatchNorm and activations count 0."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    device = next(model.parameters(), torch.zeros(0)).device
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return counter.get_total_flops() // 2


# -- the classifier every run trains: backbone + head + the input convention ---------------

class ImageClassifier(nn.Module):
    """Backbone (timm, built with num_classes=0 so it returns pooled embeddings) + head, and
    the input convention: images as stored (0..255, N x C x H x W, any dtype), normalised
    with the training set's per-channel mean/std, so a saved model needs nothing else."""

    def __init__(self, backbone: nn.Module, head: nn.Module, mean: list[float], std: list[float],
                 dropout: float = 0.0, input_size: int | None = None):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.dropout = nn.Dropout(dropout)
        self.input_size = input_size   # images are resized to input_size x input_size first (None: as they come)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    backbone_frozen = False

    def freeze_backbone(self) -> ImageClassifier:
        """A linear probe's model (train.freeze_backbone): the backbone's parameters take no
        gradient and it stays in eval mode, its BatchNorm statistics as they are, whatever
        train() says; only the head (and dropout before it) trains."""
        self.backbone_frozen = True
        self.backbone.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> ImageClassifier:
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.input_size is not None:
            x = nn.functional.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer embeddings (what t-SNE, center and triplet losses see)."""
        return self.backbone(self.normalize(x))

    def classify(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        embeddings = self.dropout(embeddings)
        return self.head(embeddings, labels) if isinstance(self.head, ArcMarginHead) else self.head(embeddings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))


def embedding_dim(backbone: nn.Module, in_chans: int, size: int) -> int:
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        dim = backbone(torch.zeros(1, in_chans, size, size)).shape[1]
    backbone.train(was_training)
    return int(dim)


def build_classifier(model_name: str, num_classes: int, image_shape: tuple[int, int, int], head_cfg,
                     mean: list[float] | None = None, std: list[float] | None = None, *,
                     pretrained: str | None = None, input_size: int | None = None) -> ImageClassifier:
    """`pretrained` (train.pretrained): the backbone starts from those weights, and their config
    decides the normalisation (mean, std) and, unless `input_size` says otherwise, the input size."""
    h, w, c = image_shape
    if pretrained:
        from skillpack.train.pretrained import pretrained_model

        backbone, weights = pretrained_model(pretrained, model_name, num_classes=0, in_chans=c)
        mean, std = (_per_channel(values, c) for values in (weights.mean, weights.std))
        input_size = input_size or weights.input_size
    else:
        backbone = build_model(model_name, num_classes=0, in_chans=c, img_size=input_size or h)
    dim = embedding_dim(backbone, c, input_size or h)
    if head_cfg.name == "arcface":
        head = ArcMarginHead(dim, num_classes, head_cfg.arcface_scale, head_cfg.arcface_margin)
    else:
        head = nn.Linear(dim, num_classes)
    return ImageClassifier(backbone, head, mean or [0.0] * c, std or [1.0] * c, head_cfg.dropout, input_size)


def _per_channel(values: tuple[float, ...], channels: int) -> list[float]:
    """A weights config's mean or std (of 0..1 pixels, one per RGB channel) for 0..255 pixels of
    `channels` channels: grayscale takes the channels' average (timm sums the stem's RGB kernels)."""
    scaled = [255.0 * v for v in values]
    return scaled if len(scaled) == channels else [sum(scaled) / len(scaled)] * channels


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    flat = np.asarray(images, dtype=np.float64).reshape(-1, images.shape[-1])
    std = flat.std(axis=0)
    return flat.mean(axis=0).tolist(), np.where(std > 0, std, 1.0).tolist()


def fit_shapes(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Resize `model`'s layers to the tensor shapes of `state_dict` (a pruned model saved as plain
    tensors), so that load_state_dict fits. Our own, because torch-pruning's serialisation
    pickles module objects, which torch.load(weights_only=True) rightly refuses."""
    modules = dict(model.named_modules())
    for key, tensor in state_dict.items():
        owner, _, attr = key.rpartition(".")
        module = modules.get(owner)
        if module is None:
            continue
        current = getattr(module, attr, None)
        if not isinstance(current, torch.Tensor) or current.shape == tensor.shape:
            continue
        if isinstance(current, nn.Parameter):
            setattr(module, attr, nn.Parameter(torch.empty_like(tensor), requires_grad=current.requires_grad))
        else:
            module.register_buffer(attr, torch.empty_like(tensor))
    for module in modules.values():
        _sync_attributes(module)
    return model


def _sync_attributes(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups > 1 and module.groups == module.in_channels
        module.out_channels = module.weight.shape[0]
        module.groups = module.out_channels if depthwise else module.groups
        module.in_channels = module.weight.shape[1] * module.groups
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.num_features = module.weight.shape[0] if module.weight is not None else module.running_mean.shape[0]
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
