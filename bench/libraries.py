"""Index libraries for `bench/indexes.py`, each behind the product's one interface
(`index_store.base.Backend`): nmslib and exact are the product's own backends; faiss, annoy and
hnswlib get thin adapters here. Each library also names its query-time settings to sweep and
the files that count as its index size."""

from __future__ import annotations

import atexit
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np

from config.schema import MilvusConfig
from index_store.backends import make_backend
from index_store.base import Backend, Neighbors
from index_store.tune import index_file_bytes

SPACE = "cosinesimil"
HNSW = {"M": 16, "efConstruction": 200}
EF_SWEEP = (10, 20, 40, 80, 160, 320)
ANNOY_TREES = 50
ANNOY_SEARCH_K = (1, 2, 4, 8, 16, 32, 64)  # multiples of n_trees * k (annoy's default search_k)
NPROBE_SWEEP = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


class BenchBackend(Backend):
    """A third-party library over unit vectors (inner product = cosine), one query at a time.

    Built and measured only (never loaded back); `threads` is used while building.
    """

    module: ClassVar[str] = ""  # imported before the RSS baseline, so its code is not counted
    threads = 1

    def __init__(self, space: str = SPACE, index_params: dict | None = None,
                 query_params: dict | None = None) -> None:
        super().__init__(space, index_params, query_params)

    def settings(self, k: int) -> list[dict]:
        return [{}]

    def query(self, vector: np.ndarray, k: int) -> Neighbors:
        rows = self.search(np.ascontiguousarray(vector, dtype=np.float32), k)
        return Neighbors(rows, np.zeros(len(rows), np.float32))  # rank order; distances unused

    def search(self, vector: np.ndarray, k: int) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def load(cls, folder: Path, vectors: np.ndarray, space: str, index_params: dict,
             query_params: dict) -> Backend:
        raise NotImplementedError(f"{cls.name}: benchmark backends are not loaded back")

    @property
    def size(self) -> int:
        return self._size


class FaissFlat(BenchBackend):
    name, module = "faiss-flat", "faiss"

    def build(self, vectors: np.ndarray) -> None:
        import faiss

        faiss.omp_set_num_threads(self.threads)
        self.dim, self._size = vectors.shape[1], len(vectors)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)

    def save(self, folder: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(folder / "faiss.index"))

    def search(self, vector: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(vector[None, :], k)[1][0]


class FaissIvfPq(FaissFlat):
    """IVF with sqrt-scaled lists, PQ codes of 8 dimensions per byte; no re-ranking."""

    name = "faiss-ivfpq"
    query_param_names = ("nprobe",)

    def build(self, vectors: np.ndarray) -> None:
        import faiss

        faiss.omp_set_num_threads(self.threads)
        n, dim = vectors.shape
        self.dim, self._size = dim, n
        nlist = int(min(max(16, 4 * math.sqrt(n)), n // 8))
        m = _pq_subquantizers(dim)
        self.index_params = {"nlist": nlist, "m": m, "nbits": 8}
        self.quantizer = faiss.IndexFlatIP(dim)
        self.index = faiss.IndexIVFPQ(self.quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        self.index.train(vectors)
        self.index.add(vectors)

    def settings(self, k: int) -> list[dict]:
        return [{"nprobe": p} for p in NPROBE_SWEEP if p <= self.index_params["nlist"]]

    def _apply_query_params(self) -> None:
        self.index.nprobe = self.query_params["nprobe"]


def _pq_subquantizers(dim: int) -> int:
    """Sub-quantizers of about 8 dimensions each (a divisor of dim)."""
    for m in range(max(1, dim // 8), dim + 1):
        if dim % m == 0:
            return m
    return dim


class Annoy(BenchBackend):
    name, module = "annoy", "annoy"
    query_param_names = ("search_k",)

    def build(self, vectors: np.ndarray) -> None:
        from annoy import AnnoyIndex

        self.index_params = {"n_trees": ANNOY_TREES, "metric": "angular"}
        self.dim, self._size = vectors.shape[1], len(vectors)
        self.index = AnnoyIndex(vectors.shape[1], "angular")
        for row, vector in enumerate(vectors):
            self.index.add_item(row, vector)
        self.index.build(ANNOY_TREES, n_jobs=self.threads)
        self.search_k = -1

    def save(self, folder: Path) -> None:
        self.index.save(str(folder / "annoy.ann"))  # the index now maps the file

    def settings(self, k: int) -> list[dict]:
        return [{"search_k": ANNOY_TREES * k * f} for f in ANNOY_SEARCH_K]

    def _apply_query_params(self) -> None:
        self.search_k = self.query_params["search_k"]

    def search(self, vector: np.ndarray, k: int) -> np.ndarray:
        return np.asarray(self.index.get_nns_by_vector(vector, k, search_k=self.search_k))


class Hnswlib(BenchBackend):
    name, module = "hnswlib", "hnswlib"
    query_param_names = ("ef",)

    def build(self, vectors: np.ndarray) -> None:
        import hnswlib

        self.index_params = {"M": HNSW["M"], "ef_construction": HNSW["efConstruction"]}
        self.dim, self._size = vectors.shape[1], len(vectors)
        self.index = hnswlib.Index(space="cosine", dim=vectors.shape[1])
        self.index.init_index(max_elements=len(vectors), M=HNSW["M"],
                              ef_construction=HNSW["efConstruction"], random_seed=0)
        self.index.add_items(vectors, np.arange(len(vectors)), num_threads=self.threads)
        self.index.set_num_threads(1)

    def save(self, folder: Path) -> None:
        self.index.save_index(str(folder / "hnswlib.bin"))

    def settings(self, k: int) -> list[dict]:
        return [{"ef": ef} for ef in EF_SWEEP]

    def _apply_query_params(self) -> None:
        self.index.set_ef(self.query_params["ef"])

    def search(self, vector: np.ndarray, k: int) -> np.ndarray:
        return self.index.knn_query(vector, k=k)[0][0].astype(np.int64)


class Library:
    """One library of the comparison: how to make its backend, its settings and its size."""

    def __init__(self, name: str, make: Callable[[int], Backend], module: str = "",
                 settings: Callable[[Backend, int], list[dict]] | None = None,
                 index_bytes: Callable[[Path], int] = _folder_bytes) -> None:
        self.name, self.make, self.module = name, make, module
        self._settings = settings or (lambda backend, k: backend.settings(k))
        self.index_bytes = index_bytes

    def settings(self, backend: Backend, k: int) -> list[dict]:
        return self._settings(backend, k)


def _third_party(cls: type[BenchBackend]) -> Library:
    def make(threads: int) -> Backend:
        backend = cls()
        backend.threads = threads
        return backend

    return Library(cls.name, make, cls.module)


def _milvus(threads: int) -> Backend:
    """The product's milvus backend on a Milvus Lite file of its own (the engine runs in the
    worker process, so RAM MB counts it)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-milvus-"))
    atexit.register(shutil.rmtree, folder, True)  # after Milvus Lite's own exit handler
    settings = MilvusConfig(uri=str(folder / "bench.db"), collection_prefix="bench",
                            consistency_level="Strong", insert_batch=5000)
    backend = make_backend("milvus", SPACE, dict(HNSW, index_type="HNSW"), {"ef": 64},
                           settings=settings)
    backend.lite_folder = folder
    return backend


LIBRARIES: dict[str, Library] = {
    "nmslib": Library(  # the product's backend, distances and all
        "nmslib", lambda threads: make_backend("nmslib", SPACE,
                                               dict(HNSW, indexThreadQty=threads, post=0)),
        "nmslib", lambda backend, k: [{"efSearch": ef} for ef in EF_SWEEP], index_file_bytes),
    "exact": Library(  # the product's exact backend: no index file, it scans vectors.npy
        "exact", lambda threads: make_backend("exact", SPACE), "",
        lambda backend, k: [{}], lambda folder: 0),
    "milvus": Library(  # the product's milvus backend; size = the Milvus Lite folder
        "milvus", _milvus, "pymilvus", lambda backend, k: [{"ef": ef} for ef in EF_SWEEP],
        _folder_bytes),
    **{cls.name: _third_party(cls) for cls in (FaissFlat, FaissIvfPq, Annoy, Hnswlib)},
}
