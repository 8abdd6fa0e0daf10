"""Backend interface, neighbour results, exact distances and the one filtered search for all.

Distances, the same for every backend:

* ``cosinesimil``: ``1 - cosine similarity`` (0 = same direction, 1 = orthogonal, 2 = opposite).
* ``l2``: the Euclidean distance ``||a - b||`` (not squared; nmslib's squared value is converted).
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

log = logging.getLogger(__name__)

SPACES = ("cosinesimil", "l2")

# Filtered search: at most this many allowed rows (or this fraction of the catalog, whichever is
# larger) are searched exactly with numpy; scanning a few thousand rows costs well under a
# millisecond per 100 dimensions and is always exact.
SELECTIVE_MAX_ROWS = 2000
SELECTIVE_MAX_FRACTION = 0.05
# Over-fetching from an approximate index stops paying once it fetches more than this fraction of
# the catalog, or more than 1/SCAN_COST_RATIO of the allowed rows (an HNSW search for f candidates
# computes several times f distances, so scanning the allowed rows exactly is then cheaper).
MAX_FETCH_FRACTION = 0.1
SCAN_COST_RATIO = 8
_L2_CHUNK_ROWS = 8192
# The exact backend ranks l2 by a fast matmul, then recomputes this many extra candidates exactly.
REFINE_MARGIN = 16


class IndexStoreError(Exception):
    """Any index problem the user fixes by rebuilding; str() ends with the rebuild command."""

    def __init__(self, detail: str, config_path: str | Path | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.config_path = config_path

    def __str__(self) -> str:
        return f"{self.detail} {rebuild_hint(self.config_path)}"


class IndexMissingError(IndexStoreError):
    """No index has been built (or saved) at the configured path."""


class IndexStaleError(IndexStoreError):
    """The saved index was built from a different model, catalog or index setting."""


class IndexCorruptError(IndexStoreError):
    """Index files are truncated, altered or inconsistent with each other."""


def rebuild_hint(config_path: str | Path | None = None) -> str:
    """The command that rebuilds the index, naming the config when it is known."""
    config = str(config_path) if config_path else "<your config.yml>"
    return f"Run `python build_index.py --config {config}` to (re)build the index."



def check_space(space: str) -> str:
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; allowed: {', '.join(SPACES)}")
    return space


@dataclass(frozen=True, eq=False)
class Neighbors:
    """Result of one query: catalog row positions (int64) and distances (float32), ascending."""

    rows: np.ndarray
    distances: np.ndarray

    def __post_init__(self) -> None:
        rows = np.asarray(self.rows, dtype=np.int64).reshape(-1)
        distances = np.asarray(self.distances, dtype=np.float32).reshape(-1)
        if rows.shape != distances.shape:
            raise ValueError(f"rows {rows.shape} and distances {distances.shape} differ in length")
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "distances", distances)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @classmethod
    def empty(cls) -> Neighbors:
        return cls(np.empty(0, np.int64), np.empty(0, np.float32))

    def head(self, n: int) -> Neighbors:
        return Neighbors(self.rows[:n], self.distances[:n])

    def take(self, keep: np.ndarray) -> Neighbors:
        """The entries selected by a boolean mask or index array, order kept."""
        return Neighbors(self.rows[keep], self.distances[keep])


def sorted_neighbors(rows: np.ndarray, distances: np.ndarray) -> Neighbors:
    """Neighbours sorted by distance, ties broken by row so results are deterministic."""
    order = np.lexsort((rows, distances))
    return Neighbors(np.asarray(rows)[order], np.asarray(distances)[order])


def as_matrix(vectors: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 [n, dim] matrix; rejects non-finite values."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"vectors must be a 2-D [n, dim] array, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("vectors contain NaN or infinite values")
    return matrix


def as_query(vector: np.ndarray, dim: int) -> np.ndarray:
    """A float32 query vector of length dim; rejects wrong shapes and non-finite values."""
    query = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
    if query.shape[0] != dim:
        raise ValueError(f"query has {query.shape[0]} dimensions, the index has {dim}")
    if not np.isfinite(query).all():
        raise ValueError("query vector contains NaN or infinite values")
    return query


def row_norms(vectors: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float32))


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero, so their cosine distance is 1)."""
    norms = row_norms(vectors)
    norms[norms == 0] = 1.0
    return (vectors / norms[:, None]).astype(np.float32, copy=False)


def unit_vector(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def cosine_from_unit(unit_vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """1 - cosine for already unit-length rows (float32 matmul)."""
    similarity = unit_vectors @ unit_vector(query).astype(np.float32)
    return np.clip(1.0 - similarity, 0.0, 2.0).astype(np.float32)


def l2_exact(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Euclidean distances from differences (precise near 0), in chunks to bound memory."""
    out = np.empty(vectors.shape[0], np.float32)
    for start in range(0, vectors.shape[0], _L2_CHUNK_ROWS):
        diff = vectors[start:start + _L2_CHUNK_ROWS] - query
        out[start:start + _L2_CHUNK_ROWS] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


def l2_from_norms(vectors: np.ndarray, squared_norms: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Euclidean distances via |a|^2 - 2ab + |b|^2 (fast matmul, ~1e-3 error near 0: rank only)."""
    squared = squared_norms - 2.0 * (vectors @ query) + float(query @ query)
    return np.sqrt(np.maximum(squared, 0.0)).astype(np.float32)


def exact_distances(vectors: np.ndarray, query: np.ndarray, space: str) -> np.ndarray:
    """Distances (float32, one per row of vectors) from query, in this package's convention."""
    check_space(space)
    matrix = np.asarray(vectors, dtype=np.float32)
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    if space == "cosinesimil":
        return cosine_from_unit(unit_rows(matrix), query)
    return l2_exact(matrix, query)


def smallest(distances: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k smallest distances (unordered), k clipped to the length."""
    k = min(k, distances.shape[0])
    if k <= 0:
        return np.empty(0, np.int64)
    if k == distances.shape[0]:
        return np.arange(k)
    return np.argpartition(distances, k - 1)[:k]


def exact_topk(vectors: np.ndarray, query: np.ndarray, k: int, space: str,
               rows: np.ndarray | None = None) -> Neighbors:
    """Exact k nearest among all rows, or among `rows` (row positions into vectors)."""
    subset = vectors if rows is None else vectors[rows]
    distances = exact_distances(subset, query, space)
    best = smallest(distances, k)
    positions = best if rows is None else np.asarray(rows)[best]
    return sorted_neighbors(positions, distances[best])


class Backend(abc.ABC):
    """A nearest-neighbour index over the rows of one vector matrix.

    Rows are positions into the matrix given to `build` (or `load`); the store owns that matrix.
    `query` is unfiltered and may return fewer than k rows (approximate backends); filtering,
    excluding rows and the exact-count guarantee live in `filtered_query`, once for every backend.
    A backend that keeps its own copy of the data (a vector database such as Milvus) can ignore
    the `vectors` passed to `load`, and can answer filters natively via `native_filtered_query`.
    """

    name: ClassVar[str] = ""
    #: True when `query` is already exact: filtered search then scans the allowed rows directly.
    is_exact: ClassVar[bool] = False
    #: Index-time parameter names this backend accepts (None: any, ignored).
    index_param_names: ClassVar[tuple[str, ...] | None] = None
    #: Query-time parameter names this backend accepts (None: any, ignored).
    query_param_names: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, space: str, index_params: Mapping[str, Any] | None = None,
                 query_params: Mapping[str, Any] | None = None) -> None:
        self.space = check_space(space)
        self.index_params = self._checked("index", dict(index_params or {}),
                                          self.index_param_names)
        self.query_params = self._checked("query", dict(query_params or {}),
                                          self.query_param_names)
        self.dim = 0

    def _checked(self, kind: str, params: dict, allowed: tuple[str, ...] | None) -> dict:
        unknown = sorted(set(params) - set(allowed)) if allowed is not None else []
        if unknown:
            raise ValueError(f"{self.name} backend: unknown {kind}-time parameter(s) {unknown}; "
                             f"allowed: {', '.join(allowed or ())}")
        return params

    @abc.abstractmethod
    def build(self, vectors: np.ndarray) -> None:
        """Index every row of vectors (float32 [n, dim]); row i is returned as i."""

    def build_catalog(self, vectors: np.ndarray, items: Any) -> None:
        """Index vectors with their row-aligned item table; a backend that stores the items
        (Milvus) overrides this, the others only index the vectors."""
        self.build(vectors)

    def set_query_params(self, **params: Any) -> None:
        """Change query-time settings (never part of the index fingerprint)."""
        self.query_params.update(self._checked("query", params, self.query_param_names))
        self._apply_query_params()

    def _apply_query_params(self) -> None:  # noqa: B027 - optional hook, nothing by default
        """Push self.query_params to the library; backends without settings do nothing."""

    @abc.abstractmethod
    def query(self, vector: np.ndarray, k: int) -> Neighbors:
        """Up to k nearest rows of one vector, ascending distance; unfiltered."""

    def query_batch(self, vectors: np.ndarray, k: int) -> list[Neighbors]:
        """`query` for each row of vectors."""
        return [self.query(vector, k) for vector in np.asarray(vectors, dtype=np.float32)]

    def native_filtered_query(self, vector: np.ndarray, k: int,
                              allowed: np.ndarray) -> Neighbors | None:
        """Backends with their own filtering (a vector database) answer here; None: not supported.

        `allowed` is a boolean mask over rows. The result must hold exactly min(k, allowed.sum())
        allowed rows, ascending.
        """
        return None

    @abc.abstractmethod
    def save(self, folder: Path) -> None:
        """Write the index files into folder (which exists); the vectors are saved by the store."""

    @classmethod
    @abc.abstractmethod
    def load(cls, folder: Path, vectors: np.ndarray, space: str, index_params: dict,
             query_params: dict) -> Backend:
        """Open an index saved by `save` over the same vectors; IndexCorruptError if damaged."""

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Number of indexed rows."""


def _allowed_mask(n: int, allowed: np.ndarray | None, exclude: np.ndarray | None
                  ) -> np.ndarray | None:
    """One boolean mask from allowed (mask) and exclude (row positions); None: everything."""
    if allowed is None and (exclude is None or len(exclude) == 0):
        return None
    if allowed is None:
        mask = np.ones(n, bool)
    else:
        mask = np.array(allowed, dtype=bool).reshape(-1)
        if mask.shape[0] != n:
            raise ValueError(f"allowed mask has {mask.shape[0]} entries, the catalog has {n}")
    if exclude is not None and len(exclude):
        rows = np.asarray(exclude, dtype=np.int64).reshape(-1)
        mask[rows[(rows >= 0) & (rows < n)]] = False
    return mask


def is_selective(n_allowed: int, n: int) -> bool:
    """Few enough allowed rows that an exact scan of them beats asking the index."""
    return n_allowed <= max(SELECTIVE_MAX_ROWS, SELECTIVE_MAX_FRACTION * n)


def _overfetch(backend: Backend, query: np.ndarray, want: int, mask: np.ndarray,
               n_allowed: int) -> Neighbors | None:
    """Ask the index for more than k and keep allowed rows; doubles; None when it stops paying."""
    n = mask.shape[0]
    limit = int(min(MAX_FETCH_FRACTION * n, n_allowed / SCAN_COST_RATIO))
    fetch = min(n, math.ceil(want / (n_allowed / n) * 2))
    while fetch <= limit:
        found = backend.query(query, fetch)
        kept = found.take(mask[found.rows])
        log.debug("filtered search: fetched %d, kept %d of %d wanted", fetch, len(kept), want)
        if len(kept) >= want:
            return kept.head(want)
        if fetch >= n:
            break
        fetch = min(fetch * 2, n)
    return None


def filtered_query(backend: Backend, vectors: np.ndarray, query: np.ndarray, k: int,
                   allowed: np.ndarray | None = None, space: str | None = None,
                   exclude: np.ndarray | None = None) -> Neighbors:
    """The k nearest allowed, non-excluded rows: exactly min(k, available) rows, ascending.

    allowed: boolean mask over rows (None: all). exclude: row positions to drop (e.g. the query's
    own item). Strategy: no restriction → the backend (exact scan if it returns too few, as
    HNSW can when k is near the catalog size); exact backend or few allowed rows (see
    `is_selective`: <= max(2000, 5% of the catalog)) → exact numpy scan of those rows; otherwise
    over-fetch k / selectivity * 2 from the backend, keep allowed rows, double while short, and
    scan exactly once the fetch would exceed 10% of the catalog (MAX_FETCH_FRACTION) or 1/8 of
    the allowed rows (SCAN_COST_RATIO).
    """
    space = check_space(space or backend.space)
    n = vectors.shape[0]
    query = as_query(query, vectors.shape[1])
    mask = _allowed_mask(n, allowed, exclude)
    n_allowed = n if mask is None else int(mask.sum())
    want = min(int(k), n_allowed)
    if want <= 0:
        return Neighbors.empty()
    if mask is None:
        return _unrestricted(backend, vectors, query, want, space)
    native = backend.native_filtered_query(query, want, mask)
    if native is not None:
        return native
    if not backend.is_exact and not is_selective(n_allowed, n):
        found = _overfetch(backend, query, want, mask, n_allowed)
        if found is not None:
            return found
        log.debug("filtered search: over-fetch stopped paying, exact scan of %d rows", n_allowed)
    else:
        log.debug("filtered search: exact scan of %d allowed rows", n_allowed)
    return exact_topk(vectors, query, want, space, rows=np.flatnonzero(mask))


def _unrestricted(backend: Backend, vectors: np.ndarray, query: np.ndarray, want: int,
                  space: str) -> Neighbors:
    found = backend.query(query, want)
    if len(found) >= want:
        return found.head(want)
    log.debug("index returned %d of %d rows; exact scan", len(found), want)
    return exact_topk(vectors, query, want, space)


def filtered_query_batch(backend: Backend, vectors: np.ndarray, queries: np.ndarray, k: int,
                         allowed: np.ndarray | None = None, space: str | None = None,
                         excludes: list[np.ndarray | None] | None = None) -> list[Neighbors]:
    """`filtered_query` per query row; unfiltered queries go through backend.query_batch."""
    queries = as_matrix(queries)
    excludes = excludes if excludes is not None else [None] * len(queries)
    if len(excludes) != len(queries):
        raise ValueError(f"{len(excludes)} exclude lists for {len(queries)} queries")
    if allowed is not None or len(queries) == 0:
        return [filtered_query(backend, vectors, q, k, allowed, space, e)
                for q, e in zip(queries, excludes, strict=True)]
    extra = max((len(e) for e in excludes if e is not None), default=0)
    want = min(int(k), vectors.shape[0])
    results = []
    batch = backend.query_batch(queries, want + extra)
    for found, query, exclude in zip(batch, queries, excludes, strict=True):
        trimmed = _trim_batch_result(found, want, exclude)
        if trimmed is None:
            trimmed = filtered_query(backend, vectors, query, k, None, space, exclude)
        results.append(trimmed)
    return results


def _trim_batch_result(found: Neighbors, want: int, exclude: np.ndarray | None
                       ) -> Neighbors | None:
    """found without excluded rows, cut to want; None when too few are left (caller retries)."""
    if exclude is not None and len(exclude):
        found = found.take(~np.isin(found.rows, exclude))
    return found.head(want) if len(found) >= want else None
