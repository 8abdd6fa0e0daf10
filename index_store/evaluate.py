"""Evaluating a built index: mAP@k and precision@k per task and class, recall against exact
search, latency; `evaluate_index` is the procedure `build_index.py` runs before saving."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from index_store.bands import calibrate_bands
from index_store.base import Backend
from index_store.exact import exact_knn
from index_store.measure import (
    latency_summary,
    rows_matrix,
    search_own_rows,
    sweep,
    timed_queries,
)
from index_store.store import IndexStore


def average_precision_at_k(relevance: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """AP@k per query: sum_{i<=k} P@i * rel_i / min(k, n_relevant); 0 when n_relevant == 0.

    relevance: bool [n_queries, k], result i of query q is relevant; n_relevant: int [n_queries],
    how many relevant items the pool holds for each query.
    """
    rel = np.asarray(relevance, dtype=bool)
    if rel.ndim != 2:
        raise ValueError(f"relevance must be [n_queries, k], got shape {rel.shape}")
    k = rel.shape[1]
    counts = np.asarray(n_relevant, dtype=np.int64).reshape(-1)
    if counts.shape[0] != rel.shape[0]:
        raise ValueError(f"{counts.shape[0]} n_relevant values for {rel.shape[0]} queries")
    precision_at_i = np.cumsum(rel, axis=1) / np.arange(1, k + 1)
    summed = (precision_at_i * rel).sum(axis=1)
    denominator = np.minimum(k, counts)
    return np.where(denominator > 0, summed / np.maximum(denominator, 1), 0.0)


def _pad_columns(rows: np.ndarray, k: int) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 2:
        raise ValueError(f"result_rows must be [n_queries, k], got shape {rows.shape}")
    if rows.shape[1] >= k:
        return rows[:, :k]
    return np.pad(rows, ((0, 0), (0, k - rows.shape[1])), constant_values=-1)


def _as_labels(column: pd.Series) -> np.ndarray:
    """Labels as str objects, None where missing."""
    values = column.to_numpy(dtype=object)
    missing = pd.isna(column).to_numpy()
    return np.array([None if gone else str(v) for v, gone in zip(values, missing, strict=True)],
                    dtype=object)


def _task_scores(query: np.ndarray, results: np.ndarray, pool: np.ndarray,
                 query_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For queries with a label: (their positions, AP@k, precision@k)."""
    keep = np.flatnonzero(pd.notna(query))
    counts = pd.Series(pool, dtype=object).value_counts(dropna=True)
    labels = query[keep]
    n_relevant = np.array(counts.reindex(labels).fillna(0), dtype=np.int64)
    own = query_rows[keep]
    in_pool = (own >= 0) & (own < len(pool))
    own_matches = np.zeros(len(keep), bool)
    own_matches[in_pool] = pool[own[in_pool]] == labels[in_pool]
    n_relevant -= own_matches
    hits = results[keep]
    valid = (hits >= 0) & (hits < len(pool)) & (hits != own[:, None])
    hit_labels = np.where(valid, pool[np.clip(hits, 0, len(pool) - 1)], None)
    relevance = valid & (hit_labels == labels[:, None])
    ap = average_precision_at_k(relevance, n_relevant)
    precision = relevance.mean(axis=1) if relevance.shape[1] else np.zeros(len(keep))
    return keep, ap, precision


def retrieval_metrics(query_labels: pd.DataFrame, result_rows: np.ndarray,
                      item_labels: pd.DataFrame, task_columns: Sequence[str], k: int,
                      query_rows: np.ndarray | None = None) -> dict:
    """mAP@k and precision@k per task column, overall and per class of the query.

    query_labels: one row per query (row-aligned with result_rows); result_rows: catalog row
    positions [n_queries, >=k] (-1 = no result); item_labels: the searchable pool, one row per
    catalog row; query_rows: each query's own catalog row (-1 or absent: not in the pool), which
    is neither counted as relevant nor as a hit. Queries with a missing label are skipped for
    that task. Returns {task: {map_at_k, precision_at_k, queries, per_class: {label: {...}}}}.
    """
    results = _pad_columns(result_rows, k)
    n_queries = results.shape[0]
    if len(query_labels) != n_queries:
        raise ValueError(f"{len(query_labels)} query label rows for {n_queries} result rows")
    own = (np.full(n_queries, -1, np.int64) if query_rows is None
           else np.asarray(query_rows, dtype=np.int64).reshape(-1))
    metrics = {}
    for task in task_columns:
        query = _as_labels(query_labels[task])
        keep, ap, precision = _task_scores(query, results, _as_labels(item_labels[task]), own)
        metrics[task] = _summarise(query[keep], ap, precision)
    return metrics


def _summarise(labels: np.ndarray, ap: np.ndarray, precision: np.ndarray) -> dict:
    frame = pd.DataFrame({"label": labels, "ap": ap, "precision": precision})
    per_class = {
        str(label): {"map_at_k": float(group["ap"].mean()),
                     "precision_at_k": float(group["precision"].mean()),
                     "queries": len(group)}
        for label, group in frame.groupby("label", sort=True)
    }
    return {"map_at_k": float(ap.mean()) if len(ap) else float("nan"),
            "precision_at_k": float(precision.mean()) if len(precision) else float("nan"),
            "queries": len(ap), "per_class": per_class}


def recall_at_k(approx_rows: np.ndarray, exact_rows: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k rows that the approximate search found.

    Both [n_queries, k] with -1 padding ignored; NaN when no query has exact results.
    """
    approx = np.asarray(approx_rows, dtype=np.int64)
    exact = np.asarray(exact_rows, dtype=np.int64)
    if approx.shape[0] != exact.shape[0]:
        raise ValueError(f"{approx.shape[0]} approximate vs {exact.shape[0]} exact queries")
    fractions = []
    for found, truth in zip(approx, exact, strict=True):
        wanted = truth[truth >= 0]
        if len(wanted):
            fractions.append(np.isin(wanted, found[found >= 0]).mean())
    return float(np.mean(fractions)) if fractions else float("nan")


def evaluation_queries(ids: pd.Series, test_ids: set[str], max_queries: int, seed: int
                       ) -> tuple[np.ndarray, str]:
    """Held-out test products of the model, else a seeded leave-one-out sample of the catalog."""
    rows = np.flatnonzero(ids.isin(test_ids).to_numpy())
    source = "held-out test split of the model"
    if len(rows) == 0:
        rows, source = np.arange(len(ids)), "leave-one-out sample of the catalog"
    if len(rows) > max_queries:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(rows, max_queries, replace=False))
    return rows, source


def evaluate_index(store: IndexStore, *, tasks: Sequence[str], k: int, recall_k: int,
                   test_ids: set[str], split: str, max_queries: int, seed: int,
                   calibration: Mapping[str, Any] | None = None) -> dict:
    """mAP@k and P@k per task (and class) through the index, recall against exact, latency,
    and with `calibration` ({column, confident_share, no_match_share, min_queries}) the
    distance bands of `index_store.bands` from the same queries' exact best matches.

    Each query is a catalog row searched with its own row left out; recall@recall_k compares
    the index's rows with `exact_knn`'s; latency is one query at a time, no warm-up.
    """
    rows, source = evaluation_queries(store.items["id"], test_ids, max_queries, seed)
    depth = max(k, recall_k)
    found, seconds = search_own_rows(store.backend, store.vectors, rows, depth, warmup=0)
    approx_rows = rows_matrix(found, depth)
    exact_rows, exact_distances = exact_knn(store.vectors, store.vectors[rows], depth,
                                            store.space, own_rows=np.asarray(rows))
    tasks = [t for t in tasks if t in store.items]
    labels = store.items[tasks]
    bands = (None if not calibration or calibration["column"] not in store.items else
             held_out_bands(store.items[calibration["column"]], rows, exact_rows[:, 0],
                            exact_distances[:, 0], calibration))
    return {"k": k, "queries": len(rows), "query_source": source, "split": split,
            "tasks": retrieval_metrics(labels.iloc[rows].reset_index(drop=True),
                                       approx_rows[:, :k], labels, tasks, k, query_rows=rows),
            "recall_k": recall_k,
            "recall_at_k": recall_at_k(approx_rows[:, :recall_k], exact_rows[:, :recall_k]),
            "latency": latency_summary(seconds), "bands": bands}


def held_out_bands(labels: pd.Series, rows: np.ndarray, top_rows: np.ndarray,
                   top_distances: np.ndarray, calibration: Mapping[str, Any]) -> dict:
    """`calibrate_bands` over the queries that have a label: is each best match of their type?"""
    values = _as_labels(labels)
    query, top = values[rows], values[np.clip(top_rows, 0, len(values) - 1)]
    keep = np.array([v is not None for v in query]) & (top_rows >= 0)
    return calibrate_bands(top_distances[keep], query[keep] == top[keep], **calibration)


def recall_sweep(backend: Backend, settings: Iterable[Mapping[str, Any]], queries: np.ndarray,
                 truth: np.ndarray, k: int,
                 extra: Callable[[np.ndarray], dict] | None = None) -> list[dict]:
    """Per query-time setting: recall@k of single queries against `truth` (exact rows [q, k]),
    `extra(found rows)` figures (e.g. mAP) and the latency with QPS (see `measure.sweep`)."""
    def measure() -> tuple[dict, list[float]]:
        found, seconds = timed_queries(lambda query: backend.query(query, k).rows, queries)
        rows = rows_matrix(found, k)
        return {"recall": recall_at_k(rows, truth), **(extra(rows) if extra else {})}, seconds

    return sweep(lambda setting: backend.set_query_params(**setting), settings, measure)
