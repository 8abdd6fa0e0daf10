"""`--tune` for the milvus backend: the published collection measured at each query-time `ef`
(nothing is rebuilt): tie-aware recall@k against exact search and single-query latency, the
queries being catalog rows with their own row left out, as `tune.py` measures nmslib."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from config.schema import MilvusConfig
from index_store.base import IndexMissingError
from index_store.exact import exact_knn
from index_store.measure import cheapest, search_own_rows, sweep
from index_store.milvus_backend import ROW, VECTOR, MilvusBackend
from index_store.milvus_client import call
from index_store.milvus_store import current_collection
from index_store.tune import Progress, _say, sample_queries, tie_aware_hits

EF_GRID = (10, 16, 24, 32, 48, 64, 96, 128, 256)
READ_BATCH = 2000


@dataclass
class EfTuneReport:
    """Every measured ef and the pick; `text()` is what the CLI prints."""

    rows: list[dict]
    target_recall: float
    k: int
    n_items: int
    dim: int
    space: str
    n_queries: int
    current_ef: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> dict | None:
        return cheapest(self.rows, lambda r: r["recall"] >= self.target_recall,
                        lambda r: (r["p50_ms"], r["ef"]))

    @property
    def chosen(self) -> dict:
        return self.best or min(self.rows, key=lambda r: (-r["recall"], r["p50_ms"]))

    def markdown(self) -> str:
        lines = [f"| ef | recall@{self.k} | p50 ms | p99 ms | |", "|---:|---:|---:|---:|:---|"]
        for row in sorted(self.rows, key=lambda r: r["ef"]):
            marks = [m for m, on in (("**chosen**", row is self.chosen),
                                     ("current config", row["ef"] == self.current_ef)) if on]
            lines.append(f"| {row['ef']} | {row['recall']:.4f} | {row['p50_ms']:.3f} "
                         f"| {row['p99_ms']:.3f} | {', '.join(marks)} |")
        return "\n".join(lines)

    def verdict(self) -> str:
        row = self.chosen
        if self.best is None:
            return (f"No ef reaches recall@{self.k} >= {self.target_recall:g}; the best is "
                    f"{row['recall']:.4f} at ef={row['ef']}. Rebuild with larger "
                    "milvus.index_params (M, efConstruction).")
        return (f"Fastest ef reaching recall@{self.k} >= {self.target_recall:g}: ef={row['ef']} "
                f"(recall {row['recall']:.4f}, p50 {row['p50_ms']:.3f} ms).")

    def config_lines(self) -> str:
        return f"milvus:\n  ef: {self.chosen['ef']}"

    def text(self) -> str:
        about = (f"Milvus ef tuning on {self.n_items} x {self.dim} vectors ({self.space}), "
                 f"{self.n_queries} catalog rows as queries (own row excluded), k={self.k}; "
                 "recall is tie-aware, latency is one query at a time including the round trip.")
        return "\n\n".join([about, self.markdown(), self.verdict(), *self.notes,
                            "Set in the config (query-time: no rebuild needed):",
                            self.config_lines()])

    def to_dict(self) -> dict:
        return {"k": self.k, "n_items": self.n_items, "dim": self.dim, "space": self.space,
                "n_queries": self.n_queries, "target_recall": self.target_recall,
                "reached_target": self.best is not None, "chosen": self.chosen,
                "current_ef": self.current_ef, "rows": self.rows, "notes": self.notes,
                "config_lines": self.config_lines()}


def read_vectors(backend: MilvusBackend) -> np.ndarray:
    """Every vector of the collection, row-aligned (for the exact ground truth only)."""
    vectors = np.empty((backend.size, backend.dim), np.float32)
    for start in range(0, backend.size, READ_BATCH):
        stop = min(start + READ_BATCH, backend.size)
        found = call(backend.settings, "read vectors", "query", backend.collection,
                     filter=f"{ROW} >= {start} and {ROW} < {stop}",
                     output_fields=[ROW, VECTOR], limit=stop - start)
        for row in found:
            vectors[int(row[ROW])] = row[VECTOR]
    return vectors


def tune_milvus(settings: MilvusConfig, space: str, *, target_recall: float = 0.99, k: int = 10,
                n_queries: int = 500, seed: int = 0, ef_values: tuple[int, ...] = EF_GRID,
                current_ef: int | None = None, config_path: object = None,
                progress: Progress | None = None) -> EfTuneReport:
    """Sweep `ef` on the collection the alias names (see the module doc)."""
    collection = current_collection(settings)
    if collection is None:
        raise IndexMissingError(f"No index published in Milvus at {settings.uri} to tune on: "
                                "build it first.", config_path)
    backend = MilvusBackend.open(settings, collection, space, {}, {})
    _say(progress, f"reading {backend.size} vectors from {collection}")
    vectors = read_vectors(backend)
    k = max(1, min(int(k), len(vectors) - 1))
    query_rows = sample_queries(len(vectors), n_queries, seed)
    _, truth = exact_knn(vectors, vectors[query_rows], k, space, own_rows=query_rows)
    kth = truth[:, -1]

    def recall() -> tuple[dict, list[float]]:
        found, seconds = search_own_rows(backend, vectors, query_rows, k)
        hits = [tie_aware_hits(vectors, vectors[row], rows, float(limit), k, space)
                for row, rows, limit in zip(query_rows, found, kth, strict=True)]
        return {"recall": float(np.mean(hits)) / k}, seconds

    grid = sorted(set(ef_values) | ({current_ef} if current_ef else set()))
    _say(progress, f"measuring ef {', '.join(map(str, grid))}")
    rows = sweep(lambda setting: backend.set_query_params(**setting),
                 [{"ef": ef} for ef in grid], recall)
    measured = [{"ef": r["setting"]["ef"], "recall": r["recall"], "p50_ms": r["p50_ms"],
                 "p99_ms": r["p99_ms"]} for r in rows]
    return EfTuneReport(measured, target_recall, k, len(vectors), vectors.shape[1], space,
                        len(query_rows), current_ef)
