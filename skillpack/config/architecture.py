"""The searchable CNN family's architectures (EfficientNetV2-style, sized for 28-32 px), and
their names: torch-free, so that params validation and a search driver can make and check a
name without importing torch; skillpack.train.nas builds the network.

An architecture is a stem, 3-4 stages and an optional head. Each stage is `depth` blocks of one
type, `width` output channels, a `kernel` (3 or 5), an expansion ratio (1, 4 or 6) and
squeeze-excitation on or off; the first block of a stage halves the resolution (the first
stage keeps it: 28 px -> 28, 14, 7(, 4)). Block types:

- fused (Fused-MBConv, EfficientNetV2's early stages): one full kxk conv expanding to
  width_in x expansion, [SE], a 1x1 projection;
- mbconv (MBConv): 1x1 expansion, depthwise kxk, [SE], 1x1 projection (at expansion 1 the
  1x1 expansion is left out, as in EfficientNet's MBConv1).

The name spells the whole architecture, so any recipe can train one as `train.model: <name>`:

    sp_nas_s16_f1x16k3e1_f2x32k3e4_m3x64k3e4se_m2x96k5e6se_h256
    |      |   |                                           `- head: 1x1 conv to 256 before pooling (optional)
    |      |   `- per stage: f|m, depth x width, k kernel, e expansion, se when on
    |      `- stem: 3x3 conv to 16 channels
    `- the family's prefix

Underscores only: timm reads a '.' in a model name as a pretrained tag and a ':' as a hub
scheme, and the name also becomes a folder and an MLflow tag. Named architectures
(NAMED_ARCHITECTURES) are registered into timm under their own names.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from skillpack.model_names import ARCH_PREFIX as PREFIX

BLOCK_TYPES = {"f": "fused", "m": "mbconv"}
KERNELS, EXPANSIONS = (3, 5), (1, 4, 6)
STAGES, DEPTHS, WIDTHS = (3, 4), (1, 8), (8, 512)   # counts; (min, max) blocks and channels
HEAD_WIDTHS = (0, 2048)                            # 0: no head conv

_STAGE = re.compile(r"(?P<type>[fm])(?P<depth>\d+)x(?P<width>\d+)k(?P<kernel>\d+)e(?P<expansion>\d+)(?P<se>se)?")


class ArchError(ValueError):
    """A bad architecture: the one-line message names the part and what is wrong."""


@dataclass(frozen=True)
class StageSpec:
    block: str        # fused | mbconv
    depth: int
    width: int
    kernel: int = 3
    expansion: int = 4
    se: bool = False

    def check(self, where: str) -> None:
        if self.block not in BLOCK_TYPES.values():
            raise ArchError(f"{where}: block {self.block!r} is not one of {sorted(BLOCK_TYPES.values())}")
        _in_range(f"{where}: depth", self.depth, DEPTHS)
        _in_range(f"{where}: width", self.width, WIDTHS)
        if self.kernel not in KERNELS:
            raise ArchError(f"{where}: kernel {self.kernel!r} is not one of {list(KERNELS)}")
        if self.expansion not in EXPANSIONS:
            raise ArchError(f"{where}: expansion {self.expansion!r} is not one of {list(EXPANSIONS)}")
        if not isinstance(self.se, bool):
            raise ArchError(f"{where}: se {self.se!r} is not true or false")

    def encode(self) -> str:
        letter = next(k for k, v in BLOCK_TYPES.items() if v == self.block)
        return f"{letter}{self.depth}x{self.width}k{self.kernel}e{self.expansion}" + ("se" if self.se else "")


@dataclass(frozen=True)
class ArchSpec:
    stem: int
    stages: tuple[StageSpec, ...]
    head: int = 0     # 1x1 conv to this many channels before pooling; 0: pool the last stage

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))
        _in_range("architecture: stem", self.stem, WIDTHS)
        if len(self.stages) not in STAGES:
            raise ArchError(f"architecture: stages: {len(self.stages)} stages, expected {' or '.join(map(str, STAGES))}")
        for i, stage in enumerate(self.stages, 1):
            if not isinstance(stage, StageSpec):
                raise ArchError(f"architecture: stage {i}: {stage!r} is not a StageSpec")
            stage.check(f"architecture: stage {i}")
        if self.head != 0:
            _in_range("architecture: head", self.head, (WIDTHS[0], HEAD_WIDTHS[1]))

    def encode(self) -> str:
        parts = [f"s{self.stem}", *(s.encode() for s in self.stages)] + ([f"h{self.head}"] if self.head else [])
        return PREFIX + "_".join(parts)

    def as_dict(self) -> dict:
        return {"stem": self.stem, "head": self.head, "stages": [dict(s.__dict__) for s in self.stages]}

    @classmethod
    def from_dict(cls, spec: dict) -> ArchSpec:
        """From {stem, stages: [{block, depth, width, kernel, expansion, se}, ...], head} (a
        search's trial, a YAML file); unknown keys are errors."""
        unknown = set(spec) - {"stem", "stages", "head"}
        if unknown or "stem" not in spec or "stages" not in spec:
            raise ArchError(f"architecture: keys {sorted(spec)}: expected stem, stages and optionally head")
        stages = []
        for i, stage in enumerate(spec["stages"], 1):
            try:
                stages.append(StageSpec(**stage))
            except TypeError as err:
                raise ArchError(f"architecture: stage {i}: {err}") from None
        return cls(spec["stem"], tuple(stages), spec.get("head", 0))


def _in_range(what: str, value, bounds: tuple[int, int]) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
        raise ArchError(f"{what} {value!r} is not a whole number in [{bounds[0]}, {bounds[1]}]")


def parse_arch_name(name: str) -> ArchSpec:
    """The architecture a `sp_nas_...` name spells; ArchError names the part that is wrong."""
    if name in NAMED_ARCHITECTURES:
        return NAMED_ARCHITECTURES[name]
    if not name.startswith(PREFIX):
        raise ArchError(f"architecture {name!r}: does not start with {PREFIX!r}")
    parts = name[len(PREFIX):].split("_")
    stem = re.fullmatch(r"s(\d+)", parts[0])
    if stem is None:
        raise ArchError(f"architecture {name!r}: stem {parts[0]!r} is not s<width> (e.g. s16)")
    head = re.fullmatch(r"h(\d+)", parts[-1]) if len(parts) > 1 else None
    stages = []
    for i, part in enumerate(parts[1:len(parts) - (head is not None)], 1):
        match = _STAGE.fullmatch(part)
        if match is None:
            raise ArchError(f"architecture {name!r}: stage {i} {part!r} is not "
                            f"<f|m><depth>x<width>k<kernel>e<expansion>[se] (e.g. m3x48k5e6se)")
        g = match.groupdict()
        stages.append(StageSpec(BLOCK_TYPES[g["type"]], int(g["depth"]), int(g["width"]), int(g["kernel"]),
                                int(g["expansion"]), g["se"] is not None))
    return ArchSpec(int(stem.group(1)), tuple(stages), int(head.group(1)) if head else 0)


def is_arch_name(name: str) -> bool:
    """A name of this family that spells a valid architecture (or a named one)."""
    try:
        parse_arch_name(name)
    except ArchError:
        return False
    return True


# Two references of equal parameter count (407,754 and 406,688 at 1 channel and 10 classes;
# tests keep them within 5%) with the same stem, depths, strides, late stages and head:
# Fused-MBConv in the two early stages against MBConv everywhere, whose second stage is wider
# (56 channels against 32) to spend the parameters a full 3x3 expansion conv costs. The question
# they answer: does the fused early-stage design reach a fixed accuracy in fewer epochs at
# equal parameters?
_LATE_STAGES = (StageSpec("mbconv", 3, 64, 3, 4, True), StageSpec("mbconv", 2, 96, 3, 6, True))
NAMED_ARCHITECTURES: dict[str, ArchSpec] = {
    "sp_nas_fused_ref": ArchSpec(16, (StageSpec("fused", 1, 16, 3, 1), StageSpec("fused", 2, 32, 3, 4),
                                      *_LATE_STAGES), head=192),
    "sp_nas_mbconv_ref": ArchSpec(16, (StageSpec("mbconv", 1, 16, 3, 1), StageSpec("mbconv", 2, 56, 3, 4),
                                       *_LATE_STAGES), head=192),
}
