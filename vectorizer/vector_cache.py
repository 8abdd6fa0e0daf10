"""Cache of image vectors by content key (sha256 of image bytes), one file per model checksum."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from util.files import atomic_path

log = logging.getLogger(__name__)

CACHE_FILE = "vectors.npz"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class VectorCache:
    """Vectors computed by one model, keyed by the caller's content hash.

    Stored in `folder/<model_checksum>/vectors.npz` (keys, vectors and the checksum together, so
    they can never disagree); a cache written for another model checksum is never read.
    Not thread-safe; `save` merges entries another process saved meanwhile.
    """

    def __init__(self, folder: Path, model_checksum: str) -> None:
        if not _SAFE_NAME.fullmatch(model_checksum or ""):
            raise ValueError(f"model checksum {model_checksum!r} is not a safe folder name")
        self.model_checksum = model_checksum
        self.path = Path(folder) / model_checksum / CACHE_FILE
        self._row: dict[str, int] = {}
        self._buffer = np.empty((0, 0), np.float32)
        self._count = 0
        self._dirty = False
        self._merge(*self._read_disk())
        self._dirty = False

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: object) -> bool:
        return key in self._row

    @property
    def dim(self) -> int | None:
        """Vector length, None while the cache is empty."""
        return self._buffer.shape[1] if self._count else None

    @property
    def vectors(self) -> np.ndarray:
        return self._buffer[: self._count]

    def lookup(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(found [n] bool, vectors [n, dim] float32) with NaN rows where not found.

        While the cache is empty the vectors have shape [n, 0].
        """
        rows = np.fromiter((self._row.get(key, -1) for key in keys), np.int64, len(keys))
        found = rows >= 0
        out = np.full((len(keys), self.dim or 0), np.nan, np.float32)
        out[found] = self._buffer[rows[found]]
        return found, out

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors [n, dim] under keys (existing keys are overwritten)."""
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(keys):
            raise ValueError(f"{len(keys)} keys need a [{len(keys)}, dim] matrix, "
                             f"got {matrix.shape}")
        if self.dim is not None and matrix.shape[1] != self.dim:
            raise ValueError(f"vectors have {matrix.shape[1]} dimensions, the cache {self.dim}")
        if not np.isfinite(matrix).all():
            raise ValueError("refusing to cache NaN or infinite vectors")
        self._merge(list(keys), matrix, overwrite=True)

    def get_or_compute(self, keys: Sequence[str],
                       compute: Callable[[list[int]], np.ndarray]) -> np.ndarray:
        """Vectors [n, dim] for keys; compute(positions of the misses) → their vectors."""
        found, out = self.lookup(keys)
        missing = [int(i) for i in np.flatnonzero(~found)]
        if not missing:
            return out
        computed = np.asarray(compute(missing), dtype=np.float32)
        self.add([keys[i] for i in missing], computed)
        if out.shape[1] != computed.shape[1]:
            out = np.full((len(keys), computed.shape[1]), np.nan, np.float32)
            out[found] = self.lookup([keys[i] for i in np.flatnonzero(found)])[1]
        out[missing] = computed
        return out

    def save(self) -> Path:
        """Write atomically (temporary file, fsync, os.replace) if anything was added."""
        if not self._dirty:
            return self.path
        self._merge(*self._read_disk(), overwrite=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, keys=np.array(list(self._row), dtype=str),
                     vectors=self._ordered_vectors(), model_checksum=np.array(self.model_checksum))
        self._dirty = False
        log.info("saved %d cached vectors to %s", self._count, self.path)
        return self.path

    def _ordered_vectors(self) -> np.ndarray:
        return self._buffer[np.fromiter(self._row.values(), np.int64, len(self._row))]

    def _read_disk(self) -> tuple[list[str], np.ndarray]:
        """Keys and vectors saved for this model; empty when absent or unreadable."""
        empty: tuple[list[str], np.ndarray] = ([], np.empty((0, 0), np.float32))
        if not self.path.is_file():
            return empty
        try:
            with np.load(self.path, allow_pickle=False) as data:
                keys, vectors = data["keys"].tolist(), data["vectors"].astype(np.float32)
                checksum = str(data["model_checksum"])
        except (OSError, ValueError, KeyError) as error:
            log.warning("ignoring unreadable vector cache %s: %s", self.path, error)
            return empty
        if checksum != self.model_checksum or vectors.ndim != 2 or len(keys) != len(vectors):
            log.warning("ignoring vector cache %s: written for another model or inconsistent",
                        self.path)
            return empty
        return keys, vectors

    def _merge(self, keys: list[str], vectors: np.ndarray, overwrite: bool = False) -> None:
        if not keys:
            return
        if self._count == 0:
            self._buffer = np.empty((max(len(keys), 16), vectors.shape[1]), np.float32)
        elif vectors.shape[1] != self._buffer.shape[1]:
            log.warning("not merging cached vectors of another size from %s", self.path)
            return
        for key, vector in zip(keys, vectors, strict=True):
            row = self._row.get(key)
            if row is None:
                row = self._append_row()
                self._row[key] = row
            elif not overwrite:
                continue
            self._buffer[row] = vector
            self._dirty = True

    def _append_row(self) -> int:
        if self._count == self._buffer.shape[0]:
            grown = np.empty((self._buffer.shape[0] * 2, self._buffer.shape[1]), np.float32)
            grown[: self._count] = self._buffer[: self._count]
            self._buffer = grown
        self._count += 1
        return self._count - 1
