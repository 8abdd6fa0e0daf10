"""The search service loaded once per process, in the background, from server start; shared."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from config import AppConfig, ConfigError, load_config
from index_store.base import IndexStoreError
from index_store.location import index_version
from search import SearchService
from util.files import file_sha256
from vectorizer.checkpoint import CheckpointError

log = logging.getLogger(__name__)

KEEP_SERVICES = 2  # the serving version and the one that replaces it
RETRY_AFTER_S = 10  # a failed load is tried again by a request this long after it began
RACY_S = 2  # a config file modified this recently is read again on every request


@dataclass
class Loading:
    """One service being loaded (or loaded, or failed) for one config content and index version."""

    key: str
    started: float = field(default_factory=time.monotonic)
    service: SearchService | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def waited_s(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class Answer:
    """What a page gets: a service to use, or why not yet (loading) or not at all (error)."""

    service: SearchService | None = None
    key: str = ""
    loading: Loading | None = None
    error: str | None = None

    @property
    def readiness(self) -> Readiness:
        """What a readiness probe reports for this answer (`/api/ready` in front_end.py)."""
        if self.error:
            return Readiness("error", self.error)
        if self.service is None:
            waited = f" ({self.loading.waited_s:.1f} s so far)" if self.loading else ""
            return Readiness("loading", f"loading the model and the index{waited}")
        if self.loading is not None:
            return Readiness("ready", "serving; a rebuilt index or edited config is loading")
        return Readiness("ready", f"serving {self.service.size:,} items")


@dataclass(frozen=True)
class Readiness:
    """Whether searches can be answered now: status is "ready", "loading" or "error"."""

    status: str
    detail: str

    @property
    def ready(self) -> bool:
        return self.status == "ready"


def read_config(path: Path) -> tuple[AppConfig, str]:
    """The config and its content digest; ConfigError naming the file otherwise."""
    if not path.is_file():
        raise ConfigError(f"--config: file not found: {path}")
    try:
        digest = file_sha256(path)
    except OSError as error:
        raise ConfigError(f"--config: cannot read {path}: {error.strerror or error}") from None
    return load_config(path), digest


def load_message(error: Exception) -> str:
    """What the page says when the service cannot be loaded."""
    if isinstance(error, ConfigError | CheckpointError | IndexStoreError):
        return str(error)
    return (f"The search index could not be loaded ({type(error).__name__}: {error}). "
            "See the server log for details.")


class ServiceLoader:
    """Loads services in background threads; every method is thread-safe and returns at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loads: dict[str, Loading] = {}
        self._serving: dict[str, str] = {}  # config path -> key of its newest ready service
        self._configs: dict[str, tuple[tuple, tuple[AppConfig, str]]] = {}  # path -> (stat, read)

    def request(self, path: Path) -> Answer:
        """The service for this config file's content and current index version.

        The first request for a version starts loading it; while it loads, the newest ready
        version of the same config keeps serving (a rebuild never blanks the app)."""
        try:
            config, digest = self._read_config(path)
            version = index_version(config)
        except Exception as error:  # a config problem is a message, never a traceback
            log.warning("config %s: %s", path, error)
            return Answer(error=load_message(error))
        key = f"{path}|{digest}|{version}"
        with self._lock:
            loading = self._loads.get(key)
            if loading is None or (loading.error and loading.waited_s > RETRY_AFTER_S):
                loading = self._start(key, config, str(path))
            if loading.service is not None:
                return Answer(service=loading.service, key=key)
            fallback = self._loads.get(self._serving.get(str(path), ""))
        if loading.done.is_set():  # failed
            return Answer(key=key, error=loading.error)
        if fallback is not None and fallback.service is not None:
            return Answer(service=fallback.service, key=fallback.key, loading=loading)
        return Answer(key=key, loading=loading)

    def _read_config(self, path: Path) -> tuple[AppConfig, str]:
        """read_config, parsed again only when the file changed (size, mtime, inode); a file
        changed in the last RACY_S seconds is always read (its mtime may not have moved yet)."""
        try:
            stat = path.stat()
        except OSError:
            return read_config(path)  # says what is wrong with the path
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with self._lock:
            known = self._configs.get(str(path))
        if known is not None and known[0] == signature:
            return known[1]
        read = read_config(path)
        if time.time_ns() - stat.st_mtime_ns > RACY_S * 1e9:
            with self._lock:
                self._configs[str(path)] = (signature, read)
        return read

    def wait(self, path: Path, timeout_s: float = 120) -> Answer:
        """Like request, but for the config's current version to finish loading (tests, scripts)."""
        answer = self.request(path)
        if answer.loading is not None:
            answer.loading.done.wait(timeout_s)
            answer = self.request(path)
        return answer

    def _start(self, key: str, config: AppConfig, path: str) -> Loading:
        loading = Loading(key)
        self._loads[key] = loading
        thread = threading.Thread(target=self._load, args=(loading, config, path),
                                  name="load-service", daemon=True)
        thread.start()
        return loading

    def _load(self, loading: Loading, config: AppConfig, path: str) -> None:
        log.info("loading the model and the index for %s", path)
        try:
            service = SearchService.load(config)
        except Exception as error:
            if not isinstance(error, ConfigError | CheckpointError | IndexStoreError):
                log.exception("loading the search service failed")
            loading.error = load_message(error)
        else:
            with self._lock:
                loading.service = service
                self._serving[path] = loading.key
                self._forget_old(path)
            log.info("search service ready after %.1f s", loading.waited_s)
        finally:
            loading.done.set()

    def _forget_old(self, path: str) -> None:
        """Drop all but the newest KEEP_SERVICES finished loads of this config."""
        finished = [key for key, load in self._loads.items()
                    if key.startswith(path + "|") and load.done.is_set()]
        for key in finished[:max(0, len(finished) + 1 - KEEP_SERVICES)]:
            if key != self._serving.get(path):
                del self._loads[key]


LOADER = ServiceLoader()
