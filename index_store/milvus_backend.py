"""Milvus backend: every pymilvus spelling (schemas, index and search params) stays in here,
`milvus_client.py` (connections, errors, filter expressions) and `milvus_store.py` (versions).

One index version is one collection, `<prefix>_<version>`: `row` (INT64 primary key, the row
position), `vector`, and one nullable VARCHAR field per item column (`id`, name, labels, image
file, ...), so results carry their display fields and filters run inside Milvus. Distances follow
the package convention (base.py): COSINE similarity s becomes 1 - s, L2's squared value its root.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from config.schema import MilvusConfig
from index_store.base import (
    Backend,
    IndexCorruptError,
    Neighbors,
    as_matrix,
    as_query,
    exact_distances,
    smallest,
    sorted_neighbors,
)
from index_store.milvus_client import MilvusError, call, client_for, pymilvus, server_version

log = logging.getLogger(__name__)

ROW, VECTOR = "row", "vector"
METRICS = {"cosinesimil": "COSINE", "l2": "L2"}
META_FILE = "milvus.json"
MAX_TOPK = 16384  # Milvus' limit on k (and on rows per query call)
MAX_EXPR_ROWS = 4096  # a row mask goes into the filter expression up to this many listed rows
# A filter matching at most this many rows is answered by an exact scan of their vectors,
# fetched from Milvus: HNSW with a very selective filter loses recall (Milvus Lite's faiss does
# not switch to brute force as a Milvus server does), and 2,000 rows cost ~4 MB at 512-d.
SCAN_MAX_ROWS = 2000
SEARCH_BATCH = 256
MAX_VARCHAR = 65535
NULLABLE_SINCE = (2, 5)  # the first Milvus release with nullable fields (missing item values)
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_RESERVED = {ROW, VECTOR}


# names and fields ---------------------------------------------------------------


def new_collection_name(prefix: str) -> str:
    """`<prefix>_<UTC timestamp>_<random>`: sorts by creation time."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{prefix}_{stamp}_{secrets.token_hex(3)}"


def field_names(columns: Iterable[str]) -> dict[str, str]:
    """Item column → Milvus field name (the column itself when Milvus accepts it)."""
    fields: dict[str, str] = {}
    for index, column in enumerate(columns):
        usable = _FIELD_NAME.match(str(column)) and column not in _RESERVED
        fields[str(column)] = str(column) if usable else f"c{index}_field"
    return fields


def _varchar_length(values: list[str | None], column: str) -> int:
    longest = max((len(v.encode("utf-8")) for v in values if v is not None), default=1)
    if longest > MAX_VARCHAR:
        raise ValueError(f"item column {column!r} holds a value of {longest} bytes; Milvus "
                         f"stores at most {MAX_VARCHAR}")
    return min(MAX_VARCHAR, max(64, 2 * longest))


def primary_key(hit: Mapping[str, Any]) -> int:
    """A search hit's row number: under the field's name (Milvus 2.4+) or "id" (Milvus 2.3)."""
    value = hit.get(ROW)
    return int(hit["id"] if value is None else value)


def as_text(column: pd.Series) -> list[str | None]:
    """A column as Milvus VARCHAR values (None where missing), compared like the file store."""
    text = column.astype("string")
    return [None if pd.isna(v) else str(v) for v in text]


# the backend ---------------------------------------------------------------------------------


class MilvusBackend(Backend):
    """A collection in Milvus (Lite or a server); see the module doc.

    Index-time parameters: `index_type` plus that type's build params (HNSW: M,
    efConstruction). Query-time: `ef` (HNSW, raised to k when smaller) and `nprobe` (IVF).
    """

    name = "milvus"
    query_param_names = ("ef", "nprobe")

    def __init__(self, space: str, index_params: Mapping[str, Any] | None = None,
                 query_params: Mapping[str, Any] | None = None, *,
                 settings: MilvusConfig | None = None, collection: str | None = None) -> None:
        super().__init__(space, index_params, query_params)
        self.settings = settings or MilvusConfig()
        self.collection = collection
        self.fields: dict[str, str] = {}
        self._n = 0

    # building

    def build(self, vectors: np.ndarray) -> None:
        self.build_catalog(vectors, None)

    def build_catalog(self, vectors: np.ndarray, items: pd.DataFrame | None) -> None:
        """A new collection with every row (and item column), indexed and loaded."""
        matrix = as_matrix(vectors)
        if matrix.shape[0] == 0:
            raise ValueError("cannot build a Milvus collection over zero vectors")
        table = items.reset_index(drop=True) if items is not None else None
        self.fields = field_names(table.columns) if table is not None else {}
        name = new_collection_name(self.settings.collection_prefix)
        columns = {field: as_text(table[column]) for column, field in self.fields.items()} \
            if table is not None else {}
        self._check_server_stores(columns)
        self._create(name, matrix.shape[1], columns)
        try:
            self._insert(name, matrix, columns)
            self._index_and_load(name)
        except BaseException:
            self._drop_quietly(name)
            raise
        self.collection, self.dim, self._n = name, matrix.shape[1], matrix.shape[0]

    def _check_server_stores(self, columns: dict[str, list[str | None]]) -> None:
        """Missing item values need nullable fields (Milvus 2.5+): refuse an older server
        with a message naming the column, before anything is created."""
        missing = {field: sum(value is None for value in values)
                   for field, values in columns.items()}
        missing = {field: count for field, count in missing.items() if count}
        if not missing or self.settings.is_lite:
            return
        version = server_version(self.settings)
        if version is None or version[0] >= NULLABLE_SINCE:
            return
        column = next(c for c, f in self.fields.items() if f in missing)
        raise MilvusError(
            f"Milvus at {self.settings.uri} is {version[1]}: it cannot store missing values "
            f"(nullable fields need Milvus {NULLABLE_SINCE[0]}.{NULLABLE_SINCE[1]} or newer), and "
            f"item column {column!r} has {missing[self.fields[column]]} missing. Upgrade the "
            "server (milvus.uri), or fill the missing values in the catalog.")

    def _create(self, name: str, dim: int, columns: dict[str, list[str | None]]) -> None:
        DataType = pymilvus().DataType
        schema = pymilvus().MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ROW, DataType.INT64, is_primary=True)
        schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=dim)
        for field, values in columns.items():
            length = _varchar_length(values, field)
            schema.add_field(field, DataType.VARCHAR, max_length=length, nullable=True)
        call(self.settings, "create a collection", "create_collection", name, schema=schema,
             consistency_level=self.settings.consistency_level)

    def _insert(self, name: str, matrix: np.ndarray,
                columns: dict[str, list[str | None]]) -> None:
        batch = self.settings.insert_batch
        with tqdm(total=len(matrix), desc="milvus insert", unit="row", disable=None) as bar:
            for start in range(0, len(matrix), batch):
                stop = min(start + batch, len(matrix))
                rows = [{ROW: row, VECTOR: matrix[row].tolist(),
                         **{field: values[row] for field, values in columns.items()}}
                        for row in range(start, stop)]
                call(self.settings, "insert rows", "insert", name, rows)
                bar.update(stop - start)
        call(self.settings, "flush the inserted rows", "flush", name,
             timeout=self.settings.build_timeout_s)

    def _index_and_load(self, name: str) -> None:
        client = client_for(self.settings)
        index = client.prepare_index_params()
        params = {k: v for k, v in self.index_params.items() if k != "index_type"}
        # both spellings: a server reads the flat keys, Milvus Lite only the "params" JSON
        index.add_index(field_name=VECTOR, index_type=self.index_params.get("index_type", "HNSW"),
                        metric_type=METRICS[self.space], params={**params, "params": params})
        call(self.settings, "build the vector index", "create_index", name, index,
             timeout=self.settings.build_timeout_s)
        call(self.settings, "load the collection", "load_collection", name,
             timeout=self.settings.build_timeout_s)

    def _drop_quietly(self, name: str) -> None:
        try:
            client_for(self.settings).drop_collection(name)
        except Exception as error:  # the build failed already; pruning retries later
            log.warning("could not drop the unfinished collection %s: %s", name, error)

    # searching

    def search_params(self, k: int) -> dict:
        ef = max(int(self.query_params.get("ef", 64)), k)
        return {"metric_type": METRICS[self.space],
                "params": {"ef": ef, "nprobe": int(self.query_params.get("nprobe", 16))}}

    def _distances(self, raw: Sequence[float]) -> np.ndarray:
        values = np.asarray(raw, dtype=np.float64)
        if self.space == "l2":
            return np.sqrt(np.maximum(values, 0.0)).astype(np.float32)
        return np.clip(1.0 - values, 0.0, 2.0).astype(np.float32)

    def search_hits(self, vectors: np.ndarray, k: int, expression: str = "",
                    output_fields: Sequence[str] = ()) -> list[list[dict]]:
        """Raw hits per query vector: {row, distance (package convention), entity fields}."""
        if self.collection is None:
            raise RuntimeError("Milvus collection is not built: call build() or load() first")
        limit = min(int(k), MAX_TOPK)
        result = call(self.settings, "search", "search", self.collection,
                      data=[v.tolist() for v in vectors], filter=expression, limit=limit,
                      output_fields=list(output_fields) or [ROW],
                      search_params=self.search_params(limit))
        hits = []
        for found in result:
            found = list(found)
            distances = self._distances([hit["distance"] for hit in found])
            hits.append([{**hit.get("entity", {}), ROW: primary_key(hit), "distance": float(d)}
                         for hit, d in zip(found, distances, strict=True)])
        return hits

    def count(self, expression: str) -> int:
        """Rows matching a filter expression."""
        found = call(self.settings, "count rows", "query", self.collection, filter=expression,
                     output_fields=["count(*)"])
        return int(found[0]["count(*)"])

    def filtered_hits(self, vector: np.ndarray, k: int, expression: str,
                      output_fields: Sequence[str] = ()) -> list[dict]:
        """The k nearest rows matching expression, as `search_hits` gives them: an exact scan
        of the matching rows' vectors when at most SCAN_MAX_ROWS match, else the index."""
        query = as_query(vector, self.dim)
        if not expression or self.count(expression) > SCAN_MAX_ROWS:
            return self.search_hits(query[None, :], k, expression, output_fields)[0]
        rows = call(self.settings, "read the filtered rows", "query", self.collection,
                    filter=expression, output_fields=[ROW, VECTOR, *output_fields],
                    limit=SCAN_MAX_ROWS)
        if not rows:
            return []
        distances = exact_distances(np.array([r[VECTOR] for r in rows], np.float32), query,
                                    self.space)
        best = smallest(distances, k)
        hits = [{**{f: rows[i].get(f) for f in output_fields}, ROW: int(rows[i][ROW]),
                 "distance": float(distances[i])} for i in best]
        return sorted(hits, key=lambda h: (h["distance"], h[ROW]))

    def _neighbors(self, hits: list[dict]) -> Neighbors:
        return sorted_neighbors(np.array([h[ROW] for h in hits], np.int64),
                                np.array([h["distance"] for h in hits], np.float32))

    def query(self, vector: np.ndarray, k: int) -> Neighbors:
        if k <= 0:
            return Neighbors.empty()
        query = as_query(vector, self.dim)
        return self._neighbors(self.search_hits(query[None, :], k)[0])

    def query_batch(self, vectors: np.ndarray, k: int) -> list[Neighbors]:
        matrix = as_matrix(vectors)
        if k <= 0 or matrix.shape[0] == 0:
            return [Neighbors.empty() for _ in range(matrix.shape[0])]
        if matrix.shape[1] != self.dim:
            raise ValueError(f"queries have {matrix.shape[1]} dimensions, the index has {self.dim}")
        found = []
        for start in range(0, len(matrix), SEARCH_BATCH):
            found += [self._neighbors(h)
                      for h in self.search_hits(matrix[start:start + SEARCH_BATCH], k)]
        return found

    def native_filtered_query(self, vector: np.ndarray, k: int,
                              allowed: np.ndarray) -> Neighbors | None:
        """The mask as `row in [...]` (or `row not in [...]`) when one side is short enough;
        None (the generic over-fetch / exact scan) otherwise or when Milvus returns too few."""
        mask = np.asarray(allowed, dtype=bool)
        kept, dropped = np.flatnonzero(mask), np.flatnonzero(~mask)
        if len(kept) <= MAX_EXPR_ROWS:
            expression = f"{ROW} in [{', '.join(map(str, kept))}]"
        elif len(dropped) <= MAX_EXPR_ROWS:
            expression = f"{ROW} not in [{', '.join(map(str, dropped))}]"
        else:
            return None
        want = min(int(k), len(kept))
        if want > MAX_TOPK:
            return None
        found = self._neighbors(self.filtered_hits(vector, want, expression))
        return found if len(found) == want and mask[found.rows].all() else None

    # persistence (a file store may hold a Milvus backend: it saves where the collection is)

    def _apply_query_params(self) -> None:
        """Nothing to push: the parameters travel with each search."""

    def save(self, folder: Path) -> None:
        meta = {"format": 1, "backend": self.name, "collection": self.collection,
                "uri": self.settings.uri, "db_name": self.settings.db_name,
                "token_env": self.settings.token_env, "space": self.space,
                "n": self.size, "dim": self.dim, "fields": self.fields}
        (Path(folder) / META_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: Path, vectors: np.ndarray, space: str, index_params: dict,
             query_params: dict) -> MilvusBackend:
        path = Path(folder) / META_FILE
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise IndexCorruptError(f"Milvus index metadata {path} is unreadable: {error}.") \
                from error
        settings = MilvusConfig(uri=meta["uri"], db_name=meta.get("db_name", ""),
                                token_env=meta.get("token_env"))
        backend = cls.open(settings, meta["collection"], space, index_params, query_params)
        if backend.size != len(vectors) or backend.dim != vectors.shape[1]:
            raise IndexCorruptError(
                f"Milvus collection {meta['collection']} holds {backend.size} x {backend.dim} "
                f"vectors, the saved vectors are {vectors.shape[0]} x {vectors.shape[1]}.")
        backend.fields = dict(meta.get("fields") or {})
        return backend

    @classmethod
    def open(cls, settings: MilvusConfig, collection: str, space: str, index_params: dict,
             query_params: dict) -> MilvusBackend:
        """An existing collection, loaded for search; its size and dimension read from Milvus."""
        backend = cls(space, index_params, query_params, settings=settings, collection=collection)
        described = call(settings, f"open collection {collection}", "describe_collection",
                         collection)
        dims = [f.get("params", {}).get("dim") for f in described.get("fields", [])
                if f.get("name") == VECTOR]
        if not dims or dims[0] is None:
            raise IndexCorruptError(f"Milvus collection {collection} has no {VECTOR!r} field.")
        call(settings, f"load collection {collection}", "load_collection", collection)
        stats = call(settings, f"count collection {collection}", "get_collection_stats",
                     collection)
        backend.dim, backend._n = int(dims[0]), int(stats.get("row_count", 0))
        return backend

    @property
    def size(self) -> int:
        return int(self._n)

