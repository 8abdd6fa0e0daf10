"""The judgments database: SQLite in WAL mode, one short transaction per write.

Every call opens its own connection (cheap for SQLite), so Streamlit sessions on several threads
and app processes on one machine share the file safely; a writer waits `busy_timeout_s` for a
lock, then gives up with `JudgmentsUnavailable` (the app keeps searching and says so).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from PIL import Image

log = logging.getLogger(__name__)

QUERY_IMAGE_SIDE = 512  # the searched image is kept this small, enough to search with it again
VERDICTS = {1: "up", -1: "down"}
SCHEMA = """
CREATE TABLE IF NOT EXISTS judgments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    query_kind TEXT NOT NULL,      -- url | upload | item
    query_ref TEXT NOT NULL,       -- the link, the uploaded file's name or the product id
    query_hash TEXT NOT NULL,      -- sha256 of the query image's bytes ('' for a product)
    crop TEXT NOT NULL,            -- 'x,y,w,h' of the searched region, '' for the whole image
    filters TEXT NOT NULL,         -- JSON {column: [values]} the search was filtered by
    colour TEXT NOT NULL,          -- the colour mode (any | similar | same; '' = the default)
    result_id TEXT NOT NULL,
    rank INTEGER NOT NULL,         -- 1 = the top result
    distance REAL NOT NULL,
    verdict INTEGER NOT NULL CHECK (verdict IN (-1, 1)),
    index_version TEXT NOT NULL,
    judged_at TEXT NOT NULL        -- ISO 8601, UTC
);
CREATE INDEX IF NOT EXISTS judgments_version ON judgments (index_version);
CREATE TABLE IF NOT EXISTS query_images (
    query_key TEXT PRIMARY KEY,    -- query_hash + '|' + crop
    image BLOB NOT NULL            -- the searched image (cropped), JPEG
);
"""
COLUMNS = ["id", "query_kind", "query_ref", "query_hash", "crop", "filters", "colour",
           "result_id", "rank", "distance", "verdict", "index_version", "judged_at"]
QUERY_FIELDS = ["query_kind", "query_ref", "query_hash", "crop", "filters", "colour"]


class JudgmentsUnavailable(Exception):
    """The judgments database cannot be written or read; str() says why, for the user."""


@dataclass(frozen=True)
class Judgment:
    """One verdict on one result of one query."""

    query_kind: str
    query_ref: str
    result_id: str
    rank: int
    distance: float
    verdict: int                      # +1 thumbs up, -1 thumbs down
    index_version: str
    query_hash: str = ""
    crop: str = ""
    filters: dict = field(default_factory=dict)
    colour: str = ""

    def row(self, judged_at: str) -> dict:
        values = asdict(self)
        values["filters"] = json.dumps(values["filters"], sort_keys=True)
        return dict(values, judged_at=judged_at)

    @property
    def query_key(self) -> str:
        return f"{self.query_hash}|{self.crop}"


def query_image_bytes(image: Image.Image) -> bytes:
    """The searched image as a small JPEG, kept so a new index can be asked the same query."""
    small = image.convert("RGB")
    small.thumbnail((QUERY_IMAGE_SIDE, QUERY_IMAGE_SIDE))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class JudgmentStore:
    """Judgments in the SQLite file at `path` (created on first write)."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 2.0) -> None:
        self.path, self.busy_timeout_s = Path(path), busy_timeout_s
        self._ready = False

    @contextlib.contextmanager
    def _connect(self, write: bool) -> Iterator[sqlite3.Connection]:
        try:
            if write:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            elif not self.path.is_file():
                raise JudgmentsUnavailable(f"no judgments yet ({self.path} does not exist)")
            connection = sqlite3.connect(self.path, timeout=self.busy_timeout_s,
                                         isolation_level=None)
        except (sqlite3.Error, OSError) as error:
            raise JudgmentsUnavailable(self._why(error)) from error
        try:
            if not self._ready:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.executescript(SCHEMA)
                self._ready = True
            yield connection
        except sqlite3.Error as error:
            raise JudgmentsUnavailable(self._why(error)) from error
        finally:
            connection.close()

    def _why(self, error: Exception) -> str:
        text = str(error)
        if "locked" in text or "busy" in text:
            reason = f"it is locked by another program (waited {self.busy_timeout_s:g} s)"
        elif "readonly" in text or "read-only" in text or "Permission denied" in text:
            reason = "it is read-only"
        else:
            reason = f"it cannot be opened ({text})"
        return f"the judgments database {self.path} (paths.judgments_path): {reason}"

    def add(self, judgment: Judgment, query_image: bytes | None = None) -> int:
        """Store one verdict (and the query image once per query); returns the row id."""
        row = judgment.row(_now())
        names = [c for c in COLUMNS if c != "id"]
        with self._connect(write=True) as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                cursor = connection.execute(
                    f"INSERT INTO judgments ({', '.join(names)}) "
                    f"VALUES ({', '.join('?' * len(names))})", [row[n] for n in names])
                if query_image is not None:
                    connection.execute("INSERT OR IGNORE INTO query_images VALUES (?, ?)",
                                       (judgment.query_key, query_image))
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return int(cursor.lastrowid)

    def table(self) -> pd.DataFrame:
        """Every judgment, oldest first (an empty table when there are none yet)."""
        try:
            with self._connect(write=False) as connection:
                frame = pd.read_sql_query(f"SELECT {', '.join(COLUMNS)} FROM judgments "
                                          "ORDER BY id", connection)
        except JudgmentsUnavailable:
            if not self.path.exists():
                return pd.DataFrame(columns=COLUMNS)
            raise
        except pd.errors.DatabaseError as error:
            raise JudgmentsUnavailable(self._why(error)) from error
        return frame

    def query_image(self, query_key: str) -> bytes | None:
        with self._connect(write=False) as connection:
            found = connection.execute("SELECT image FROM query_images WHERE query_key = ?",
                                       (query_key,)).fetchone()
        return None if found is None else bytes(found[0])


def latest_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (query, result, index version): the last verdict given (a changed mind wins)."""
    if table.empty:
        return table
    keys = [*QUERY_FIELDS, "result_id", "index_version"]
    return table.sort_values("id").drop_duplicates(keys, keep="last").reset_index(drop=True)
