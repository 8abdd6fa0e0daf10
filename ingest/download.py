"""One URL downloaded within limits: checked links, manual redirects, size and time caps."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
from urllib3.exceptions import (
    DecodeError,
    ProtocolError,
    ReadTimeoutError,
)

from config.schema import DownloadConfig
from ingest.guard import BlockedAddressError
from ingest.messages import ADVICE_UPLOAD, FetchError, http_error, network_error

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
IMAGE_ACCEPT = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"
PAGE_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/*,*/*;q=0.8"
BARE_HOST = re.compile(r"^(?:[\w-]+\.)+[a-z]{2,}(?::\d+)?(?:[/?#]|$)", re.IGNORECASE)
LOCAL_HOST = re.compile(r"^(?:localhost|\d{1,3}(?:\.\d{1,3}){3})(?::\d+)?(?:[/?#]|$)",
                        re.IGNORECASE)


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 1_000_000 else f"{size / 1000:.0f} KB"



def normalize_pasted_url(url: str) -> str:
    """Trim a pasted link; a bare 'www.shop.com/…' gets https://, '//cdn…' gets https:."""
    return with_scheme(url)[0]


def with_scheme(url: str) -> tuple[str, str]:
    """A pasted link with its scheme, and a note saying what was added ('' when nothing was):
    'shop.example/p/1.jpg' → https://…, '//cdn…' → https:, a bare IP address or localhost
    → http:// (as a browser's address bar does)."""
    url = url.strip()
    if url.startswith("//"):
        added = "https:"
    elif "://" in url:
        added = ""
    elif LOCAL_HOST.match(url):
        added = "http://"
    elif BARE_HOST.match(url):
        added = "https://"
    else:
        added = ""
    if not added:
        return url, ""
    scheme = added.rstrip(":/")
    return added + url, f"The link had no http:// or https://, so {scheme}:// was added."


def check_url(url: str) -> str:
    """The URL if it is an absolute http(s) link with a host, else a FetchError."""
    if not url:
        raise FetchError("bad_url", "No link given. Paste the link of a product page or image.")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise FetchError("bad_url", f"This does not look like a web link: {url[:200]!r}. "
                         "Paste the full link, starting with https://.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"starts with '{scheme}:'" if scheme else "has no http:// or https://"
        raise FetchError("bad_scheme", f"Only http:// and https:// links can be used (this link "
                         f"{shown}). Paste the web address of the image or product page.")
    if not parts.hostname:
        raise FetchError("bad_url", f"This link has no web address after {scheme}://. "
                         "Paste the full link.")
    return url


class Deadline:
    """The total time budget of one fetch (redirects and page → image included)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise FetchError("timeout", f"The download took longer than {self.seconds:g} s in "
                             f"total and was stopped. {ADVICE_UPLOAD}")
        return left


@dataclass(frozen=True)
class Body:
    url: str  # after redirects
    content: bytes
    content_type: str


def _request(session: requests.Session, url: str, settings: DownloadConfig,
             deadline: Deadline, accept: str) -> requests.Response:
    left = deadline.remaining()
    timeout = (min(settings.connect_timeout_s, left), min(settings.read_timeout_s, left))
    try:
        return session.get(url, headers={"Accept": accept}, stream=True,
                           allow_redirects=False, timeout=timeout)
    except FetchError:
        raise
    except (requests.RequestException, BlockedAddressError, OSError) as error:
        deadline.remaining()  # a timeout cut short by the total deadline reports the deadline
        raise network_error(error, url, settings) from None


def _set_read_timeout(response: requests.Response, seconds: float) -> None:
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


def _check_declared_size(response: requests.Response, max_bytes: int) -> None:
    declared = response.headers.get("Content-Length", "").strip()
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError("too_large", f"The file is larger than the {_megabytes(max_bytes)} "
                         f"limit (the server says {_megabytes(int(declared))}). "
                         "Use a smaller version of the image.")


def read_body(response: requests.Response, settings: DownloadConfig, deadline: Deadline) -> bytes:
    """Stream the body, abandoning it past max_bytes or the deadline."""
    _check_declared_size(response, settings.max_bytes)
    chunks, size = [], 0
    while True:
        _set_read_timeout(response, min(settings.read_timeout_s, deadline.remaining()))
        try:
            chunk = response.raw.read1(CHUNK_BYTES, decode_content=True)
        except (OSError, ReadTimeoutError, ProtocolError, DecodeError) as error:
            deadline.remaining()
            raise network_error(error, response.url, settings) from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > settings.max_bytes:
            raise FetchError("too_large", f"The file is larger than the "
                             f"{_megabytes(settings.max_bytes)} limit and the download was "
                             "stopped. Use a smaller version of the image.")
        chunks.append(chunk)


def _raise_for_status(response: requests.Response) -> None:
    if not 200 <= response.status_code < 300:
        raise http_error(response.status_code, response.reason or "")


def download(session: requests.Session, url: str, settings: DownloadConfig, deadline: Deadline,
             accept: str = IMAGE_ACCEPT) -> Body:
    """GET `url`, following up to max_redirects redirects by hand (each hop re-checked)."""
    url = check_url(url)
    for _hop in range(settings.max_redirects + 1):
        response = _request(session, url, settings, deadline, accept)
        with response:
            target = session.get_redirect_target(response)
            if not target:
                _raise_for_status(response)
                content = read_body(response, settings, deadline)
                return Body(url, content, response.headers.get("Content-Type", ""))
        url = check_url(urljoin(url, target))
        log.debug("redirected to %s", url)
    raise FetchError("too_many_redirects", f"The link redirected more than "
                     f"{settings.max_redirects} times (maybe a redirect loop). Open it in a "
                     "browser and paste the address it finally shows.")
