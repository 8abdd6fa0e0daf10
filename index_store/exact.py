"""Exact search: the brute-force numpy backend, and `exact_knn`, the batched ground truth every
approximate backend is measured against (build evaluation, `--tune`, `bench/`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from index_store.base import (
    REFINE_MARGIN,
    Backend,
    IndexCorruptError,
    Neighbors,
    as_matrix,
    as_query,
    check_space,
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
_SCORE_BUDGET = 1 << 25  # floats per query chunk of the exact ground truth (128 MiB)


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


# exact ground truth for many queries (evaluation, --tune, bench/) ---------------------------


def _scorer(base: np.ndarray, space: str) -> Callable[[np.ndarray], np.ndarray]:
    """queries [q, dim] → rank scores [q, n] (smaller = nearer), by one float32 matmul."""
    if space == "cosinesimil":
        unit = unit_rows(base)
        return lambda queries: -(unit_rows(queries) @ unit.T)
    squared = row_norms(base) ** 2
    return lambda queries: squared[None, :] - 2.0 * (queries @ base.T)


def exact_knn(base: np.ndarray, queries: np.ndarray, k: int, space: str,
              own_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of base per query ([q, k] rows, [q, k] distances, ascending).

    own_rows: each query's own row in base, left out of its result (-1 or None: none).
    Candidates come from a batched matmul; their distances are recomputed with
    `exact_distances` (the package's convention and precision).
    """
    base, queries = as_matrix(base), as_matrix(queries)
    check_space(space)
    own = np.full(len(queries), -1) if own_rows is None else np.asarray(own_rows)
    want = min(k + 1 + REFINE_MARGIN, base.shape[0])
    score = _scorer(base, space)
    chunk = max(1, _SCORE_BUDGET // max(base.shape[0], 1))
    rows = np.full((len(queries), k), -1, np.int64)
    distances = np.full((len(queries), k), np.inf, np.float32)
    for start in range(0, len(queries), chunk):
        scores = score(queries[start:start + chunk])
        candidates = np.argpartition(scores, want - 1, axis=1)[:, :want]
        for offset, found in enumerate(candidates):
            q = start + offset
            rows[q], distances[q] = _rerank(base, queries[q], found, own[q], k, space)
    return rows, distances


def _rerank(base: np.ndarray, query: np.ndarray, candidates: np.ndarray, own_row: int, k: int,
            space: str) -> tuple[np.ndarray, np.ndarray]:
    candidates = candidates[candidates != own_row]
    precise = exact_distances(base[candidates], query, space)
    order = np.lexsort((candidates, precise))[:k]
    rows = np.full(k, -1, np.int64)
    distances = np.full(k, np.inf, np.float32)
    rows[: len(order)], distances[: len(order)] = candidates[order], precise[order]
    return rows, distances
