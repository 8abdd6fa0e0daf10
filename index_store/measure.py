"""Measuring an index, written once for the build, `--tune` and `bench/`: timed query loops,
latency summaries, recall per query-time setting (the sweep) and the cheapest setting reaching
a target recall."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from index_store.base import Backend, Neighbors

WARMUP_QUERIES = 20

Result = TypeVar("Result")


def timed_queries(search: Callable[[np.ndarray], Result], queries: Iterable[np.ndarray],
                  warmup: int = WARMUP_QUERIES) -> tuple[list[Result], list[float]]:
    """Each query searched alone (as the app does), after `warmup` untimed ones:
    (results, seconds per query)."""
    queries = list(queries)
    for query in queries[:warmup]:
        search(query)
    results, seconds = [], []
    for query in queries:
        began = time.perf_counter()
        results.append(search(query))
        seconds.append(time.perf_counter() - began)
    return results, seconds


def search_own_rows(backend: Backend, vectors: np.ndarray, query_rows: np.ndarray, k: int,
                    warmup: int = WARMUP_QUERIES) -> tuple[list[np.ndarray], list[float]]:
    """Each catalog row searched alone with its own row left out ("more like this product"):
    per row, the first k rows found other than itself (the index is asked for k + 1), and the
    seconds per query."""
    found, seconds = timed_queries(lambda row: backend.query(vectors[row], k + 1),
                                   query_rows, warmup)
    return [result.rows[result.rows != row][:k]
            for result, row in zip(found, query_rows, strict=True)], seconds


def latency_summary(seconds: Sequence[float], qps: bool = False) -> dict[str, float]:
    """p50, p99 and mean latency in milliseconds (NaN for no measurements); with qps, also the
    single-thread queries per second (1 / mean latency)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        summary = {"p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}
    else:
        summary = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                   "mean_ms": float(ms.mean())}
    if qps:
        mean = summary["mean_ms"]
        summary["qps"] = 1000.0 / mean if mean > 0 else float("inf")
    return summary


def rows_matrix(results: Iterable[np.ndarray | Neighbors], k: int) -> np.ndarray:
    """[n_queries, k] int64 row matrix, -1 padded, from per-query rows (arrays or `Neighbors`)."""
    results = list(results)
    out = np.full((len(results), k), -1, np.int64)
    for i, found in enumerate(results):
        rows = np.asarray(getattr(found, "rows", found), dtype=np.int64)[:k]
        out[i, : len(rows)] = rows
    return out


def sweep(apply: Callable[[Mapping[str, Any]], None], settings: Iterable[Mapping[str, Any]],
          measure: Callable[[], tuple[dict[str, Any], list[float]]]) -> list[dict[str, Any]]:
    """Per query-time setting: apply it, run `measure` (→ quality figures, seconds per query),
    and return one row per setting: the setting's values, the figures and the latency (with QPS)."""
    rows = []
    for setting in settings:
        apply(setting)
        figures, seconds = measure()
        rows.append({"setting": dict(setting), **figures, **latency_summary(seconds, qps=True)})
    return rows


Row = TypeVar("Row")


def cheapest(rows: Iterable[Row], reaches: Callable[[Row], bool],
             cost: Callable[[Row], Any]) -> Row | None:
    """The lowest-cost row among those reaching the target (None when none does)."""
    reaching = [row for row in rows if reaches(row)]
    return min(reaching, key=cost) if reaching else None
