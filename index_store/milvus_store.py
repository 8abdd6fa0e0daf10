"""Index versions in Milvus: publish a built store (atomic alias switch, pruning) and open the
current version for serving without holding the vectors or the item table.

Layout in the Milvus database::

    <prefix>                      alias: the version in use (switched atomically, like CURRENT)
    <prefix>_previous             alias: the version in use before it (kept by pruning)
    <prefix>_<version>            rows: row, vector, id, name, labels, ... (see milvus_backend)
    <prefix>_<version>_meta       the manifest (provenance, fingerprint, metrics), the map
                                  projection, a bounded map sample and the filter choices, as
                                  chunked JSON

A build writes the data collection, then its meta collection, and only then points the alias
at it: an interrupted build leaves the old version serving, and a reader never resolves the
alias to a half-built collection. The meta name derives from the data name, so the single alias
switch moves both. Afterwards every version older than the one in use is dropped except the
previous one (two kept, as in the file store), unfinished builds included; collections newer
than the one in use (another build still running) are left alone.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from config.schema import MilvusConfig
from index_store.base import (
    IndexCorruptError,
    IndexMissingError,
    IndexStoreError,
    as_query,
)
from index_store.fingerprint import check_fingerprint
from index_store.map2d import map_sample, project
from index_store.milvus_backend import ROW, VECTOR, MilvusBackend
from index_store.milvus_client import (
    ITEM_ID,
    call,
    client_for,
    explain,
    filter_expression,
    pymilvus,
    quote,
)
from index_store.store import (
    FORMAT_VERSION,
    MAP_MAX_POINTS,
    RESULT_COLUMNS,
    IndexStore,
    distinct_values,
)

log = logging.getLogger(__name__)

META_SUFFIX = "_meta"
PREVIOUS_SUFFIX = "_previous"
_VERSION = re.compile(r"^\d{8}T\d{12}Z_[0-9a-f]{6}$")
META_CHUNK = 60000  # characters of ASCII JSON per meta row (VARCHAR holds 65535 bytes)
META_ROWS_MAX = 16384


def _where(settings: MilvusConfig) -> str:
    return f"Milvus at {settings.uri} (milvus.collection_prefix {settings.collection_prefix!r})"


def version_of(collection: str, settings: MilvusConfig) -> str:
    return collection[len(settings.collection_prefix) + 1:]


def current_collection(settings: MilvusConfig, alias: str | None = None) -> str | None:
    """The collection the alias (default: the prefix) names; None when it does not exist."""
    client = client_for(settings)
    try:
        return client.describe_alias(alias or settings.collection_prefix)["collection_name"]
    except Exception as error:
        problem = explain(error, settings, "read the index alias")
        if isinstance(problem, IndexMissingError):
            return None
        raise problem from None


def current_version(settings: MilvusConfig) -> str | None:
    """The published version in use (cheap: one alias lookup), None when there is none."""
    collection = current_collection(settings)
    return None if collection is None else version_of(collection, settings)


# publishing ----------------------------------------------------------------------------------


def publish(store: IndexStore, settings: MilvusConfig) -> str:
    """Write the store's meta beside its built collection, switch the alias, prune; the version.

    The store's backend must be a built MilvusBackend (IndexStore.build with one).
    """
    backend = store.backend
    if not isinstance(backend, MilvusBackend) or backend.collection is None:
        raise TypeError("publish needs an IndexStore built with a MilvusBackend")
    collection = backend.collection
    version = version_of(collection, settings)
    manifest = dict(store.manifest, version=version, collection=collection,
                    created_at=datetime.now(UTC).isoformat(timespec="seconds"))
    meta = {"manifest": manifest, "columns": [str(c) for c in store.items.columns],
            "fields": backend.fields, "map_projection": store.map_projection.tolist(),
            "sample": _frame_json(map_sample(store.items, store.map, MAP_MAX_POINTS)),
            "filter_options": distinct_values(store.items, list(store.items.columns))}
    _write_meta(settings, collection + META_SUFFIX, json.dumps(meta, default=str))
    previous = current_collection(settings)
    _switch_alias(settings, collection, settings.collection_prefix)
    if previous is not None and previous != collection:
        _switch_alias(settings, previous, settings.collection_prefix + PREVIOUS_SUFFIX)
    store.manifest, store.version = manifest, version
    log.info("published Milvus index version %s", collection)
    prune(settings)
    return version


def _frame_json(frame: pd.DataFrame) -> dict:
    return json.loads(frame.to_json(orient="split", index=False, date_format="iso"))


def _write_meta(settings: MilvusConfig, name: str, text: str) -> None:
    DataType = pymilvus().DataType
    pieces = [text[i:i + META_CHUNK] for i in range(0, len(text), META_CHUNK)]
    if len(pieces) > META_ROWS_MAX:
        raise ValueError(f"index metadata of {len(text)} characters is too large for Milvus")
    schema = pymilvus().MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("part", DataType.INT64, is_primary=True)
    schema.add_field("text", DataType.VARCHAR, max_length=META_CHUNK)
    schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector field
    call(settings, "create the meta collection", "create_collection", name, schema=schema,
         consistency_level="Strong")
    rows = [{"part": i, "text": piece, "unused": [0.0, 0.0]} for i, piece in enumerate(pieces)]
    call(settings, "write the index metadata", "insert", name, rows)
    call(settings, "flush the index metadata", "flush", name)
    index = client_for(settings).prepare_index_params()
    index.add_index(field_name="unused", index_type="FLAT", metric_type="L2")
    call(settings, "index the meta collection", "create_index", name, index)
    call(settings, "load the meta collection", "load_collection", name)


def _switch_alias(settings: MilvusConfig, collection: str, alias: str) -> None:
    """Point alias at collection (one atomic metadata change in Milvus)."""
    if current_collection(settings, alias) is None:
        call(settings, f"create the alias {alias}", "create_alias", collection, alias)
    else:
        call(settings, f"switch the alias {alias}", "alter_alias", collection, alias)


def prune(settings: MilvusConfig) -> list[str]:
    """Drop every version older than the one in use except the previous one (unfinished builds
    included) and meta collections left without data; returns the dropped names."""
    current = current_collection(settings)
    if current is None:
        return []
    kept = {current, current_collection(settings, settings.collection_prefix + PREVIOUS_SUFFIX)}
    names = set(call(settings, "list collections", "list_collections"))
    data = {n for n in names if _VERSION.match(version_of(n, settings))
            and n.startswith(settings.collection_prefix + "_")}
    doomed = sorted(n for n in data if n < current and n not in kept)
    doomed += sorted(n for n in names if n.endswith(META_SUFFIX)
                     and n[: -len(META_SUFFIX)] not in data and n[: -len(META_SUFFIX)] not in
                     doomed and _VERSION.match(version_of(n[: -len(META_SUFFIX)], settings)))
    for name in doomed:
        log.info("dropping old Milvus collection %s", name)
        for dropped in (name, name + META_SUFFIX):
            if dropped in names:
                call(settings, f"drop collection {dropped}", "drop_collection", dropped)
    return doomed


# serving -------------------------------------------------------------------------------------


def _read_meta(settings: MilvusConfig, collection: str) -> dict:
    name = collection + META_SUFFIX
    call(settings, "load the index metadata", "load_collection", name)
    rows = call(settings, "read the index metadata", "query", name, filter="part >= 0",
                output_fields=["part", "text"], limit=META_ROWS_MAX)
    text = "".join(row["text"] for row in sorted(rows, key=lambda row: row["part"]))
    try:
        meta = json.loads(text)
    except ValueError as error:
        raise IndexCorruptError(f"The index metadata in {name} is unreadable: {error}.") \
            from error
    if meta.get("manifest", {}).get("format") != FORMAT_VERSION:
        raise IndexCorruptError(f"The index metadata in {name} has an unknown format.")
    return meta


class MilvusStore:
    """The published version of a Milvus index, opened for serving.

    It holds the manifest, the map projection, a bounded sample of items (with map
    coordinates) and the filter choices; searches, item lookups and vectors come from Milvus.
    `items` is that sample (the gallery's examples), not the catalog: `size` counts the catalog.
    """

    colours = None  # not stored in Milvus: computed from each result's image on first need

    def __init__(self, backend: MilvusBackend, meta: dict, version: str) -> None:
        self.backend, self.manifest, self.version = backend, meta["manifest"], version
        self.columns: list[str] = list(meta["columns"])
        self.fields: dict[str, str] = dict(meta["fields"])
        self.map_projection = np.asarray(meta["map_projection"], dtype=np.float32)
        sample = meta["sample"]
        frame = pd.DataFrame(sample["data"], columns=sample["columns"])
        frame["id"] = frame["id"].astype(str)
        self._sample = frame
        self.items = frame.drop(columns=["map_x", "map_y"], errors="ignore")
        self.map = frame[["id", "map_x", "map_y"]]
        self._filter_options: dict[str, list[str]] = meta.get("filter_options") or {}

    @classmethod
    def open(cls, settings: MilvusConfig, expected: Mapping[str, Any] | None = None, *,
             config_path: Any = None, query_params: Mapping[str, Any] | None = None
             ) -> MilvusStore:
        """The version the alias names; IndexMissingError / IndexStaleError / MilvusError."""
        try:
            return cls._open(settings, expected, query_params)
        except IndexStoreError as error:
            if config_path is not None:
                error.config_path = config_path
            raise

    @classmethod
    def _open(cls, settings: MilvusConfig, expected: Mapping[str, Any] | None,
              query_params: Mapping[str, Any] | None) -> MilvusStore:
        collection = current_collection(settings)
        if collection is None:
            raise IndexMissingError(f"No index published in {_where(settings)}: the alias "
                                    f"{settings.collection_prefix!r} does not exist.")
        meta = _read_meta(settings, collection)
        manifest = meta["manifest"]
        check_fingerprint(manifest, expected, _where(settings))
        params = dict(manifest.get("query_params") or {}, **dict(query_params or {}))
        backend = MilvusBackend.open(settings, collection, manifest["space"],
                                     manifest.get("index_params") or {}, params)
        if backend.dim != manifest.get("dim") or backend.size != manifest.get("n_items"):
            raise IndexCorruptError(
                f"Milvus collection {collection} holds {backend.size} x {backend.dim} vectors, "
                f"its manifest says {manifest.get('n_items')} x {manifest.get('dim')}.")
        backend.fields = dict(meta["fields"])
        return cls(backend, meta, version_of(collection, settings))

    # what the app reads

    @property
    def size(self) -> int:
        return self.backend.size

    @property
    def space(self) -> str:
        return self.backend.space

    def set_query_params(self, **params: Any) -> None:
        self.backend.set_query_params(**params)

    def filter_options(self, columns: Sequence[str]) -> dict[str, list[str]]:
        return {c: list(self._filter_options[c]) for c in columns if c in self._filter_options}

    def map_sample(self, max_points: int = MAP_MAX_POINTS) -> pd.DataFrame:
        return self._sample.head(max_points).reset_index(drop=True)

    def project_to_map(self, vectors: np.ndarray) -> np.ndarray:
        return project(vectors, self.map_projection)

    def _lookup(self, item_id: str, output: list[str]) -> dict:
        found = call(self.backend.settings, "look up an item", "query", self.backend.collection,
                     filter=f"{self.fields[ITEM_ID]} == {quote(item_id)}",
                     output_fields=output, limit=1)
        if not found:
            raise KeyError(f"unknown item id {item_id!r}")
        return dict(found[0])

    def item(self, item_id: str) -> dict:
        """One item's columns (and its row), read from Milvus; KeyError if unknown."""
        found = self._lookup(item_id, [ROW, *self.fields.values()])
        return {**{c: found.get(f) for c, f in self.fields.items()}, "row": int(found[ROW])}

    def vector_of(self, item_id: str) -> np.ndarray:
        return np.asarray(self._lookup(item_id, [VECTOR])[VECTOR], dtype=np.float32)

    def search(self, query_vector: np.ndarray, k: int,
               filters: Mapping[str, Sequence[str] | str] | None = None,
               exclude_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """The k nearest items as IndexStore.search returns them; the filters and the
        excluded ids run inside Milvus as one boolean expression."""
        expression = filter_expression(filters, self.fields, exclude_ids)
        query = as_query(query_vector, self.backend.dim)
        if k <= 0:
            return self._frame([])
        hits = self.backend.filtered_hits(query, k, expression, list(self.fields.values()))
        return self._frame(sorted(hits, key=lambda h: (h["distance"], h[ROW])))

    def search_batch(self, query_vectors: np.ndarray, k: int,
                     filters: Mapping[str, Sequence[str] | str] | None = None,
                     exclude_ids: Sequence[Sequence[str] | None] | None = None
                     ) -> list[pd.DataFrame]:
        excludes = exclude_ids or [None] * len(query_vectors)
        return [self.search(q, k, filters, e) for q, e in zip(query_vectors, excludes,
                                                             strict=True)]

    def _frame(self, hits: list[dict]) -> pd.DataFrame:
        columns: dict[str, Any] = {
            "id": [h.get(self.fields[ITEM_ID]) for h in hits],
            "distance": np.array([h["distance"] for h in hits], np.float32),
            "row": np.array([h[ROW] for h in hits], np.int64)}
        columns.update((c, [h.get(self.fields[c]) for h in hits]) for c in self.columns
                       if c not in RESULT_COLUMNS)
        return pd.DataFrame(columns)
