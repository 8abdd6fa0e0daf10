"""IndexStore: backend + vectors + item table + 2-D map + manifest, saved as atomic versions.

Layout under the index root::

    root/CURRENT                     the name of the version in use (replaced atomically)
    root/versions/<version>/         index.bin + backend json, vectors.npy, items.parquet,
                                     map.parquet, map_pca.npy, [colours.npy], manifest.json

A version is written under `<version>.tmp`, fsynced and renamed; only then does CURRENT switch,
so a crash or Ctrl-C mid-save leaves the previous index loadable, and a serving app can watch
`current_version(root)` to pick up a rebuilt index without restarting.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from index_store.backends import backend_class, make_backend
from index_store.base import (
    Backend,
    IndexCorruptError,
    IndexMissingError,
    IndexStoreError,
    Neighbors,
    as_matrix,
    filtered_query,
    filtered_query_batch,
)
from index_store.colours import ItemDistributions
from index_store.fingerprint import check_fingerprint, plain
from index_store.map2d import map_sample, pca_2d, project
from util.files import atomic_write_text, fsync_path

log = logging.getLogger(__name__)

CURRENT = "CURRENT"
VERSIONS = "versions"
KEEP_VERSIONS = 2
STALE_TMP_SECONDS = 3600
FORMAT_VERSION = 1
VECTORS_FILE = "vectors.npy"
ITEMS_FILE = "items.parquet"
MAP_FILE = "map.parquet"
MAP_PCA_FILE = "map_pca.npy"
MANIFEST_FILE = "manifest.json"
RESULT_COLUMNS = ("id", "distance", "row")
MAP_MAX_POINTS = 5000  # the catalog map shows at most this many products (a seeded sample)
FILTER_OPTIONS_MAX = 2000  # a column with more distinct values is not offered as a filter


def current_version(root: Path) -> str | None:
    """The version CURRENT names, or None when nothing was saved yet (cheap: one small read)."""
    try:
        name = (Path(root) / CURRENT).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return name or None


def _new_version_name() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{secrets.token_hex(4)}"


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            fsync_path(path)
    fsync_path(folder)


def _point_current(root: Path, version: str) -> None:
    """Write CURRENT.<unique>.tmp, fsync, then os.replace onto CURRENT (atomic switch)."""
    atomic_write_text(root / CURRENT, version + "\n")
    fsync_path(root)


def clean_versions(root: Path, keep: int = KEEP_VERSIONS) -> list[str]:
    """Delete all but the newest `keep` versions (never the current one) and stale .tmp folders;
    returns the deleted names."""
    versions = Path(root) / VERSIONS
    if not versions.is_dir():
        return []
    current = current_version(root)
    finished = sorted(p for p in versions.iterdir() if p.is_dir() and p.suffix != ".tmp")
    doomed = [p for p in finished[: max(len(finished) - keep, 0)] if p.name != current]
    cutoff = time.time() - STALE_TMP_SECONDS
    doomed += [p for p in versions.glob("*.tmp") if p.is_dir() and p.stat().st_mtime < cutoff]
    for path in doomed:
        log.info("removing old index version %s", path.name)
        shutil.rmtree(path, ignore_errors=True)
    return [p.name for p in doomed]


def _check_items(items: pd.DataFrame, n: int) -> pd.DataFrame:
    if not isinstance(items, pd.DataFrame) or "id" not in items.columns:
        raise ValueError("items must be a DataFrame with an 'id' column")
    if len(items) != n:
        raise ValueError(f"items has {len(items)} rows but there are {n} vectors")
    table = items.reset_index(drop=True).copy()
    table["id"] = table["id"].astype(str)
    for column in table.select_dtypes(include="object").columns:
        kinds = {type(v) for v in table[column] if not _missing(v)}
        if len(kinds) > 1:  # parquet needs one type per column: mixed values become text
            log.warning("item column %r mixes %s values; storing it as text", column,
                        ", ".join(sorted(k.__name__ for k in kinds)))
            table[column] = [None if _missing(v) else str(v) for v in table[column]]
    return table


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # list-like values
        return False


class IndexStore:
    """The searchable catalog: rows of `vectors`, `items` and `map` are the same products."""

    def __init__(self, backend: Backend, vectors: np.ndarray, items: pd.DataFrame,
                 map_xy: pd.DataFrame, map_projection: np.ndarray, manifest: dict,
                 version: str | None = None, colours: ItemDistributions | None = None) -> None:
        self.backend, self.vectors, self.items = backend, vectors, items
        self.colours = colours  # colour-head distributions stored at build time, row-aligned
        self.map, self.map_projection = map_xy, map_projection
        self.manifest, self.version = manifest, version
        self._row_by_id: dict[str, int] | None = None
        self._text_columns: dict[str, pd.Series] = {}
        self._item_arrays: tuple[int, dict] | None = None

    # building and persistence -----------------------------------------------------------

    @classmethod
    def build(cls, vectors: np.ndarray, items: pd.DataFrame, *, backend: str | Backend = "nmslib",
              space: str = "cosinesimil", index_params: Mapping[str, Any] | None = None,
              query_params: Mapping[str, Any] | None = None,
              manifest: Mapping[str, Any] | None = None,
              colours: ItemDistributions | None = None) -> IndexStore:
        """Index vectors (float32 [n, dim]) for items (row-aligned, with an `id` column), and
        keep the products' `colours` (row-aligned too) when given.

        backend: a name from `index_store.backends.BACKENDS` (built with space and params) or an
        unbuilt Backend instance. manifest["fingerprint"] should hold everything that changes the
        built index (model and catalog checksums, preprocessing, backend, space, index-time
        params); `load(expected=...)` compares it key by key.
        """
        matrix = as_matrix(vectors)
        table = _check_items(items, matrix.shape[0])
        if colours is not None and len(colours.values) != matrix.shape[0]:
            raise ValueError(f"{len(colours.values)} colour rows for {matrix.shape[0]} vectors")
        if isinstance(backend, str):
            backend = make_backend(backend, space, index_params, query_params)
        started = time.perf_counter()
        backend.build_catalog(matrix, table)
        log.info("built %s index over %d x %d vectors in %.1f s", backend.name, *matrix.shape,
                 time.perf_counter() - started)
        coords, projection = pca_2d(matrix)
        map_xy = pd.DataFrame({"id": table["id"], "map_x": coords[:, 0], "map_y": coords[:, 1]})
        info = dict(manifest or {})
        info.setdefault("fingerprint", {"backend": backend.name, "space": backend.space,
                                        "index_params": dict(backend.index_params)})
        info.update(format=FORMAT_VERSION, backend=backend.name, space=backend.space,
                    index_params=dict(backend.index_params),
                    query_params=dict(backend.query_params),
                    n_items=int(matrix.shape[0]), dim=int(matrix.shape[1]),
                    colours=colours.manifest_entry() if colours is not None else None)
        return cls(backend, matrix, table, map_xy, projection, plain(info), colours=colours)

    def save(self, root: Path) -> Path:
        """Write a new version under root and switch CURRENT to it; returns the version folder.

        Old versions beyond the newest KEEP_VERSIONS are deleted afterwards (never the current).
        """
        root = Path(root)
        versions = root / VERSIONS
        versions.mkdir(parents=True, exist_ok=True)
        name = _new_version_name()
        tmp, final = versions / f"{name}.tmp", versions / name
        tmp.mkdir()
        try:
            self._write_version(tmp, name)
            _fsync_tree(tmp)
            os.rename(tmp, final)
            fsync_path(versions)
            _point_current(root, name)
        except BaseException:
            if current_version(root) != name:
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.rmtree(final, ignore_errors=True)
            raise
        self.version = name
        log.info("saved index version %s under %s", name, root)
        clean_versions(root)
        return final

    def _write_version(self, folder: Path, name: str) -> None:
        np.save(folder / VECTORS_FILE, self.vectors, allow_pickle=False)
        self.items.to_parquet(folder / ITEMS_FILE, index=False)
        self.map.to_parquet(folder / MAP_FILE, index=False)
        np.save(folder / MAP_PCA_FILE, self.map_projection, allow_pickle=False)
        if self.colours is not None:
            self.colours.save(folder)
        self.backend.save(folder)
        files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
        manifest = dict(self.manifest, version=name, files=files,
                        created_at=datetime.now(UTC).isoformat(timespec="seconds"))
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str))
        self.manifest = manifest

    @classmethod
    def load(cls, root: Path, expected: Mapping[str, Any] | None = None, *,
             config_path: str | Path | None = None,
             query_params: Mapping[str, Any] | None = None) -> IndexStore:
        """Open the CURRENT version under root.

        expected: the fingerprint the caller would build now; any differing key raises
        IndexStaleError naming it. query_params (never fingerprinted) override the saved ones.
        Raises IndexMissingError / IndexCorruptError; every message names config_path.
        """
        root = Path(root)
        try:
            return cls._load_current(root, expected, query_params)
        except IndexStoreError as error:
            if config_path is not None:
                error.config_path = config_path
            raise

    @classmethod
    def _load_current(cls, root: Path, expected: Mapping[str, Any] | None,
                      query_params: Mapping[str, Any] | None) -> IndexStore:
        for _attempt in range(3):
            version = current_version(root)
            if version is None:
                raise IndexMissingError(f"No index found at {root} (no {CURRENT} file).")
            try:
                return cls._load_version(root, version, expected, query_params)
            except IndexCorruptError:
                if current_version(root) == version:
                    raise
                log.info("index version %s was replaced while loading; retrying", version)
        raise IndexCorruptError(f"Index at {root} keeps changing while loading.")

    @classmethod
    def _load_version(cls, root: Path, version: str, expected: Mapping[str, Any] | None,
                      query_params: Mapping[str, Any] | None) -> IndexStore:
        folder = root / VERSIONS / version
        manifest = _read_manifest(folder)
        check_fingerprint(manifest, expected, root)
        _check_file_sizes(folder, manifest)
        try:
            vectors, items, map_xy, projection = _read_arrays(folder, manifest)
            colours = ItemDistributions.load(folder, manifest.get("colours"), len(vectors))
        except (OSError, ValueError) as error:
            raise IndexCorruptError(f"Index files in {folder} are unreadable: {error}.") \
                from error
        params = dict(manifest.get("query_params") or {}, **dict(query_params or {}))
        backend = backend_class(manifest["backend"]).load(
            folder, vectors, manifest["space"], manifest.get("index_params") or {}, params)
        return cls(backend, vectors, items, map_xy, projection, manifest, version, colours)

    # querying ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def space(self) -> str:
        return self.backend.space

    def set_query_params(self, **params: Any) -> None:
        """Query-time settings such as efSearch; they never make the index stale."""
        self.backend.set_query_params(**params)

    def row_of(self, item_id: str) -> int:
        """Row of an item id (the first, if ids repeat); KeyError if unknown."""
        if self._row_by_id is None:
            ids = self.items["id"].tolist()
            self._row_by_id = {i: row for row, i in reversed(list(enumerate(ids)))}
        try:
            return self._row_by_id[str(item_id)]
        except KeyError:
            raise KeyError(f"unknown item id {item_id!r}") from None

    def item(self, item_id: str) -> dict:
        """One item's columns (and its row); KeyError if unknown."""
        row = self.row_of(item_id)
        return {**self.items.iloc[row].to_dict(), "row": row}

    def vector_of(self, item_id: str) -> np.ndarray:
        """The stored vector of an item; KeyError if unknown."""
        return self.vectors[self.row_of(item_id)]

    def filter_options(self, columns: Sequence[str]) -> dict[str, list[str]]:
        """Sorted distinct values (as text) of each listed column that exists."""
        return distinct_values(self.items, columns)

    def map_sample(self, max_points: int = MAP_MAX_POINTS) -> pd.DataFrame:
        """Items with their map coordinates; a seeded sample of max_points for large catalogs."""
        return map_sample(self.items, self.map, max_points)

    def rows_of_ids(self, item_ids: Sequence[str] | None) -> np.ndarray:
        """Rows of every item whose id is listed (unknown ids are ignored)."""
        if not item_ids:
            return np.empty(0, np.int64)
        return np.flatnonzero(self.items["id"].isin([str(i) for i in item_ids]))

    @property
    def filterable_columns(self) -> list[str]:
        return [str(c) for c in self.items.columns]

    def allowed_mask(self, filters: Mapping[str, Sequence[str] | str] | None) -> np.ndarray | None:
        """Boolean row mask: AND across columns, OR within one; values compared as strings.

        A column with no values (empty list or None) does not restrict. None: no restriction.
        """
        mask: np.ndarray | None = None
        for column, values in (filters or {}).items():
            if column not in self.items.columns:
                raise ValueError(f"unknown filter column {column!r}; filterable columns: "
                                 f"{', '.join(self.filterable_columns)}")
            wanted = [values] if isinstance(values, str) else list(values or [])
            if not wanted:
                continue
            matches = self._text(column).isin([str(v) for v in wanted])
            column_mask = matches.fillna(False).to_numpy(dtype=bool)
            mask = column_mask if mask is None else mask & column_mask
        return mask

    def _text(self, column: str) -> pd.Series:
        if column not in self._text_columns:
            self._text_columns[column] = self.items[column].astype("string")
        return self._text_columns[column]

    def search(self, query_vector: np.ndarray, k: int,
               filters: Mapping[str, Sequence[str] | str] | None = None,
               exclude_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """The k nearest items (exactly min(k, matching)): id, distance, row, item columns."""
        found = filtered_query(self.backend, self.vectors, query_vector, k,
                               self.allowed_mask(filters), self.space,
                               self.rows_of_ids(exclude_ids))
        return self.results_frame(found)

    def search_batch(self, query_vectors: np.ndarray, k: int,
                     filters: Mapping[str, Sequence[str] | str] | None = None,
                     exclude_ids: Sequence[Sequence[str] | None] | None = None
                     ) -> list[pd.DataFrame]:
        """`search` for each row of query_vectors; exclude_ids: one list (or None) per query."""
        return [self.results_frame(found)
                for found in self.query_neighbors(query_vectors, k, filters, exclude_ids)]

    def query_neighbors(self, query_vectors: np.ndarray, k: int,
                        filters: Mapping[str, Sequence[str] | str] | None = None,
                        exclude_ids: Sequence[Sequence[str] | None] | None = None
                        ) -> list[Neighbors]:
        """Raw neighbours per query (rows and distances), for evaluation and batch jobs."""
        excludes = None if exclude_ids is None else [self.rows_of_ids(ids) for ids in exclude_ids]
        return filtered_query_batch(self.backend, self.vectors, query_vectors, k,
                                    self.allowed_mask(filters), self.space, excludes)

    def results_frame(self, found: Neighbors) -> pd.DataFrame:
        """Neighbours as a table: id, distance, row, then the other item columns."""
        if self._item_arrays is None or self._item_arrays[0] != id(self.items):
            # the columns' arrays (dtypes kept): a DataFrame row take costs ~2 ms per query
            self._item_arrays = (id(self.items), {c: self.items[c].array for c in self.items})
        arrays = self._item_arrays[1]
        rows = np.asarray(found.rows, dtype=np.int64)
        columns = {"id": arrays["id"].take(rows), "distance": found.distances, "row": rows}
        columns.update((name, values.take(rows)) for name, values in arrays.items()
                       if name not in RESULT_COLUMNS)
        return pd.DataFrame(columns)

    def project_to_map(self, vectors: np.ndarray) -> np.ndarray:
        """Map coordinates [n, 2] for new vectors (e.g. a query image), same axes as `map`."""
        return project(vectors, self.map_projection)


def distinct_values(items: pd.DataFrame, columns: Sequence[str]) -> dict[str, list[str]]:
    """Sorted distinct text values per column (columns with more than FILTER_OPTIONS_MAX left
    out)."""
    options = {}
    for column in columns:
        if column in items:
            values = sorted(items[column].dropna().astype(str).unique())
            if len(values) <= FILTER_OPTIONS_MAX:
                options[column] = values
    return options


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise IndexCorruptError(f"{CURRENT} names index version {folder.name}, which does not "
                                f"exist in {folder.parent}.")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise IndexCorruptError(f"Index manifest {path} is missing or unreadable: {error}.") \
            from error
    if manifest.get("format") != FORMAT_VERSION:
        raise IndexCorruptError(f"Index manifest {path} has format {manifest.get('format')!r}, "
                                f"this code reads format {FORMAT_VERSION}.")
    return manifest


def _check_file_sizes(folder: Path, manifest: dict) -> None:
    for name, size in (manifest.get("files") or {}).items():
        path = folder / name
        actual = path.stat().st_size if path.is_file() else None
        if actual != size:
            raise IndexCorruptError(f"Index file {path} is {actual} bytes, {size} were written: "
                                    "it is missing, truncated or was replaced.")


def _read_arrays(folder: Path, manifest: dict
                 ) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame, np.ndarray]:
    vectors = np.load(folder / VECTORS_FILE, allow_pickle=False)
    items = pd.read_parquet(folder / ITEMS_FILE)
    items["id"] = items["id"].astype(str)
    map_xy = pd.read_parquet(folder / MAP_FILE)
    projection = np.load(folder / MAP_PCA_FILE, allow_pickle=False)
    n, dim = manifest.get("n_items"), manifest.get("dim")
    if vectors.shape != (n, dim) or len(items) != n or len(map_xy) != n:
        raise ValueError(f"manifest says {n} x {dim}, found vectors {vectors.shape}, "
                         f"{len(items)} items, {len(map_xy)} map rows")
    return vectors, items, map_xy, projection
