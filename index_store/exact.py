"""Brute-force numpy backend: exact answers, the reference approximate backends are measured by."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from index_store.base import (
    REFINE_MARGIN,
    Backend,
    IndexCorruptError,
    Neighbors,
    as_matrix,
    as_query,
    cosine_from_unit,
    exact_distances,
    l2_from_norms,
    row_norms,
    smallest,
    sorted_neighbors,
    unit_rows,
)

log = logging.getLogger(__name__)

MARKER = "exact.json"


class ExactBackend(Backend):
    """Scans every row: float32 matmul on unit-length copies (cosine) or via norms (l2).

    For l2 the matmul only ranks; the returned distances are recomputed from differences so they
    are precise near 0. Index and query parameters are accepted and ignored.
    """

    name = "exact"
    is_exact = True

    def __init__(self, space: str, index_params: dict | None = None,
                 query_params: dict | None = None) -> None:
        super().__init__(space, index_params, query_params)
        self._vectors = np.empty((0, 0), np.float32)
        self._prepared = np.empty((0, 0), np.float32)
        self._squared_norms = np.empty(0, np.float32)

    def build(self, vectors: np.ndarray) -> None:
        self._vectors = as_matrix(vectors)
        self.dim = self._vectors.shape[1]
        if self.space == "cosinesimil":
            self._prepared = unit_rows(self._vectors)
        else:
            self._prepared = self._vectors
            self._squared_norms = row_norms(self._vectors) ** 2

    def query(self, vector: np.ndarray, k: int) -> Neighbors:
        query = as_query(vector, self.dim)
        if self.space == "cosinesimil":
            distances = cosine_from_unit(self._prepared, query)
            best = smallest(distances, k)
            return sorted_neighbors(best, distances[best])
        ranked = l2_from_norms(self._prepared, self._squared_norms, query)
        candidates = smallest(ranked, k + REFINE_MARGIN)
        precise = exact_distances(self._vectors[candidates], query, "l2")
        keep = smallest(precise, k)
        return sorted_neighbors(candidates[keep], precise[keep])

    def save(self, folder: Path) -> None:
        marker = {"backend": self.name, "space": self.space, "n": self.size, "dim": self.dim}
        (Path(folder) / MARKER).write_text(json.dumps(marker))

    @classmethod
    def load(cls, folder: Path, vectors: np.ndarray, space: str, index_params: dict,
             query_params: dict) -> ExactBackend:
        marker_path = Path(folder) / MARKER
        try:
            marker = json.loads(marker_path.read_text())
        except (OSError, ValueError) as error:
            raise IndexCorruptError(f"exact index marker {marker_path} unreadable: {error}.") \
                from error
        if marker.get("n") != len(vectors) or marker.get("dim") != vectors.shape[1]:
            raise IndexCorruptError(
                f"exact index {folder} was saved for {marker.get('n')} x {marker.get('dim')} "
                f"vectors, found {vectors.shape[0]} x {vectors.shape[1]}.")
        backend = cls(space, index_params, query_params)
        backend.build(vectors)
        return backend

    @property
    def size(self) -> int:
        return int(self._vectors.shape[0])
