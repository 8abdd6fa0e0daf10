"""Grid search of nmslib HNSW settings on a catalog's own vectors: recall vs exact, latency, cost.

Method (`tune`):

* Queries: `n_queries` catalog rows sampled with `seed`, each searched against the full index
  with its own row excluded from both the exact and the approximate result (as "more like this
  product" works in the app, and as `build_index.py` evaluates): the index is asked for k + 1
  rows and the query's own row is dropped.
* Ground truth: exact k nearest other rows, computed once (batched matmul, then the candidates
  re-ranked with `exact_distances`).
* Recall@k is tie-aware: a returned row counts when its exact distance is within
  `DISTANCE_TOLERANCE` of the k-th exact distance. Catalogs hold duplicate images (colour
  variants sharing a photo), and any of several equidistant rows is a correct answer; plain
  row-id recall would punish the index for picking a different duplicate.
* Latency: one `backend.query` call per query (single-threaded, as the app searches), after a
  short warm-up; p50 and p99 in milliseconds.
* Cost: build time with `threads` build threads, and index size = bytes of the index file as
  the product saves it (`save_data=False`). That is not the graph alone: nmslib's optimised HNSW
  format for cosinesimil and l2 embeds a copy of every vector next to its links, so the file is
  about n x (dim x 4 + M x 8 + ~24) bytes; the store's vectors.npy (n x dim x 4) comes on top.
  The size is a file size, not an RSS measurement.

The recommended setting is the one with the lowest p50 among those reaching `target_recall`
(ties: faster build, then smaller index); when none reaches it, the best-recall setting.
"""

from __future__ import annotations

import itertools
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from index_store.backends import make_backend
from index_store.base import (
    Backend,
    IndexCorruptError,
    IndexMissingError,
    as_matrix,
    check_space,
    exact_distances,
)
from index_store.exact import exact_knn
from index_store.measure import cheapest, search_own_rows, sweep
from index_store.nmslib_hnsw import index_files
from index_store.store import VECTORS_FILE, VERSIONS, current_version

log = logging.getLogger(__name__)

DEFAULT_GRID = {"M": (8, 12, 16, 24, 32), "efConstruction": (100, 200, 400),
                "efSearch": (10, 20, 40, 80, 160, 320)}
QUICK_GRID = {"M": (8, 16), "efConstruction": (100, 200), "efSearch": (10, 20, 40, 80, 160)}
DISTANCE_TOLERANCE = 1e-5

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TuneRow:
    """One measured setting."""

    M: int
    efConstruction: int
    efSearch: int
    recall: float
    p50_ms: float
    p99_ms: float
    build_s: float
    index_bytes: int

    @property
    def key(self) -> tuple[int, int, int]:
        return self.M, self.efConstruction, self.efSearch


@dataclass
class TuneReport:
    """Every measured setting and the pick; `text()` is what the CLI prints."""

    rows: list[TuneRow]
    target_recall: float
    k: int
    n_items: int
    dim: int
    space: str
    n_queries: int
    threads: int
    current: tuple[int, int, int] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> TuneRow | None:
        """The lowest-p50 setting reaching the target recall (None when none does)."""
        return cheapest(self.rows, lambda r: r.recall >= self.target_recall,
                        lambda r: (r.p50_ms, r.build_s, r.index_bytes))

    @property
    def best_recall(self) -> TuneRow:
        """The highest-recall setting (ties: lowest p50)."""
        return min(self.rows, key=lambda r: (-r.recall, r.p50_ms))

    @property
    def chosen(self) -> TuneRow:
        return self.best or self.best_recall

    def verdict(self) -> str:
        best = self.best
        if best is not None:
            return (f"Fastest setting reaching recall@{self.k} >= {self.target_recall:g}: "
                    f"M={best.M}, efConstruction={best.efConstruction}, "
                    f"efSearch={best.efSearch} (recall {best.recall:.4f}, "
                    f"p50 {best.p50_ms:.3f} ms).")
        top = self.best_recall
        return (f"No setting reaches recall@{self.k} >= {self.target_recall:g}; the best recall "
                f"is {top.recall:.4f} at M={top.M}, efConstruction={top.efConstruction}, "
                f"efSearch={top.efSearch} (p50 {top.p50_ms:.3f} ms). Try a larger grid "
                "(bigger M / efConstruction / efSearch) or a lower target.")

    def markdown(self) -> str:
        """All rows as a markdown table; the pick and the current config are marked."""
        head = (f"| M | efConstruction | efSearch | recall@{self.k} | p50 ms | p99 ms "
                "| build s | index MB | |")
        lines = [head, "|---:|---:|---:|---:|---:|---:|---:|---:|:---|"]
        for row in sorted(self.rows, key=lambda r: r.key):
            lines.append(f"| {row.M} | {row.efConstruction} | {row.efSearch} | {row.recall:.4f} "
                         f"| {row.p50_ms:.3f} | {row.p99_ms:.3f} | {row.build_s:.2f} "
                         f"| {row.index_bytes / 1e6:.2f} | {self._mark(row)} |")
        return "\n".join(lines)

    def _mark(self, row: TuneRow) -> str:
        marks = []
        if row is self.chosen:
            marks.append("**fastest at target**" if self.best is not None else "**best recall**")
        if row.key == self.current:
            marks.append("current config")
        return ", ".join(marks)

    def config_lines(self) -> str:
        """The YAML to merge into the config's ann_index section."""
        row = self.chosen
        return "\n".join([
            "ann_index:",
            "  index_time:",
            f"    M: {row.M}",
            f"    efConstruction: {row.efConstruction}",
            "  query_time:",
            f"    efSearch: {row.efSearch}",
        ])

    def text(self) -> str:
        about = (f"HNSW tuning on {self.n_items} x {self.dim} vectors ({self.space}), "
                 f"{self.n_queries} catalog rows as queries (own row excluded), k={self.k}, "
                 f"{self.threads} build thread(s); recall is tie-aware, latency is one query at "
                 "a time, index MB is the saved index file (nmslib embeds the vectors in it).")
        return "\n\n".join([about, self.markdown(), self.verdict(), *self.notes,
                            "Paste into config.yml (merge with the existing ann_index section), "
                            "then rebuild:", self.config_lines()])

    def to_dict(self) -> dict:
        chosen = self.chosen
        return {"k": self.k, "n_items": self.n_items, "dim": self.dim, "space": self.space,
                "n_queries": self.n_queries, "threads": self.threads,
                "target_recall": self.target_recall,
                "reached_target": self.best is not None, "chosen": asdict(chosen),
                "current": list(self.current) if self.current else None,
                "rows": [asdict(row) for row in self.rows], "notes": self.notes,
                "config_lines": self.config_lines()}


# recall ---------------------------------------------------------------------------------------


def sample_queries(n: int, n_queries: int, seed: int) -> np.ndarray:
    """Sorted row positions of min(n_queries, n) distinct rows drawn with seed."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(n_queries, n), replace=False))


def tie_aware_hits(base: np.ndarray, query: np.ndarray, found_rows: np.ndarray,
                   kth_distance: float, k: int, space: str) -> int:
    """How many of found_rows (distinct, at most k) lie within the exact k-th distance."""
    if len(found_rows) == 0:
        return 0
    distances = exact_distances(base[found_rows[:k]], query, space)
    return int(min(k, np.count_nonzero(distances <= kth_distance + DISTANCE_TOLERANCE)))


# measuring one index ------------------------------------------------------------------------


def build_nmslib(vectors: np.ndarray, space: str, M: int, efConstruction: int,
                 threads: int) -> tuple[Backend, float]:
    """A built nmslib backend and its build time in seconds."""
    backend = make_backend("nmslib", space, {"M": M, "efConstruction": efConstruction,
                                             "indexThreadQty": threads, "post": 0})
    began = time.perf_counter()
    backend.build(vectors)
    return backend, time.perf_counter() - began


def index_file_bytes(folder: Path) -> int:
    """Bytes of the nmslib index file(s) saved in folder (links plus its copy of the vectors)."""
    return sum(path.stat().st_size for path in index_files(Path(folder)))


def saved_index_bytes(backend: Backend) -> int:
    """Bytes of the index file(s) the backend saves (nmslib: links plus its copy of the vectors)."""
    with tempfile.TemporaryDirectory(prefix="tune-") as folder:
        backend.save(Path(folder))
        return index_file_bytes(Path(folder))


def sweep_graph(vectors: np.ndarray, space: str, M: int, efConstruction: int,
                ef_values: Iterable[int], query_rows: np.ndarray, kth: np.ndarray, k: int,
                threads: int) -> list[TuneRow]:
    """Build one (M, efConstruction) index, then measure every efSearch on it."""
    backend, build_s = build_nmslib(vectors, space, M, efConstruction, threads)
    size = saved_index_bytes(backend)

    def tie_aware_recall() -> tuple[dict, list[float]]:
        found, seconds = search_own_rows(backend, vectors, query_rows, k)
        hits = [tie_aware_hits(vectors, vectors[row], rows, float(limit), k, backend.space)
                for row, rows, limit in zip(query_rows, found, kth, strict=True)]
        return {"recall": float(np.mean(hits)) / k}, seconds

    measured = sweep(lambda setting: backend.set_query_params(**setting),
                     [{"efSearch": int(ef)} for ef in ef_values], tie_aware_recall)
    return [TuneRow(M, efConstruction, row["setting"]["efSearch"], row["recall"], row["p50_ms"],
                    row["p99_ms"], build_s, size) for row in measured]


# the grid -------------------------------------------------------------------------------------


def tune(vectors: np.ndarray, space: str, *, grid_M: Iterable[int] = DEFAULT_GRID["M"],
         grid_efConstruction: Iterable[int] = DEFAULT_GRID["efConstruction"],
         grid_efSearch: Iterable[int] = DEFAULT_GRID["efSearch"], k: int = 10,
         target_recall: float = 0.99, n_queries: int = 500, seed: int = 0,
         threads: int | None = None, progress: Progress | None = None) -> TuneReport:
    """Measure every (M, efConstruction, efSearch) of the grid on vectors; see the module doc."""
    matrix = as_matrix(vectors)
    check_space(space)
    if matrix.shape[0] < 2:
        raise ValueError("tuning needs at least 2 vectors")
    if not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    k = max(1, min(int(k), matrix.shape[0] - 1))
    threads = int(threads or os.cpu_count() or 1)
    query_rows = sample_queries(matrix.shape[0], n_queries, seed)
    _, truth = exact_knn(matrix, matrix[query_rows], k, space, own_rows=query_rows)
    kth = truth[:, -1]
    pairs = list(itertools.product(sorted(set(grid_M)), sorted(set(grid_efConstruction))))
    rows: list[TuneRow] = []
    for step, (M, ef_construction) in enumerate(pairs, start=1):
        _say(progress, f"[{step}/{len(pairs)}] building M={M} efConstruction={ef_construction}")
        rows += sweep_graph(matrix, space, M, ef_construction, sorted(set(grid_efSearch)),
                            query_rows, kth, k, threads)
    return TuneReport(rows, target_recall, k, matrix.shape[0], matrix.shape[1], space,
                      len(query_rows), threads)


def _say(progress: Progress | None, message: str) -> None:
    log.info("%s", message)
    if progress is not None:
        progress(message)


# the saved index ----------------------------------------------------------------------------


def load_current_vectors(root: Path, config_path: str | Path | None = None) -> np.ndarray:
    """vectors.npy of the CURRENT index version under root; IndexMissingError when none."""
    root = Path(root)
    version = current_version(root)
    if version is None:
        raise IndexMissingError(f"No built index at {root} to tune on: build it first.",
                                config_path)
    path = root / VERSIONS / version / VECTORS_FILE
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise IndexCorruptError(f"Index vectors {path} are unreadable: {error}.",
                                config_path) from error


def tune_saved_index(root: Path, space: str, *, target_recall: float = 0.99,
                     quick: bool = False, k: int = 10, threads: int | None = None,
                     current: Mapping[str, int] | None = None,
                     config_path: str | Path | None = None, n_queries: int = 500,
                     progress: Progress | None = None) -> TuneReport:
    """`tune` on the vectors of the built index under root (the CLI's `--tune`).

    quick: a small grid. current: the config's M / efConstruction / efSearch, added to the grid
    so the report shows where today's setting stands.
    """
    vectors = load_current_vectors(root, config_path)
    grid = {name: set(values) for name, values in (QUICK_GRID if quick else DEFAULT_GRID).items()}
    if current:
        for name, values in grid.items():
            values.add(int(current[name]))
    report = tune(vectors, space, grid_M=grid["M"], grid_efConstruction=grid["efConstruction"],
                  grid_efSearch=grid["efSearch"], k=k, target_recall=target_recall,
                  n_queries=n_queries, threads=threads, progress=progress)
    if current:
        report.current = (int(current["M"]), int(current["efConstruction"]),
                          int(current["efSearch"]))
    return report
