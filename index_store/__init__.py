"""Vectors to neighbours: backend interface, nmslib HNSW and exact backends, store, evaluation."""

from index_store.backends import BACKENDS, backend_class, make_backend
from index_store.base import (
    Backend,
    IndexCorruptError,
    IndexMissingError,
    IndexStaleError,
    IndexStoreError,
    Neighbors,
    exact_distances,
    filtered_query,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "IndexCorruptError",
    "IndexMissingError",
    "IndexStaleError",
    "IndexStoreError",
    "Neighbors",
    "backend_class",
    "exact_distances",
    "filtered_query",
    "make_backend",
]
