"""nmslib HNSW backend: every nmslib spelling (init, createIndex, efSearch, ...) stays in here."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from index_store.base import (
    Backend,
    IndexCorruptError,
    Neighbors,
    as_matrix,
    as_query,
    sorted_neighbors,
)
from util.files import file_sha256

log = logging.getLogger(__name__)

INDEX_FILE = "index.bin"
META_FILE = "nmslib.json"
FORMAT_VERSION = 1
SELF_CHECK_QUERIES = 8
SELF_CHECK_K = 10


def _nmslib() -> Any:
    """Imported on first use: nmslib prints a SIMD warning on import and the exact backend and
    the rest of the package work without it."""
    import nmslib

    return nmslib


class NmslibHnswBackend(Backend):
    """HNSW graph from nmslib; distances converted to the package convention (see base.py).

    Index-time parameters: M, efConstruction, indexThreadQty, post. Query-time: efSearch, and
    num_threads for batches (default: indexThreadQty; 0 means all cores).
    """

    name = "nmslib"
    index_param_names = ("M", "efConstruction", "indexThreadQty", "post")
    query_param_names = ("efSearch", "num_threads")

    def __init__(self, space: str, index_params: dict | None = None,
                 query_params: dict | None = None) -> None:
        super().__init__(space, index_params, query_params)
        self._index: Any = None
        self._vectors = np.empty((0, 0), np.float32)
        self._source_folder: Path | None = None

    def _new_index(self) -> Any:
        return _nmslib().init(method="hnsw", space=self.space)

    def build(self, vectors: np.ndarray) -> None:
        matrix = as_matrix(vectors)
        if matrix.shape[0] == 0:
            raise ValueError("cannot build an HNSW index over zero vectors")
        index = self._new_index()
        index.addDataPointBatch(matrix)
        create = {key: int(value) for key, value in self.index_params.items()}
        index.createIndex(create, print_progress=False)
        self._attach(index, matrix)

    def _attach(self, index: Any, matrix: np.ndarray) -> None:
        self._index, self._vectors, self.dim = index, matrix, matrix.shape[1]
        self._apply_query_params()

    def _apply_query_params(self) -> None:
        if self._index is not None and "efSearch" in self.query_params:
            self._index.setQueryTimeParams({"efSearch": int(self.query_params["efSearch"])})

    def _threads(self) -> int:
        return int(self.query_params.get("num_threads",
                                         self.index_params.get("indexThreadQty", 0)))

    def _neighbors(self, ids: np.ndarray, distances: np.ndarray) -> Neighbors:
        distances = np.asarray(distances, dtype=np.float32)
        if self.space == "l2":  # nmslib's hnsw l2 returns the squared distance
            distances = np.sqrt(np.maximum(distances, 0.0))
        else:
            distances = np.clip(distances, 0.0, 2.0)
        return sorted_neighbors(np.asarray(ids, dtype=np.int64), distances)

    def _built(self) -> Any:
        if self._index is None:
            raise RuntimeError("nmslib index is not built: call build() or load() first")
        return self._index

    def query(self, vector: np.ndarray, k: int) -> Neighbors:
        if k <= 0:
            return Neighbors.empty()
        ids, distances = self._built().knnQuery(as_query(vector, self.dim), k=int(k))
        return self._neighbors(ids, distances)

    def query_batch(self, vectors: np.ndarray, k: int) -> list[Neighbors]:
        matrix = as_matrix(vectors)
        if k <= 0 or matrix.shape[0] == 0:
            return [Neighbors.empty() for _ in range(matrix.shape[0])]
        if matrix.shape[1] != self.dim:
            raise ValueError(f"queries have {matrix.shape[1]} dimensions, the index has {self.dim}")
        found = self._built().knnQueryBatch(matrix, k=int(k), num_threads=self._threads())
        return [self._neighbors(ids, distances) for ids, distances in found]

    def save(self, folder: Path) -> None:
        """index.bin without data (the store keeps the vectors), verified by reloading it;
        with data when that fails. nmslib.json records sizes and sha256 for `load`.

        An index that was itself loaded from disk is saved by copying its verified files:
        nmslib crashes when it re-saves a graph loaded without data.
        """
        folder = Path(folder)
        if self._source_folder is not None:
            _copyindex_files(self._source_folder, folder)
            return
        path = folder / INDEX_FILE
        save_data = not self._save_without_data(path)
        if save_data:
            _removeindex_files(folder)
            self._built().saveIndex(str(path), save_data=True)
        files = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
                 for p in index_files(folder)}
        meta = {"format": FORMAT_VERSION, "backend": self.name, "space": self.space,
                "n": self.size, "dim": self.dim, "save_data": save_data, "files": files}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))

    def _save_without_data(self, path: Path) -> bool:
        try:
            self._built().saveIndex(str(path), save_data=False)
            if roundtrip_matches(self, path):
                return True
            log.warning("nmslib index saved without data reloads differently; saving with data")
        except Exception as error:  # nmslib raises RuntimeError and others
            log.warning("nmslib index could not be saved without data (%s); saving with data",
                        error)
        return False

    def _reload(self, path: Path, vectors: np.ndarray, save_data: bool) -> NmslibHnswBackend:
        """A new backend with the same settings over the index file at path."""
        index = self._new_index()
        if not save_data:
            index.addDataPointBatch(vectors)
        index.loadIndex(str(path), load_data=save_data)
        clone = type(self)(self.space, self.index_params, self.query_params)
        clone._attach(index, vectors)
        return clone

    @classmethod
    def load(cls, folder: Path, vectors: np.ndarray, space: str, index_params: dict,
             query_params: dict) -> NmslibHnswBackend:
        folder = Path(folder)
        matrix = as_matrix(vectors)
        meta = _read_meta(folder)
        _verify(folder, meta, matrix, space)
        backend = cls(space, index_params, query_params)
        backend.dim = matrix.shape[1]
        loaded = backend._reload(folder / INDEX_FILE, matrix, bool(meta["save_data"]))
        loaded._source_folder = folder
        return loaded

    @property
    def size(self) -> int:
        return int(self._vectors.shape[0])


def roundtrip_matches(backend: NmslibHnswBackend, path: Path) -> bool:
    """Reload the file at path (without data) and compare a few queries with the live index."""
    vectors = backend._vectors
    sample = np.unique(np.linspace(0, len(vectors) - 1, SELF_CHECK_QUERIES).astype(np.int64))
    k = min(SELF_CHECK_K, len(vectors))
    reloaded = backend._reload(path, vectors, save_data=False)
    for row in sample:
        want, got = backend.query(vectors[row], k), reloaded.query(vectors[row], k)
        if not (np.array_equal(want.rows, got.rows)
                and np.array_equal(want.distances, got.distances)):
            return False
    return True


def _copyindex_files(source: Path, folder: Path) -> None:
    for path in [*index_files(source), source / META_FILE]:
        shutil.copyfile(path, folder / path.name)


def index_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(INDEX_FILE + "*") if p.is_file())


def _removeindex_files(folder: Path) -> None:
    for path in index_files(folder):
        path.unlink()


def _read_meta(folder: Path) -> dict:
    path = folder / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise IndexCorruptError(f"nmslib index metadata {path} is missing.") from error
    except (OSError, ValueError) as error:
        raise IndexCorruptError(f"nmslib index metadata {path} is unreadable: {error}.") \
            from error
    if meta.get("format") != FORMAT_VERSION or not isinstance(meta.get("files"), dict):
        raise IndexCorruptError(f"nmslib index metadata {path} has an unknown format.")
    return meta


def _verify(folder: Path, meta: dict, vectors: np.ndarray, space: str) -> None:
    """Sizes and sha256 as recorded at save time: nmslib may crash on a damaged file."""
    if meta.get("space") != space:
        raise IndexCorruptError(f"nmslib index in {folder} was built for space "
                                f"{meta.get('space')!r}, not {space!r}.")
    if meta.get("n") != vectors.shape[0] or meta.get("dim") != vectors.shape[1]:
        raise IndexCorruptError(
            f"nmslib index in {folder} covers {meta.get('n')} x {meta.get('dim')} vectors, "
            f"the saved vectors are {vectors.shape[0]} x {vectors.shape[1]}.")
    if INDEX_FILE not in meta["files"]:
        raise IndexCorruptError(f"nmslib index metadata in {folder} lists no {INDEX_FILE}.")
    for name, expected in meta["files"].items():
        _verify_file(folder / name, expected)


def _verify_file(path: Path, expected: dict) -> None:
    if not path.is_file():
        raise IndexCorruptError(f"index file {path} is missing.")
    size = path.stat().st_size
    if size != expected.get("bytes"):
        raise IndexCorruptError(f"index file {path} is {size} bytes, {expected.get('bytes')} "
                                "were written: it is truncated or was replaced.")
    if file_sha256(path) != expected.get("sha256"):
        raise IndexCorruptError(f"index file {path} fails its sha256 check: it is corrupted.")
