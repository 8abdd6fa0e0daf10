"""Evaluation maths on hand-computed examples: AP@k, per-class mAP, NaN labels, recall, latency."""

import numpy as np
import pandas as pd
import pytest

from index_store.evaluate import (
    average_precision_at_k,
    recall_at_k,
    retrieval_metrics,
)
from index_store.measure import latency_summary


def test_average_precision_hand_computed():
    relevance = np.array([[1, 0, 1, 0, 0],
                          [0, 0, 0, 0, 0],
                          [1, 1, 0, 0, 0],
                          [0, 1, 0, 0, 0]], dtype=bool)
    ap = average_precision_at_k(relevance, np.array([2, 3, 10, 0]))
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2)
    assert ap[1] == 0
    assert ap[2] == pytest.approx((1 + 1) / 5)  # min(k=5, 10 relevant)
    assert ap[3] == 0  # nothing relevant in the pool


def test_average_precision_rejects_bad_shapes():
    with pytest.raises(ValueError):
        average_precision_at_k(np.ones(3, bool), np.array([1]))
    with pytest.raises(ValueError):
        average_precision_at_k(np.ones((2, 3), bool), np.array([1]))


def pool():
    return pd.DataFrame({"color": ["red", "red", "red", "blue", "blue", None],
                         "kind": ["a", "b", "a", "b", "a", "b"]})


def test_retrieval_metrics_per_class():
    items = pool()
    # queries are catalog rows 0 (red) and 3 (blue), their own row excluded from results
    results = np.array([[1, 3, 2], [4, 0, -1]])
    metrics = retrieval_metrics(items.iloc[[0, 3]].reset_index(drop=True), results, items,
                                ["color"], k=3, query_rows=np.array([0, 3]))
    color = metrics["color"]
    # query 0: red, pool holds 2 other reds (rows 1, 2); hits at ranks 1 and 3
    ap_red = (1 + 2 / 3) / 2
    # query 1: blue, 1 other blue (row 4) found at rank 1
    ap_blue = 1.0
    assert color["per_class"]["red"] == {"map_at_k": pytest.approx(ap_red),
                                         "precision_at_k": pytest.approx(2 / 3), "queries": 1}
    assert color["per_class"]["blue"]["map_at_k"] == pytest.approx(ap_blue)
    assert color["per_class"]["blue"]["precision_at_k"] == pytest.approx(1 / 3)
    assert color["map_at_k"] == pytest.approx((ap_red + ap_blue) / 2)
    assert color["precision_at_k"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert color["queries"] == 2


def test_query_itself_is_never_relevant():
    items = pool()
    results = np.array([[0, 1, 2]])  # the query's own row 0 came back first
    metrics = retrieval_metrics(items.iloc[[0]].reset_index(drop=True), results, items,
                                ["color"], k=3, query_rows=np.array([0]))
    assert metrics["color"]["map_at_k"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_nan_label_is_skipped_per_task():
    items = pool()
    queries = items.iloc[[5, 0]].reset_index(drop=True)  # row 5 has no colour
    results = np.array([[1, 3], [1, 2]])
    metrics = retrieval_metrics(queries, results, items, ["color", "kind"], k=2)
    assert metrics["color"]["queries"] == 1
    assert metrics["kind"]["queries"] == 2
    assert set(metrics["color"]["per_class"]) == {"red"}
    # external queries (no query_rows): 3 reds in the pool, both results red
    assert metrics["color"]["map_at_k"] == pytest.approx(1.0)


def test_short_result_rows_are_padded():
    items = pool()
    metrics = retrieval_metrics(items.iloc[[3]].reset_index(drop=True), np.array([[4]]), items,
                                ["color"], k=3, query_rows=np.array([3]))
    assert metrics["color"]["precision_at_k"] == pytest.approx(1 / 3)
    assert metrics["color"]["map_at_k"] == pytest.approx(1.0)


def test_recall_at_k():
    approx = np.array([[1, 2, 3], [7, 8, -1]])
    exact = np.array([[1, 2, 4], [7, 9, -1]])
    assert recall_at_k(approx, exact) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert recall_at_k(exact, exact) == 1.0
    assert np.isnan(recall_at_k(np.full((1, 2), -1), np.full((1, 2), -1)))


def test_latency_summary():
    summary = latency_summary([0.001] * 99 + [0.101])
    assert summary["p50_ms"] == pytest.approx(1.0)
    assert summary["mean_ms"] == pytest.approx(2.0)
    assert 1.0 < summary["p99_ms"] <= 101.0
    assert np.isnan(latency_summary([])["p50_ms"])
