"""Data: sources -> one prepared store (uint8 arrays per split + manifest) -> tensor batches."""
from skillpack.data.sources import SOURCES, SourceData, SourceError, load_source
from skillpack.data.store import PreparedStore, write_store

__all__ = ["SOURCES", "SourceData", "SourceError", "load_source", "PreparedStore", "write_store"]
