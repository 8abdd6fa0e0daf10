"""Cached, concurrent download of catalog image URLs; each failure is a row with a reason."""

from __future__ import annotations

import logging
import os
import queue
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import requests
from tqdm import tqdm

from config.schema import DownloadConfig
from ingest.download import IMAGE_ACCEPT, Deadline, download
from ingest.guard import AddressPolicy, make_session
from ingest.messages import FetchError, image_error
from util.files import atomic_write_bytes, sha256_of
from vectorizer.images import ImageError, check_image

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = 0.5  # first retry waits about this long, then doubles
EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp",
              "BMP": ".bmp", "TIFF": ".tif", "AVIF": ".avif"}
CACHE_NAME = re.compile(r"^[0-9a-f]{64}\.\w+$")


@dataclass(frozen=True)
class DownloadResult:
    url: str
    path: Path | None
    status: Literal["ok", "cached", "failed"]
    reason: str = ""
    code: str = ""



def cache_key(url: str) -> str:
    return sha256_of(url.encode("utf-8"))


def cached_files(cache_dir: Path) -> dict[str, Path]:
    """sha256(url) → cached file, from one directory listing."""
    with os.scandir(cache_dir) as entries:
        return {entry.name.split(".", 1)[0]: Path(entry.path) for entry in entries
                if CACHE_NAME.match(entry.name) and entry.is_file() and entry.stat().st_size}


def fetch_image_bytes(session: requests.Session, url: str, settings: DownloadConfig
                      ) -> tuple[bytes, str]:
    """Raw bytes of an image URL (no page resolution) and its format, checked to be an image."""
    body = download(session, url, settings, Deadline(settings.total_deadline_s), IMAGE_ACCEPT)
    try:
        return body.content, check_image(body.content, settings.max_pixels)
    except ImageError as error:
        raise image_error(error, body.content, from_page=False) from None


def fetch_with_retries(session: requests.Session, url: str, settings: DownloadConfig
                       ) -> tuple[bytes, str]:
    """Retry timeouts, broken connections, 5xx and 429 with exponential backoff."""
    for attempt in range(settings.retries + 1):
        try:
            return fetch_image_bytes(session, url, settings)
        except FetchError as error:
            if not error.retryable or attempt == settings.retries:
                raise
            delay = RETRY_BACKOFF_S * 2 ** attempt * random.uniform(1.0, 1.25)
            log.debug("retrying %s in %.2f s after %s", url, delay, error.code)
            time.sleep(delay)
    raise AssertionError("unreachable")


def download_one(session: requests.Session, url: str, cache_dir: Path,
                 settings: DownloadConfig) -> DownloadResult:
    """Download one catalog image into the cache; every failure becomes a 'failed' row."""
    try:
        content, fmt = fetch_with_retries(session, url, settings)
        path = cache_dir / f"{cache_key(url)}{EXTENSIONS.get(fmt, '.' + fmt.lower())}"
        atomic_write_bytes(path, content)
    except FetchError as error:
        return DownloadResult(url, None, "failed", str(error), error.code)
    except OSError as error:
        return DownloadResult(url, None, "failed", f"could not write the image cache ({error})",
                              "cache_write")
    except Exception as error:  # never let one row stop a catalog
        log.exception("unexpected failure downloading %s", url)
        return DownloadResult(url, None, "failed", f"unexpected error ({error!r})", "unexpected")
    return DownloadResult(url, path, "ok")


def _download_all(urls: list[str], cache_dir: Path, settings: DownloadConfig, progress: bool
                  ) -> dict[str, DownloadResult]:
    workers = max(1, min(settings.concurrency, len(urls)))
    policy = AddressPolicy.from_settings(settings)
    sessions: queue.SimpleQueue[requests.Session] = queue.SimpleQueue()
    for _ in range(workers):
        sessions.put(make_session(settings, policy))

    def task(url: str) -> DownloadResult:
        session = sessions.get()
        try:
            return download_one(session, url, cache_dir, settings)
        finally:
            sessions.put(session)

    results: dict[str, DownloadResult] = {}
    with (ThreadPoolExecutor(workers, thread_name_prefix="download") as pool,
          tqdm(total=len(urls), desc="download images", unit="img", disable=not progress) as bar):
        futures = {pool.submit(task, url): url for url in urls}
        for future in as_completed(futures):
            results[futures[future]] = result = future.result()
            bar.update(1)
            if result.status == "failed":
                bar.set_postfix_str(f"failed {sum(r.status == 'failed' for r in results.values())}")
    while not sessions.empty():
        sessions.get().close()
    return results


def download_catalog_images(urls: list[str], cache_dir: Path, settings: DownloadConfig,
                            progress: bool = True) -> list[DownloadResult]:
    """Cached, concurrent download of catalog image URLs; one result per URL, in input order.

    Files are named sha256(url) + extension, so a second call downloads nothing."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    AddressPolicy.from_settings(settings)  # a bad CIDR is a config error, raised once, here
    cached = cached_files(cache_dir)
    results: dict[str, DownloadResult] = {}
    for url in dict.fromkeys(urls):
        path = cached.get(cache_key(url))
        if path is not None:
            results[url] = DownloadResult(url, path, "cached")
    todo = [url for url in dict.fromkeys(urls) if url not in results]
    if todo:
        results.update(_download_all(todo, cache_dir, settings, progress))
    failed = [result for result in results.values() if result.status == "failed"]
    log.info("catalog images: %d cached, %d downloaded, %d failed", len(results) - len(todo),
             len(todo) - len(failed), len(failed))
    for result in failed[:5]:
        log.warning("image download failed: %s: %s", result.url, result.reason)
    return [results[url] for url in urls]
