"""index_store/measure.py and the one recall sweep: timed loops, own-row searches, the cheapest
setting, and bench/'s library registry measuring the product backends through them."""

from __future__ import annotations

import sys

import numpy as np

from index_store.backends import make_backend
from index_store.evaluate import recall_sweep
from index_store.exact import exact_knn
from index_store.measure import cheapest, rows_matrix, search_own_rows, sweep, timed_queries
from tests.fixtures_demo import ROOT


def vectors(n: int = 300, dim: int = 8) -> np.ndarray:
    return np.random.default_rng(3).normal(size=(n, dim)).astype(np.float32)


def test_timed_queries_warm_up_then_time_each_query():
    calls = []
    results, seconds = timed_queries(lambda q: calls.append(q) or q * 2, [1, 2, 3], warmup=2)
    assert results == [2, 4, 6] and len(seconds) == 3 and calls == [1, 2, 1, 2, 3]


def test_own_rows_are_left_out_and_rows_padded():
    data = vectors()
    backend = make_backend("exact", "cosinesimil")
    backend.build(data)
    found, seconds = search_own_rows(backend, data, np.array([4, 9]), 3, warmup=0)
    assert all(row not in rows and len(rows) == 3 for row, rows in zip([4, 9], found, strict=True))
    truth, _ = exact_knn(data, data[[4, 9]], 3, "cosinesimil", own_rows=np.array([4, 9]))
    np.testing.assert_array_equal(rows_matrix(found, 3), truth)
    assert rows_matrix([np.array([1])], 3).tolist() == [[1, -1, -1]] and len(seconds) == 2


def test_sweep_and_cheapest():
    data = vectors()
    backend = make_backend("nmslib", "cosinesimil", {"M": 8, "efConstruction": 50})
    backend.build(data)
    truth, _ = exact_knn(data, data[:20], 5, "cosinesimil")
    rows = recall_sweep(backend, [{"efSearch": 5}, {"efSearch": 200}], data[:20], truth, 5)
    assert [row["setting"] for row in rows] == [{"efSearch": 5}, {"efSearch": 200}]
    assert rows[1]["recall"] >= 0.95 and {"p50_ms", "p99_ms", "mean_ms", "qps"} <= set(rows[0])
    assert cheapest(rows, lambda row: row["recall"] >= 2, lambda row: row["p50_ms"]) is None
    picked = cheapest([{"r": 1, "t": 3}, {"r": 1, "t": 2}, {"r": 0, "t": 1}],
                      lambda row: row["r"] >= 1, lambda row: row["t"])
    assert picked == {"r": 1, "t": 2}
    assert sweep(lambda s: None, [{"a": 1}], lambda: ({"x": 1}, [0.001]))[0]["x"] == 1


def test_bench_libraries_share_the_backend_interface(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    sys.modules.pop("libraries", None)
    from libraries import LIBRARIES

    data = vectors()
    for name in ("nmslib", "exact"):
        library = LIBRARIES[name]
        backend = library.make(1)
        backend.build(data)
        settings = library.settings(backend, 5)
        truth, _ = exact_knn(data, data[:10], 5, "cosinesimil")
        rows = recall_sweep(backend, settings, data[:10], truth, 5)
        assert len(rows) == len(settings) and rows[-1]["recall"] > 0.5
