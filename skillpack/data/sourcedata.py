"""What every data source returns: uint8 arrays per split (Split) with the classes and the
entries it did not prepare (SourceData), and the error a user fixes in data.* (SourceError).
A leaf module (numpy and skillpack.io), so the split and store code and every source import
it without one another."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from skillpack.io import UserError


class SourceError(UserError, RuntimeError):
    pass


@dataclass
class Split:
    images: np.ndarray  # uint8, N x H x W x C
    labels: np.ndarray  # int64, N
    ids: list[str]


@dataclass
class SourceData:
    name: str
    classes: list[str]
    splits: dict[str, Split]  # "train", and "test" / "val" where the source has them
    quarantine: list[dict] = field(default_factory=list)  # {"path", "split", "reason"}: unreadable images
    ignored: list[dict] = field(default_factory=list)     # {"path", "split", "reason"}: entries not read
    info: dict = field(default_factory=dict)              # layout, empty classes, one-split classes, ...

    @property
    def n_found(self) -> int:
        return sum(len(s.labels) for s in self.splits.values()) + len(self.quarantine) + len(self.ignored)
