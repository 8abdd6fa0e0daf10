"""File helpers shared by every package: sha256 of bytes or files, atomic writes, fsync."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

Source = bytes | bytearray | memoryview | str | Path
_BLOCK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(source: Source) -> str:
    """Hex sha256 of bytes, or of a file's content (streamed)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return hashlib.sha256(source).hexdigest()
    return file_sha256(source)


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a folder's) data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(path: Path) -> Path:
    """A unique temporary path beside `path` (two writers never share one)."""
    return path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a unique temporary path to write; on success it is fsynced and replaces `path`.

    Readers see the old file or the new one, never a half-written one; on an error (or Ctrl-C)
    the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    temporary = temporary_name(path)
    try:
        yield temporary
        fsync_path(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, content: bytes) -> None:
    """Write `content` to `path` atomically (unique temporary file, fsync, os.replace)."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(content)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically (unique temporary file, fsync, os.replace)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding=encoding)
