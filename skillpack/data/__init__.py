"""Data: sources -> one prepared store (uint8 arrays per split + manifest) -> tensor batches.

The names below load on first use: `from skillpack.data.sources import SourceError` (what
every stage's error handling needs) then imports neither the store's pandas nor
scikit-learn (1.2 s, python -X importtime, 2-core AMD EPYC)."""
from __future__ import annotations

__all__ = ["SOURCES", "SourceData", "SourceError", "load_source", "PreparedStore", "write_store"]
_FROM_SOURCES = ("SOURCES", "SourceData", "SourceError", "load_source")
_FROM_STORE = ("PreparedStore", "write_store")


def __getattr__(name: str):
    if name in _FROM_SOURCES:
        from skillpack.data import sources as module
    elif name in _FROM_STORE:
        from skillpack.data import store as module
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(module, name)
