"""IndexStore: atomic versioned saves, CURRENT switch, crash safety, fingerprints, search."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from index_store import store as store_module
from index_store.base import IndexCorruptError, IndexMissingError, IndexStaleError
from index_store.colours import COLOURS_FILE, ItemDistributions
from index_store.fingerprint import fingerprint_diff
from index_store.store import (
    CURRENT,
    VERSIONS,
    IndexStore,
    clean_versions,
    current_version,
)

ROOT = Path(__file__).resolve().parent.parent
N, DIM = 600, 16
INDEX_PARAMS = {"M": 12, "efConstruction": 80, "indexThreadQty": 2, "post": 0}


def fingerprint(**changes):
    base = {"model_checksum": "m1", "catalog_checksum": "c1", "preprocess": {"size": 64},
            "backend": "nmslib", "space": "cosinesimil", "index_time": dict(INDEX_PARAMS)}
    base.update(changes)
    return base


def catalog(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, DIM))
    labels = rng.integers(0, 12, N)
    vectors = centres[labels] + 0.3 * rng.standard_normal((N, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = pd.DataFrame({
        "id": [f"sku-{seed}-{i}" for i in range(N)],
        "name": [f"product {i}" for i in range(N)],
        "color": np.array(["red", "blue", "green", "black"])[labels % 4],
        "size": np.array(["S", "M", "L"])[rng.integers(0, 3, N)],
        "label": labels,
    })
    return vectors.astype(np.float32), items


def build(seed=0, backend="nmslib", query_params=None):
    vectors, items = catalog(seed)
    return IndexStore.build(vectors, items, backend=backend, space="cosinesimil",
                            index_params=INDEX_PARAMS if backend == "nmslib" else {},
                            query_params=query_params or {"efSearch": 60},
                            manifest={"fingerprint": fingerprint(backend=backend),
                                      "note": "test"})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    store = build()
    store.save(root)
    return store, root


def same_results(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert a["id"].tolist() == b["id"].tolist()
    np.testing.assert_array_equal(a["distance"].to_numpy(), b["distance"].to_numpy())


def versions(root):
    return sorted(p.name for p in (root / VERSIONS).iterdir())


def test_round_trip(saved):
    store, root = saved
    loaded = IndexStore.load(root, expected=fingerprint())
    assert loaded.version == current_version(root) == store.version
    pd.testing.assert_frame_equal(loaded.items, store.items)
    pd.testing.assert_frame_equal(loaded.map, store.map)
    np.testing.assert_array_equal(loaded.vectors, store.vectors)
    assert loaded.manifest["note"] == "test" and loaded.manifest["n_items"] == N
    for row in (0, 17, 333):
        same_results(store.search(store.vectors[row], 8), loaded.search(loaded.vectors[row], 8))
    folder = root / VERSIONS / loaded.version
    assert {"index.bin", "nmslib.json", "vectors.npy", "items.parquet", "map.parquet",
            "manifest.json"} <= {p.name for p in folder.iterdir()}


def test_search_frame_columns_and_order(saved):
    store, _ = saved
    result = store.search(store.vectors[3], 5)
    assert list(result.columns[:3]) == ["id", "distance", "row"]
    assert {"name", "color", "size", "label"} <= set(result.columns)
    assert result["id"].iloc[0] == store.items["id"].iloc[3]
    assert result["distance"].is_monotonic_increasing
    assert (store.items["id"].iloc[result["row"]].to_numpy() == result["id"].to_numpy()).all()


def test_map_coordinates(saved):
    store, _ = saved
    assert list(store.map.columns) == ["id", "map_x", "map_y"]
    np.testing.assert_allclose(store.project_to_map(store.vectors),
                               store.map[["map_x", "map_y"]].to_numpy(), atol=1e-5)
    assert store.map["map_x"].var() >= store.map["map_y"].var()


def test_current_pointer_switches_atomically(tmp_path):
    first, second = build(seed=0), build(seed=1)
    first.save(tmp_path)
    old_version = current_version(tmp_path)
    second.save(tmp_path)
    assert current_version(tmp_path) == second.version != old_version
    assert (tmp_path / CURRENT).read_text().strip() == second.version
    assert not list(tmp_path.glob("CURRENT*.tmp"))
    assert versions(tmp_path) == sorted([old_version, second.version])
    loaded = IndexStore.load(tmp_path)
    assert loaded.items["id"].iloc[0] == "sku-1-0"


def test_crash_before_pointer_switch_keeps_old_index(tmp_path, monkeypatch):
    old = build(seed=0)
    old.save(tmp_path)
    before = old.search(old.vectors[5], 6)

    def crash(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module, "_point_current", crash)
    with pytest.raises(KeyboardInterrupt):
        build(seed=1).save(tmp_path)
    assert current_version(tmp_path) == old.version
    assert versions(tmp_path) == [old.version]
    loaded = IndexStore.load(tmp_path)
    same_results(before, loaded.search(old.vectors[5], 6))


def test_crash_while_writing_files_keeps_old_index(tmp_path, monkeypatch):
    old = build(seed=0)
    old.save(tmp_path)

    def half_written(self, folder, name):
        np.save(folder / "vectors.npy", self.vectors[:10])
        raise OSError("disk full")

    monkeypatch.setattr(IndexStore, "_write_version", half_written)
    with pytest.raises(OSError, match="disk full"):
        build(seed=1).save(tmp_path)
    assert versions(tmp_path) == [old.version]
    assert IndexStore.load(tmp_path).items["id"].iloc[0] == "sku-0-0"


def test_killed_save_leftovers_are_ignored_then_cleaned(tmp_path):
    build(seed=0).save(tmp_path)
    leftover = tmp_path / VERSIONS / "20000101T000000000000Z-dead.tmp"
    leftover.mkdir()
    (leftover / "vectors.npy").write_bytes(b"partial")
    assert IndexStore.load(tmp_path).size == N
    old = time.time() - store_module.STALE_TMP_SECONDS - 10
    os.utime(leftover, (old, old))
    build(seed=1).save(tmp_path)
    assert not leftover.exists()


def test_old_versions_cleaned_keeping_two(tmp_path):
    store = build(seed=0, backend="exact")
    names = [store.save(tmp_path).name for _ in range(4)]
    assert versions(tmp_path) == names[-2:]
    assert current_version(tmp_path) == names[-1]


def test_clean_never_deletes_current(tmp_path):
    store = build(seed=0, backend="exact")
    names = [store.save(tmp_path).name for _ in range(2)]
    (tmp_path / CURRENT).write_text(names[0])  # e.g. rolled back by hand
    assert clean_versions(tmp_path, keep=1) == []
    assert versions(tmp_path) == names
    (tmp_path / CURRENT).write_text(names[1])
    assert clean_versions(tmp_path, keep=1) == [names[0]]


def test_missing_index(tmp_path):
    assert current_version(tmp_path / "nothing") is None
    with pytest.raises(IndexMissingError) as caught:
        IndexStore.load(tmp_path / "nothing", config_path="config/shop.yml")
    assert "python build_index.py --config config/shop.yml" in str(caught.value)


def test_stale_index_names_changed_keys(saved):
    _, root = saved
    expected = fingerprint(model_checksum="m2",
                           index_time=dict(INDEX_PARAMS, M=32))
    with pytest.raises(IndexStaleError) as caught:
        IndexStore.load(root, expected=expected, config_path="cfg.yml")
    message = str(caught.value)
    assert "model_checksum: built with 'm1', now 'm2'" in message
    assert "index_time.M: built with 12, now 32" in message
    assert "catalog_checksum" not in message
    assert "python build_index.py --config cfg.yml" in message


def test_query_params_are_not_fingerprinted(saved):
    _, root = saved
    loaded = IndexStore.load(root, expected=fingerprint(), query_params={"efSearch": 300})
    assert loaded.backend.query_params["efSearch"] == 300
    loaded.set_query_params(efSearch=20)
    assert loaded.backend.query_params["efSearch"] == 20
    assert "efSearch" not in json.dumps(loaded.manifest["fingerprint"])
    assert len(loaded.search(loaded.vectors[0], 10)) == 10


def test_fingerprint_diff_is_key_by_key():
    diff = fingerprint_diff({"a": 1, "p": {"x": (1, 2), "y": 3}, "only_old": 1},
                            {"a": 1, "p": {"x": [1, 2], "y": 4}, "new": "n"})
    assert diff == {"p.y": (3, 4), "new": (None, "n")}


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_index_file_raises_corrupt_error(tmp_path, damage):
    build(seed=0).save(tmp_path)
    path = tmp_path / VERSIONS / current_version(tmp_path) / "index.bin"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError) as caught:
        IndexStore.load(tmp_path, config_path="cfg.yml")
    assert "index.bin" in str(caught.value)
    assert ("truncated" if damage == "truncate" else "sha256") in str(caught.value)
    assert "python build_index.py --config cfg.yml" in str(caught.value)


def test_current_naming_a_missing_version(tmp_path):
    (tmp_path / CURRENT).write_text("20990101T000000000000Z-gone\n")
    with pytest.raises(IndexCorruptError, match="does not exist"):
        IndexStore.load(tmp_path)


def test_filters_and_or(saved):
    store, _ = saved
    red = store.search(store.vectors[0], 10, filters={"color": ["red"]})
    assert len(red) == 10 and (red["color"] == "red").all()
    mixed = store.search(store.vectors[0], 1000, filters={"color": ["red", "blue"],
                                                         "size": ["M"]})
    expected = store.items[store.items["color"].isin(["red", "blue"])
                           & (store.items["size"] == "M")]
    assert sorted(mixed["id"]) == sorted(expected["id"])
    by_number = store.search(store.vectors[0], 1000, filters={"label": ["3"]})
    assert len(by_number) == (store.items["label"] == 3).sum()
    assert (by_number["label"] == 3).all()
    assert len(store.search(store.vectors[0], 5, filters={"color": ["purple"]})) == 0
    assert len(store.search(store.vectors[0], 5, filters={"color": []})) == 5


def test_exclude_ids(saved):
    store, _ = saved
    own = store.items["id"].iloc[9]
    result = store.search(store.vectors[9], 5, exclude_ids=[own])
    assert len(result) == 5 and own not in set(result["id"])
    assert store.row_of(own) == 9
    with pytest.raises(KeyError, match="unknown item id"):
        store.row_of("nope")


def test_unknown_filter_column(saved):
    store, _ = saved
    with pytest.raises(ValueError) as caught:
        store.search(store.vectors[0], 5, filters={"colour": ["red"]})
    assert "'colour'" in str(caught.value) and "color" in str(caught.value)


def test_search_batch_matches_search(saved):
    store, _ = saved
    rows = [1, 2, 3]
    ids = [[store.items["id"].iloc[r]] for r in rows]
    batch = store.search_batch(store.vectors[rows], 4, filters={"size": ["S", "L"]},
                               exclude_ids=ids)
    for row, exclude, frame in zip(rows, ids, batch, strict=True):
        same_results(frame, store.search(store.vectors[row], 4, filters={"size": ["S", "L"]},
                                         exclude_ids=exclude))


def test_items_must_align_with_vectors():
    vectors, items = catalog()
    with pytest.raises(ValueError, match="rows"):
        IndexStore.build(vectors[:-1], items, backend="exact")
    with pytest.raises(ValueError, match="'id'"):
        IndexStore.build(vectors, items.drop(columns="id"), backend="exact")


def test_mixed_item_columns_are_stored_as_text(tmp_path):
    vectors, items = catalog()
    items["mixed"] = pd.Series([1 if i % 2 else "x" for i in range(N)], dtype=object)
    items.loc[0, "mixed"] = None
    IndexStore.build(vectors, items, backend="exact").save(tmp_path)
    loaded = IndexStore.load(tmp_path)
    assert loaded.items["mixed"].iloc[1] == "1" and pd.isna(loaded.items["mixed"].iloc[0])
    assert (loaded.search(vectors[0], 3, filters={"mixed": ["1"]})["mixed"] == "1").all()


def test_package_never_imports_torch_or_vectorizer():
    code = ("import sys, index_store, index_store.store, index_store.evaluate, "
            "index_store.tune\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'vectorizer')]\n"
            "sys.exit(', '.join(bad) or None)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_loaded_index_can_be_saved_again(tmp_path):
    """nmslib crashes re-saving a graph loaded without data: the files are copied instead."""
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(400, 16)).astype(np.float32)
    items = pd.DataFrame({"id": [str(i) for i in range(400)]})
    IndexStore.build(vectors, items, backend="nmslib", space="cosinesimil",
                     index_params={"M": 8, "efConstruction": 50}).save(tmp_path / "a")
    loaded = IndexStore.load(tmp_path / "a")
    loaded.save(tmp_path / "b")
    again = IndexStore.load(tmp_path / "b")
    assert again.search(vectors[3], 5)["id"].tolist() == loaded.search(vectors[3], 5)["id"].tolist()


def test_colour_distributions_travel_with_the_version_and_are_checked(tmp_path):
    vectors, items = catalog(3)
    values = np.random.default_rng(3).dirichlet(np.ones(5), N).astype(np.float32)
    with pytest.raises(ValueError, match="colour rows"):
        IndexStore.build(vectors, items, backend="exact",
                         colours=ItemDistributions("color", values[:-1]))
    IndexStore.build(vectors, items, backend="exact",
                     colours=ItemDistributions("color", values)).save(tmp_path)
    loaded = IndexStore.load(tmp_path)
    assert loaded.colours.column == "color" and loaded.manifest["colours"]["classes"] == 5
    np.testing.assert_array_equal(loaded.colours.values, values)
    path = tmp_path / VERSIONS / loaded.version / COLOURS_FILE
    np.save(path, values.reshape(N * 5 // 2, 2))  # the same bytes, another shape
    with pytest.raises(IndexCorruptError, match=COLOURS_FILE):
        IndexStore.load(tmp_path)
    assert IndexStore.build(vectors, items, backend="exact").colours is None
