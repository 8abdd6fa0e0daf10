"""Shortlists kept on the server, one JSON file per browser id: atomic, locked updates."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from util.files import atomic_write_text

log = logging.getLogger(__name__)

OWNER_PATTERN = re.compile(r"[A-Za-z0-9_-]{20,64}")
Shortlist = dict[str, dict]  # product id → the row shortlist_row() made, in the order added


def new_owner() -> str:
    """A fresh, unguessable browser id."""
    return secrets.token_urlsafe(24)


def valid_owner(value: object) -> str | None:
    """The id when it has the shape new_owner() gives (never a path), else None."""
    return value if isinstance(value, str) and OWNER_PATTERN.fullmatch(value) else None


class ShortlistStore:
    """Every browser's shortlist under one folder (config `paths.shortlists_path`).

    Each change is a read-modify-write under an exclusive lock on the folder's lock file
    (threads of one server and several servers alike), written atomically, so two tabs of one
    browser never lose each other's additions and a crash never leaves half a file.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, owner: str) -> Path:
        if valid_owner(owner) is None:
            raise ValueError(f"not a shortlist id: {owner!r}")
        return self.folder / f"{owner}.json"

    def load(self, owner: str) -> Shortlist:
        """The owner's shortlist ({} when none was saved or the file is damaged; OSError when
        the folder cannot be read)."""
        path = self.path(owner)
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (UnicodeDecodeError, ValueError) as error:
            log.warning("shortlist %s damaged, starting empty: %s", path, error)
            return {}
        if not isinstance(rows, list):
            return {}
        return {str(row["id"]): row for row in rows if isinstance(row, dict) and "id" in row}

    def toggle(self, owner: str, row: dict) -> Shortlist:
        """Add the row, or remove it when its product is already listed."""
        def change(shortlist: Shortlist) -> None:
            if row["id"] in shortlist:
                del shortlist[row["id"]]
            else:
                shortlist[row["id"]] = row
        return self.update(owner, change)

    def clear(self, owner: str) -> Shortlist:
        return self.update(owner, lambda shortlist: shortlist.clear())

    def update(self, owner: str, change: Callable[[Shortlist], None]) -> Shortlist:
        path = self.path(owner)
        with self._locked():
            shortlist = self.load(owner)
            change(shortlist)
            atomic_write_text(path, json.dumps(list(shortlist.values()), ensure_ascii=False))
        return shortlist

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
