"""Backend contract, for every backend (nmslib, exact, milvus on Milvus Lite) and both spaces:
recall, distances, filters, save/load."""

import json
import logging

import numpy as np
import pytest

from config.schema import MilvusConfig
from index_store import base
from index_store import nmslib_hnsw as nmslib_module
from index_store.backends import backend_class, make_backend
from index_store.base import exact_distances, exact_topk, filtered_query, filtered_query_batch
from index_store.evaluate import recall_at_k
from index_store.measure import rows_matrix

N, DIM, CLUSTERS = 3000, 32, 30
INDEX_PARAMS = {"nmslib": {"M": 16, "efConstruction": 100, "indexThreadQty": 2, "post": 0},
                "exact": {}, "milvus": {"index_type": "HNSW", "M": 16, "efConstruction": 100}}
QUERY_PARAMS = {"nmslib": {"efSearch": 100}, "exact": {}, "milvus": {"ef": 100}}
CASES = [(name, space) for name in ("exact", "nmslib", "milvus")
         for space in ("cosinesimil", "l2")]


def clustered(space: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around 30 centres; for l2 each is rescaled so lengths vary (0.5 to 2)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, CLUSTERS, N)
    vectors = centres[labels] + 0.5 * rng.standard_normal((N, DIM)) / np.sqrt(DIM)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    if space == "l2":
        vectors *= rng.uniform(0.5, 2.0, (N, 1))
    return vectors.astype(np.float32), labels


def queries_for(vectors: np.ndarray, count: int = 60, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picked = vectors[rng.choice(len(vectors), count, replace=False)]
    return (picked + 0.05 * rng.standard_normal(picked.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def milvus_lite(tmp_path_factory) -> MilvusConfig:
    """Milvus Lite (the real engine, embedded) in a file of its own."""
    return MilvusConfig(uri=str(tmp_path_factory.mktemp("milvus") / "contract.db"),
                        collection_prefix="contract", consistency_level="Strong")


@pytest.fixture(scope="module", params=CASES, ids=[f"{b}-{s}" for b, s in CASES])
def built(request, milvus_lite):
    name, space = request.param
    vectors, labels = clustered(space)
    options = {"settings": milvus_lite} if name == "milvus" else {}
    backend = make_backend(name, space, INDEX_PARAMS[name], QUERY_PARAMS[name], **options)
    backend.build(vectors)
    return backend, vectors, labels


def assert_exact_distances(found, vectors, query, space):
    assert np.all(np.diff(found.distances) >= 0)
    expected = exact_distances(vectors[found.rows], query, space)
    np.testing.assert_allclose(found.distances, expected, atol=1e-4)


def test_recall_against_exact(built):
    backend, vectors, _ = built
    queries = queries_for(vectors)
    approx = rows_matrix([backend.query(q, 10) for q in queries], 10)
    exact = rows_matrix([exact_topk(vectors, q, 10, backend.space) for q in queries], 10)
    assert recall_at_k(approx, exact) >= 0.95


def test_batch_matches_single_queries(built):
    backend, vectors, _ = built
    queries = queries_for(vectors, count=10)
    for single, batched in zip([backend.query(q, 10) for q in queries],
                               backend.query_batch(queries, 10), strict=True):
        np.testing.assert_array_equal(single.rows, batched.rows)
        np.testing.assert_allclose(single.distances, batched.distances, atol=1e-6)


def test_distances_sorted_and_exact(built):
    backend, vectors, _ = built
    for query in queries_for(vectors, count=15):
        found = backend.query(query, 10)
        assert len(found) == 10
        assert found.rows.dtype == np.int64 and found.distances.dtype == np.float32
        assert_exact_distances(found, vectors, query, backend.space)


def test_distance_convention(built):
    """cosine: 0 for the same direction; l2: the real (not squared) Euclidean distance."""
    backend, vectors, _ = built
    query = vectors[7] * 1.5 if backend.space == "cosinesimil" else vectors[7] + 0.01
    found = backend.query(query, 5)
    assert found.rows[0] == 7
    if backend.space == "cosinesimil":
        assert found.distances[0] == pytest.approx(0.0, abs=1e-5)
        cosine = vectors[found.rows[1]] @ query / np.linalg.norm(vectors[found.rows[1]]) \
            / np.linalg.norm(query)
        assert found.distances[1] == pytest.approx(1 - cosine, abs=1e-5)
    else:
        assert found.distances[0] == pytest.approx(0.01 * np.sqrt(DIM), rel=1e-3)
        real = np.linalg.norm(vectors[found.rows].astype(np.float64) - query, axis=1)
        np.testing.assert_allclose(found.distances, real, rtol=1e-5, atol=1e-5)


def test_save_load_identical(built, tmp_path):
    backend, vectors, _ = built
    backend.save(tmp_path)
    loaded = backend_class(backend.name).load(tmp_path, vectors, backend.space,
                                              backend.index_params, backend.query_params)
    assert loaded.size == backend.size == N
    for query in queries_for(vectors, count=20):
        before, after = backend.query(query, 10), loaded.query(query, 10)
        np.testing.assert_array_equal(before.rows, after.rows)
        np.testing.assert_array_equal(before.distances, after.distances)


def test_selective_filter_is_exact(built):
    backend, vectors, labels = built
    allowed = labels == 3
    for query in queries_for(vectors, count=5):
        found = filtered_query(backend, vectors, query, 10, allowed)
        truth = exact_topk(vectors, query, 10, backend.space, rows=np.flatnonzero(allowed))
        np.testing.assert_array_equal(found.rows, truth.rows)
        assert_exact_distances(found, vectors, query, backend.space)
    everything = filtered_query(backend, vectors, queries_for(vectors, 1)[0], 10_000, allowed)
    assert len(everything) == allowed.sum()
    assert set(everything.rows) == set(np.flatnonzero(allowed))


def test_broad_filter_overfetches(built, caplog):
    backend, vectors, labels = built
    allowed = labels % 4 != 0  # about 2,250 of 3,000 rows: above the selective threshold
    assert not base.is_selective(int(allowed.sum()), N)
    queries = queries_for(vectors, count=20)
    with caplog.at_level(logging.DEBUG, logger="index_store.base"):
        found = [filtered_query(backend, vectors, q, 10, allowed) for q in queries]
    for query, result in zip(queries, found, strict=True):
        assert len(result) == 10
        assert allowed[result.rows].all()
        assert_exact_distances(result, vectors, query, backend.space)
    truth = [exact_topk(vectors, q, 10, backend.space, rows=np.flatnonzero(allowed))
             for q in queries]
    # a quarter of the queries lose their own cluster, leaving only far neighbours: harder
    assert recall_at_k(rows_matrix(found, 10), rows_matrix(truth, 10)) >= 0.9
    fetched = any("fetched" in record.getMessage() for record in caplog.records)
    assert fetched == (backend.name == "nmslib")


def test_broad_filter_widens_when_the_neighbourhood_is_excluded(built, caplog):
    """Everything but the query's own cluster: the first fetch keeps nothing, so it doubles."""
    backend, vectors, labels = built
    allowed = labels != labels[11]
    with caplog.at_level(logging.DEBUG, logger="index_store.base"):
        found = filtered_query(backend, vectors, vectors[11], 10, allowed)
    assert len(found) == 10 and allowed[found.rows].all()
    truth = exact_topk(vectors, vectors[11], 10, backend.space, rows=np.flatnonzero(allowed))
    assert len(np.intersect1d(found.rows, truth.rows)) >= 9
    if backend.name == "nmslib":
        fetches = [r for r in caplog.records if "fetched" in r.getMessage()]
        assert len(fetches) >= 2


def test_overfetch_falls_back_to_exact_scan(built, caplog, monkeypatch):
    backend, vectors, labels = built
    if backend.name == "milvus":
        pytest.skip("Milvus filters inside the engine: no over-fetch to fall back from")
    monkeypatch.setattr(base, "MAX_FETCH_FRACTION", 0.005)  # widening stops at 15 rows
    allowed = labels != labels[11]
    with caplog.at_level(logging.DEBUG, logger="index_store.base"):
        found = filtered_query(backend, vectors, vectors[11], 10, allowed)
    truth = exact_topk(vectors, vectors[11], 10, backend.space, rows=np.flatnonzero(allowed))
    np.testing.assert_array_equal(found.rows, truth.rows)
    assert any("exact scan" in r.getMessage() for r in caplog.records)


def test_k_larger_than_catalog_returns_everything(built):
    backend, vectors, _ = built
    query = queries_for(vectors, 1)[0]
    found = filtered_query(backend, vectors, query, N + 500)
    assert len(found) == N
    assert len(np.unique(found.rows)) == N
    assert_exact_distances(found, vectors, query, backend.space)


def test_filter_matching_nothing_is_empty(built):
    backend, vectors, _ = built
    found = filtered_query(backend, vectors, vectors[0], 10, np.zeros(N, bool))
    assert len(found) == 0
    assert found.rows.dtype == np.int64


def test_exclude_removes_rows(built):
    backend, vectors, labels = built
    found = filtered_query(backend, vectors, vectors[5], 10, exclude=np.array([5]))
    assert len(found) == 10 and 5 not in found.rows
    allowed = labels == labels[5]
    members = np.flatnonzero(allowed)
    found = filtered_query(backend, vectors, vectors[5], 10_000, allowed, exclude=members[:-3])
    assert sorted(found.rows) == sorted(members[-3:])


def test_filtered_batch_matches_single(built):
    backend, vectors, _ = built
    queries = vectors[:8]
    excludes = [np.array([i]) for i in range(8)]
    batch = filtered_query_batch(backend, vectors, queries, 10, excludes=excludes)
    for i, result in enumerate(batch):
        single = filtered_query(backend, vectors, queries[i], 10, exclude=excludes[i])
        assert len(result) == 10 and i not in result.rows
        np.testing.assert_array_equal(result.rows, single.rows)


def test_unknown_backend_and_params():
    with pytest.raises(ValueError, match="allowed: exact, milvus, nmslib"):
        make_backend("annoy", "l2", {}, {})
    with pytest.raises(ValueError, match="efConstructon"):
        make_backend("nmslib", "l2", {"efConstructon": 10}, {})
    with pytest.raises(ValueError, match="space"):
        make_backend("exact", "cosine", {}, {})


def test_nmslib_saves_data_when_reload_check_fails(tmp_path, monkeypatch):
    vectors, _ = clustered("cosinesimil", seed=3)
    backend = make_backend("nmslib", "cosinesimil", INDEX_PARAMS["nmslib"], {"efSearch": 50})
    backend.build(vectors[:500])
    monkeypatch.setattr(nmslib_module, "roundtrip_matches", lambda *_: False)
    backend.save(tmp_path)
    meta = json.loads((tmp_path / nmslib_module.META_FILE).read_text())
    assert meta["save_data"] is True
    assert set(meta["files"]) == {"index.bin", "index.bin.dat"}
    loaded = backend_class("nmslib").load(tmp_path, vectors[:500], "cosinesimil",
                                          backend.index_params, backend.query_params)
    np.testing.assert_array_equal(loaded.query(vectors[3], 10).rows,
                                  backend.query(vectors[3], 10).rows)


def test_nmslib_saves_without_data_normally(tmp_path):
    vectors, _ = clustered("l2", seed=4)
    backend = make_backend("nmslib", "l2", INDEX_PARAMS["nmslib"], {})
    backend.build(vectors[:300])
    backend.save(tmp_path)
    meta = json.loads((tmp_path / nmslib_module.META_FILE).read_text())
    assert meta["save_data"] is False and list(meta["files"]) == ["index.bin"]
