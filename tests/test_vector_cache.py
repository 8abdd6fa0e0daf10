"""VectorCache: hits and misses, only new keys computed, per-model isolation, atomic saves."""

import hashlib
import os

import numpy as np
import pytest

from util import files as files_module
from vectorizer.vector_cache import VectorCache

DIM = 8


def key(i: int) -> str:
    return hashlib.sha256(f"image-{i}".encode()).hexdigest()


def vectors_for(indices) -> np.ndarray:
    return np.array([np.full(DIM, i, np.float32) for i in indices])


def test_hit_and_miss(tmp_path):
    cache = VectorCache(tmp_path, "model-a")
    found, vectors = cache.lookup([key(0), key(1)])
    assert not found.any() and vectors.shape == (2, 0)
    cache.add([key(0), key(2)], vectors_for([0, 2]))
    found, vectors = cache.lookup([key(0), key(1), key(2)])
    assert found.tolist() == [True, False, True]
    np.testing.assert_array_equal(vectors[[0, 2]], vectors_for([0, 2]))
    assert np.isnan(vectors[1]).all()
    assert len(cache) == 2 and key(2) in cache and cache.dim == DIM


def test_only_new_keys_are_computed(tmp_path):
    cache = VectorCache(tmp_path, "model-a")
    cache.add([key(i) for i in range(50)], vectors_for(range(50)))
    keys = [key(i) for i in range(150)]
    calls = []

    def compute(positions):
        calls.append(list(positions))
        return vectors_for(positions)

    result = cache.get_or_compute(keys, compute)
    assert calls == [list(range(50, 150))]
    np.testing.assert_array_equal(result, vectors_for(range(150)))
    assert cache.get_or_compute(keys, compute).shape == (150, DIM)
    assert len(calls) == 1


def test_get_or_compute_on_empty_cache(tmp_path):
    cache = VectorCache(tmp_path, "model-a")
    result = cache.get_or_compute([key(1), key(2)], vectors_for)
    np.testing.assert_array_equal(result, vectors_for([0, 1]))


def test_persists_per_model(tmp_path):
    cache = VectorCache(tmp_path, "model-a")
    cache.add([key(1)], vectors_for([1]))
    path = cache.save()
    assert path == tmp_path / "model-a" / "vectors.npz"
    reopened = VectorCache(tmp_path, "model-a")
    assert reopened.lookup([key(1)])[0].all()
    other = VectorCache(tmp_path, "model-b")
    assert len(other) == 0 and not other.lookup([key(1)])[0].any()


def test_file_from_another_model_is_ignored(tmp_path):
    cache = VectorCache(tmp_path, "model-a")
    cache.add([key(1)], vectors_for([1]))
    cache.save()
    (tmp_path / "model-b").mkdir()
    os.link(cache.path, tmp_path / "model-b" / "vectors.npz")
    assert len(VectorCache(tmp_path, "model-b")) == 0


def test_save_is_atomic(tmp_path, monkeypatch):
    cache = VectorCache(tmp_path, "model-a")
    cache.add([key(1)], vectors_for([1]))
    cache.save()
    before = cache.path.read_bytes()
    cache.add([key(2)], vectors_for([2]))

    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(files_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        cache.save()
    assert cache.path.read_bytes() == before
    assert [p.name for p in cache.path.parent.iterdir()] == ["vectors.npz"]
    monkeypatch.undo()
    cache.save()
    assert len(VectorCache(tmp_path, "model-a")) == 2


def test_save_merges_entries_saved_by_another_process(tmp_path):
    first, second = VectorCache(tmp_path, "m"), VectorCache(tmp_path, "m")
    first.add([key(1)], vectors_for([1]))
    second.add([key(2)], vectors_for([2]))
    first.save()
    second.save()
    merged = VectorCache(tmp_path, "m")
    assert merged.lookup([key(1), key(2)])[0].all()


def test_unreadable_cache_starts_empty(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "vectors.npz").write_bytes(b"not a zip")
    assert len(VectorCache(tmp_path, "m")) == 0


def test_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="safe folder name"):
        VectorCache(tmp_path, "../escape")
    cache = VectorCache(tmp_path, "m")
    cache.add([key(1)], vectors_for([1]))
    with pytest.raises(ValueError, match="dimensions"):
        cache.add([key(2)], np.zeros((1, DIM + 1), np.float32))
    with pytest.raises(ValueError, match="keys"):
        cache.add([key(2), key(3)], vectors_for([2]))
    with pytest.raises(ValueError, match="NaN"):
        cache.add([key(2)], np.full((1, DIM), np.nan, np.float32))
