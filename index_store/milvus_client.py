"""Talking to Milvus: shared clients, every failure re-raised as one message naming the config
key to check, and filter expressions whose values cannot escape their string literals."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from config.schema import MilvusConfig
from index_store.base import IndexMissingError, IndexStoreError

ITEM_ID = "id"


class MilvusError(IndexStoreError):
    """Milvus cannot be reached or refuses the request; the message names the config key."""

    def __str__(self) -> str:
        return self.detail


# connecting ----------------------------------------------------------------------------------

_clients: dict[tuple[str, str, str], Any] = {}
_clients_lock = threading.Lock()


def _token(settings: MilvusConfig) -> str:
    if not settings.token_env:
        return ""
    token = os.environ.get(settings.token_env)
    if token is None:
        raise MilvusError(f"milvus.token_env: the environment variable {settings.token_env} "
                          "is not set (it should hold the Milvus token or user:password).")
    return token


def pymilvus() -> Any:
    """pymilvus, imported on first use (0.4 s; the other backends never need it). Its own
    error log is silenced: every failure is re-raised with the config key to check."""
    import pymilvus as module

    # Milvus Lite's in-process gRPC server logs the calls it does not implement (pymilvus'
    # AllocTimestamp) as errors, with a traceback; nothing fails
    for name in ("pymilvus", "milvus_lite", "grpc._server"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return module


def client_for(settings: MilvusConfig) -> Any:
    """A shared MilvusClient for the settings' uri, token and database (MilvusError if not)."""
    uri, token = str(settings.uri), _token(settings)
    key = (uri, token, settings.db_name)
    with _clients_lock:
        if key in _clients:
            return _clients[key]
        if settings.is_lite:
            Path(uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
        try:
            client = pymilvus().MilvusClient(uri=uri, token=token, db_name=settings.db_name,
                                  timeout=settings.timeout_s)
        except Exception as error:  # pymilvus raises several unrelated exception types
            if settings.is_lite and lite_file_locked(Path(uri)):
                raise explain(RuntimeError("data dir lock held"), settings, "connect") from None
            raise explain(error, settings, "connect") from None
        _clients[key] = client
        return client


def lite_file_locked(path: Path) -> bool:
    """Whether another process holds the Milvus Lite folder's lock (it opens one per process)."""
    import fcntl

    try:
        with open(path / "LOCK", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def explain(error: Exception, settings: MilvusConfig, action: str) -> IndexStoreError:
    """A pymilvus failure as one message naming the config key to check."""
    reason = str(getattr(error, "message", "") or error)
    lowered, code = reason.lower(), getattr(error, "code", None)
    where = f"Milvus at {settings.uri}"
    if isinstance(error, IndexStoreError):
        return error
    if "lock" in lowered and settings.is_lite:
        return MilvusError(f"milvus.uri: the Milvus Lite file {settings.uri} is open in another "
                           "process (an app or a build). Milvus Lite serves one process; stop "
                           "the other one, or run a Milvus server and set milvus.uri to it.")
    if any(word in lowered for word in ("auth", "token", "credential", "password", "denied")) \
            or code in (1800, 1801, 1802, 1803, 2100):
        key = f"milvus.token_env (${settings.token_env})" if settings.token_env \
            else "milvus.token_env (not set)"
        return MilvusError(f"{key}: {where} refused the credentials while trying to {action}: "
                           f"{reason}")
    if code == 2 or any(word in lowered for word in ("fail connecting", "unavailable",
                                                      "not exists", "timeout", "deadline")):
        if settings.token_env and not settings.is_lite and listening(str(settings.uri)):
            # a server that is up but refuses the connection: pymilvus reports a refused token
            # as "fail connecting ... illegal connection params"
            return MilvusError(f"milvus.token_env (${settings.token_env}): {where} is reachable "
                               f"but refused the connection while trying to {action}; check the "
                               f"token or user:password in ${settings.token_env} ({reason}).")
        return MilvusError(f"milvus.uri: cannot {action} {where}: {reason}. Check milvus.uri "
                           "and that the server is running and reachable.")
    if code == 100 or "not exist" in lowered or "not found" in lowered:
        return IndexMissingError(f"{where} has no collection for milvus.collection_prefix "
                                 f"{settings.collection_prefix!r} ({reason}).")
    return MilvusError(f"{where} failed to {action}: {reason} (check the milvus section of the "
                       "config).")


def server_version(settings: MilvusConfig) -> tuple[tuple[int, int], str] | None:
    """(major, minor) and the text of a server's version; None when it does not say."""
    text = str(call(settings, "ask the server's version", "get_server_version"))
    found = re.match(r"v?(\d+)\.(\d+)", text)
    return ((int(found[1]), int(found[2])), text) if found else None


def listening(uri: str, timeout_s: float = 2.0) -> bool:
    """Whether something accepts TCP connections at an http(s) uri's host and port."""
    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 19530)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def call(settings: MilvusConfig, action: str, method: str, *args: Any, **kwargs: Any) -> Any:
    """client.method(*args, **kwargs), any failure re-raised by `explain`."""
    client = client_for(settings)
    try:
        return getattr(client, method)(*args, **kwargs)
    except Exception as error:
        raise explain(error, settings, action) from None


# filter expressions -------------------------------------------------------------------------


def quote(value: object) -> str:
    """A Milvus string literal whose content is exactly str(value): quotes, backslashes and
    control characters escaped, so no value can end the literal or add to the expression."""
    text = str(value)
    for raw, escaped in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"),
                         ("\t", "\\t")):
        text = text.replace(raw, escaped)
    return f'"{text}"'


def in_list(field: str, values: Iterable[object], negate: bool = False) -> str:
    listed = ", ".join(quote(v) for v in values)
    return f"{field} {'not in' if negate else 'in'} [{listed}]"


def filter_expression(filters: Mapping[str, Sequence[str] | str] | None,
                      fields: Mapping[str, str],
                      exclude_ids: Sequence[str] | None = None) -> str:
    """AND across columns, OR within one (values compared as text), minus excluded ids."""
    parts = []
    for column, values in (filters or {}).items():
        if column not in fields:
            raise ValueError(f"unknown filter column {column!r}; filterable columns: "
                             f"{', '.join(fields)}")
        wanted = [values] if isinstance(values, str) else list(values or [])
        if wanted:
            parts.append(in_list(fields[column], wanted))
    if exclude_ids:
        parts.append(in_list(fields[ITEM_ID], [str(i) for i in exclude_ids], negate=True))
    return " and ".join(f"({part})" for part in parts)
