"""The milvus backend on Milvus Lite (the real engine, embedded): publish and open, escaped
filters, the alias switch under a reader, interrupted builds, pruning and clear errors."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from config.schema import MilvusConfig
from index_store import milvus_store
from index_store.base import IndexMissingError, IndexStaleError
from index_store.milvus_client import MilvusError, filter_expression, quote
from index_store.milvus_store import META_SUFFIX, MilvusStore, current_version, prune, publish
from index_store.store import IndexStore
from tests.fixtures_demo import ROOT

N, DIM = 400, 16
TRICKY = ['say "hi"', "back\\slash", "x' or 1==1 or '", 'x" or 1==1 or "', "tab\tnew\nline",
          "plain"]
FINGERPRINT = {"model_checksum": "m1", "backend": "milvus", "index_time": {"M": 16}}


def settings_in(folder, **changes) -> MilvusConfig:
    return MilvusConfig(uri=str(folder / "lite.db"), collection_prefix="shop",
                        consistency_level="Strong", insert_batch=150, **changes)


def catalog(seed: int = 0, complete: bool = False) -> tuple[np.ndarray, pd.DataFrame]:
    """Clustered vectors and items with tricky labels; `size` has missing values unless
    `complete` (Milvus before 2.5 cannot store them)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, DIM))
    labels = rng.integers(0, 8, N)
    vectors = (centres[labels] + 0.4 * rng.standard_normal((N, DIM))).astype(np.float32)
    items = pd.DataFrame({
        "id": [f"sku-{seed}-{i}" for i in range(N)],
        "name": [f"product {i}" for i in range(N)],
        "colour": np.array(TRICKY, dtype=object)[np.arange(N) % len(TRICKY)],
        "size": np.array(["S", "M", "L", "XL" if complete else None],
                         dtype=object)[np.arange(N) % 4],
        "label": labels,
        "odd column!": "x",
    })
    return vectors, items


def build(settings: MilvusConfig, seed: int = 0, fingerprint: dict | None = None,
          complete: bool = False) -> IndexStore:
    from index_store.backends import make_backend

    vectors, items = catalog(seed, complete)
    backend = make_backend("milvus", "cosinesimil", {"index_type": "HNSW", "M": 16,
                                                     "efConstruction": 100},
                           {"ef": 200}, settings=settings)
    return IndexStore.build(vectors, items, backend=backend,
                            manifest={"fingerprint": fingerprint or FINGERPRINT})


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    settings = settings_in(tmp_path_factory.mktemp("milvus"))
    store = build(settings)
    publish(store, settings)
    return store, settings, MilvusStore.open(settings, FINGERPRINT)


def test_published_version_answers_like_the_built_store(published):
    store, settings, served = published
    assert served.version == current_version(settings) == store.version
    assert served.size == N and served.manifest["fingerprint"] == FINGERPRINT
    vectors, _ = catalog()
    for row in (0, 17, 123):
        built = store.search(vectors[row], 8)
        found = served.search(vectors[row], 8)
        assert found["id"].tolist() == built["id"].tolist()
        np.testing.assert_allclose(found["distance"], built["distance"], atol=1e-5)
        assert found.columns.tolist() == built.columns.tolist()


def test_distances_match_the_exact_backend(published):
    _, _, served = published
    vectors, items = catalog()
    exact = IndexStore.build(vectors, items, backend="exact", space="cosinesimil")
    for row in (3, 250):
        want, got = exact.search(vectors[row] * 2, 5), served.search(vectors[row] * 2, 5)
        assert got["id"].tolist() == want["id"].tolist()
        np.testing.assert_allclose(got["distance"], want["distance"], atol=1e-5)


@pytest.mark.parametrize("value", TRICKY)
def test_filter_values_with_quotes_and_backslashes_match_exactly(published, value):
    store, _, served = published
    vectors, items = catalog()
    found = served.search(vectors[5], N, filters={"colour": [value]})
    expected = set(items.loc[items["colour"] == value, "id"])
    assert set(found["id"]) == expected and len(found) == len(expected)
    assert (found["colour"] == value).all()
    want = store.search(vectors[5], 10, filters={"colour": [value]})
    assert found["id"].head(10).tolist() == want["id"].tolist()


@pytest.mark.parametrize("value", ['red" or id != "', "red' or 1==1 or '", 'x") or (1==1',
                                   "\\", '\\" or 1==1 or \\"'])
def test_injected_filter_values_neither_break_nor_widen(published, value):
    _, _, served = published
    vectors, _ = catalog()
    assert served.search(vectors[5], 20, filters={"colour": [value]}).empty
    assert served.search(vectors[5], 20, exclude_ids=[value])["id"].tolist() \
        == served.search(vectors[5], 20)["id"].tolist()


def test_quote_escapes_every_special_character():
    assert quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert filter_expression({"colour": ["a", 'b"'], "size": []}, {"colour": "colour",
                                                                    "size": "size", "id": "id"},
                             ["x"]) == '(colour in ["a", "b\\""]) and (id not in ["x"])'
    with pytest.raises(ValueError, match="unknown filter column 'nope'"):
        filter_expression({"nope": ["a"]}, {"id": "id"})


def test_filters_and_or_and_the_excluded_product(published):
    _, _, served = published
    vectors, items = catalog()
    own = items["id"][9]
    found = served.search(vectors[9], N, filters={"colour": ["plain", "back\\slash"],
                                                   "size": ["S"]}, exclude_ids=[own])
    expected = items[items["colour"].isin(["plain", "back\\slash"]) & (items["size"] == "S")]
    assert set(found["id"]) == set(expected["id"]) - {own}
    assert own not in served.search(vectors[9], 10, exclude_ids=[own])["id"].tolist()


def test_items_come_from_milvus_and_the_app_holds_a_sample(published):
    _, _, served = published
    vectors, items = catalog()
    item = served.item(items["id"][42])
    assert item["name"] == "product 42" and item["row"] == 42 and item["odd column!"] == "x"
    np.testing.assert_allclose(served.vector_of(items["id"][42]), vectors[42], atol=1e-6)
    with pytest.raises(KeyError, match="unknown item id"):
        served.item('nope" or id != "')
    assert not hasattr(served, "vectors")
    assert served.filter_options(["size", "colour", "missing"]) == {
        "size": ["L", "M", "S"], "colour": sorted(TRICKY)}
    sample = served.map_sample(100)
    assert len(sample) == 100 and {"map_x", "map_y", "name"} <= set(sample.columns)


def test_stale_and_missing_indexes(published, tmp_path):
    _, settings, _ = published
    with pytest.raises(IndexStaleError, match="model_checksum"):
        MilvusStore.open(settings, dict(FINGERPRINT, model_checksum="m2"))
    empty = settings_in(tmp_path)
    with pytest.raises(IndexMissingError, match="alias 'shop' does not exist") as caught:
        MilvusStore.open(empty, config_path="conf.yml")
    assert "build_index.py --config conf.yml" in str(caught.value)


def test_query_of_another_dimension_is_refused(published):
    _, _, served = published
    with pytest.raises(ValueError, match="query has 8 dimensions, the index has 16"):
        served.search(np.ones(8, np.float32), 5)


def test_version_switch_while_a_reader_queries(tmp_path):
    settings = settings_in(tmp_path)
    publish(build(settings, seed=0), settings)
    reader = MilvusStore.open(settings)
    vectors, _ = catalog(0)
    expected = reader.search(vectors[1], 5)["id"].tolist()
    errors, answers, done = [], [], threading.Event()

    def query_until_done():
        while not done.is_set():
            try:
                answers.append(reader.search(vectors[1], 5)["id"].tolist())
            except Exception as error:  # any failure is the test's failure
                errors.append(error)

    thread = threading.Thread(target=query_until_done)
    thread.start()
    try:
        new = publish(build(settings, seed=1), settings)
    finally:
        done.set()
        thread.join()
    assert not errors and answers and all(a == expected for a in answers)
    assert current_version(settings) == new != reader.version
    assert MilvusStore.open(settings).search(vectors[1], 1)["id"][0].startswith("sku-1-")


def test_interrupted_build_keeps_the_old_version_serving(tmp_path, monkeypatch):
    settings = settings_in(tmp_path)
    old = publish(build(settings, seed=0), settings)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(milvus_store, "_switch_alias", interrupted)
    with pytest.raises(KeyboardInterrupt):
        publish(build(settings, seed=1), settings)
    assert current_version(settings) == old
    vectors, _ = catalog(0)
    assert MilvusStore.open(settings).search(vectors[2], 1)["id"][0] == "sku-0-2"
    monkeypatch.undo()
    newest = publish(build(settings, seed=2), settings)
    names = milvus_store.client_for(settings).list_collections()
    assert sorted(n for n in names if not n.endswith(META_SUFFIX)) \
        == [f"shop_{old}", f"shop_{newest}"]


def test_old_versions_are_pruned_keeping_two(tmp_path):
    settings = settings_in(tmp_path)
    versions = [publish(build(settings, seed=s), settings) for s in range(3)]
    names = milvus_store.client_for(settings).list_collections()
    assert sorted(names) == sorted(f"shop_{v}{suffix}" for v in versions[1:]
                                   for suffix in ("", META_SUFFIX))
    assert prune(settings) == []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_names_the_uri():
    settings = MilvusConfig(uri=f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(MilvusError, match=r"milvus\.uri: cannot connect"):
        current_version(settings)


def test_unset_token_variable_names_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv("VSEARCH_TEST_TOKEN", raising=False)
    settings = settings_in(tmp_path, token_env="VSEARCH_TEST_TOKEN")
    with pytest.raises(MilvusError, match=r"milvus\.token_env: the environment variable "
                                          r"VSEARCH_TEST_TOKEN is not set"):
        current_version(settings)


def test_lite_file_held_by_another_process_names_the_uri(tmp_path):
    path = tmp_path / "held.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", "from pymilvus import MilvusClient; import sys, time; "
         f"MilvusClient({str(path)!r}); print('ready', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(MilvusError, match=r"milvus\.uri: the Milvus Lite file .* is open in "
                                              r"another process"):
            current_version(MilvusConfig(uri=str(path)))
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)


@pytest.fixture(scope="module")
def lite_server(tmp_path_factory):
    """Milvus Lite's gRPC server in a process of its own on a loopback port: a real
    `http://` uri, as a Milvus standalone server or cluster is reached."""
    port = free_port()
    folder = tmp_path_factory.mktemp("server")
    server = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir",
                               str(folder / "data"), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    else:
        server.kill()
        pytest.fail("the Milvus Lite server did not start listening")
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=30)


def test_a_server_uri_builds_publishes_and_serves(lite_server):
    settings = MilvusConfig(uri=lite_server, collection_prefix="remote",
                            consistency_level="Strong")
    assert not settings.is_lite
    store = build(settings)
    version = publish(store, settings)
    served = MilvusStore.open(settings, FINGERPRINT)
    assert served.version == version and served.size == N
    vectors, _ = catalog()
    assert served.search(vectors[7], 5)["id"].tolist() == store.search(vectors[7], 5)["id"].tolist()
    assert served.search(vectors[7], 5, filters={"colour": ['say "hi"']})["colour"].eq(
        'say "hi"').all()


def test_index_parameters_reach_milvus(published):
    store, settings, _ = published
    described = milvus_store.client_for(settings).describe_index(store.backend.collection,
                                                                 "vector")
    assert described["index_type"] == "HNSW" and described["metric_type"] == "COSINE"
    assert described["params"] == {"M": 16, "efConstruction": 100}
