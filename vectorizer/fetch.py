"""Safe download of a pasted link (image or product page) and cached bulk catalog downloads."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import queue
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urljoin, urlsplit

import requests
from PIL import Image
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import SSLError as Urllib3SSLError
from urllib3.util import connection as urllib3_connection

from config.schema import DownloadConfig
from util.files import atomic_write_bytes, sha256_of
from vectorizer.images import ImageError, check_image, open_image, sniff_text_kind

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
RETRY_BACKOFF_S = 0.5  # first retry waits about this long, then doubles
MAX_PAGE_CANDIDATES = 3  # product-image links tried per page, in priority order
IMAGE_ACCEPT = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"
PAGE_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/*,*/*;q=0.8"
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(ip) for ip in (
    "169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254"))
META_PRIORITY = ("og:image", "og:image:url", "og:image:secure_url",
                 "twitter:image", "twitter:image:src")
PRODUCT_TYPES = {"Product", "ProductGroup", "ProductModel", "IndividualProduct"}
EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp",
              "BMP": ".bmp", "TIFF": ".tif", "AVIF": ".avif"}
CACHE_NAME = re.compile(r"^[0-9a-f]{64}\.\w+$")
BARE_HOST = re.compile(r"^(?:[\w-]+\.)+[a-z]{2,}(?::\d+)?(?:[/?#]|$)", re.IGNORECASE)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ADVICE_UPLOAD = "Try again later, or save the image and upload the file instead."
ADVICE_COPY_IMAGE = ("Open the product in a browser, right-click the photo, choose "
                     "'Copy image address' and paste that link instead.")


class FetchError(Exception):
    """A download that did not give an image: str() tells a merchandiser what happened and what
    to do; `code` is a short machine string ("http_404", "timeout", "blocked_address", ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def retryable(self) -> bool:
        """Worth another try later: timeouts, dropped connections, 5xx and 429."""
        if self.code in ("timeout", "connection"):
            return True
        status = self.code.removeprefix("http_")
        return status.isdigit() and (int(status) >= 500 or int(status) == 429)


class BlockedAddressError(Exception):
    """Raised inside the connection: the host resolves to an address that is not allowed."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} resolves to blocked address {address}")
        self.host, self.address = host, address


@dataclass(frozen=True)
class FetchedImage:
    image: Image.Image
    source_url: str
    image_url: str
    content: bytes
    sha256: str
    page_url: str | None = None


@dataclass(frozen=True)
class DownloadResult:
    url: str
    path: Path | None
    status: Literal["ok", "cached", "failed"]
    reason: str = ""
    code: str = ""


# ---------------------------------------------------------------- address policy (SSRF guard)

def is_internal(address: IPAddress) -> bool:
    """Loopback, private, link-local, reserved, multicast, unspecified, metadata or non-global."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return (address in METADATA_ADDRESSES or address.is_loopback or address.is_private
            or address.is_link_local or address.is_reserved or address.is_multicast
            or address.is_unspecified or not address.is_global)


def parse_networks(cidrs: list[str]) -> tuple[IPNetwork, ...]:
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"download.allow_private_networks: {cidr!r} is not a network "
                             "in CIDR notation (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


@dataclass(frozen=True)
class AddressPolicy:
    """Which peer addresses a connection may use: public ones, plus the allowed networks."""

    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: DownloadConfig) -> AddressPolicy:
        return cls(parse_networks(settings.allow_private_networks))

    def allows(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if any(candidate in network for network in self.allowed_networks
               for candidate in (ip, mapped) if candidate is not None
               and candidate.version == network.version):
            return True
        return not is_internal(ip)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _getaddrinfo(host: str, port: int, timeout: float | None) -> list[tuple]:
    """getaddrinfo bounded by `timeout` (the resolver itself cannot be interrupted)."""
    family = urllib3_connection.allowed_gai_family()
    if timeout is None or _is_ip_literal(host):
        return socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    outcome: dict[str, object] = {}

    def resolve() -> None:
        try:
            outcome["infos"] = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        except OSError as error:
            outcome["error"] = error

    worker = threading.Thread(target=resolve, name="dns", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"DNS lookup of {host} took longer than {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["infos"]  # type: ignore[return-value]


def guarded_connect(conn: HTTPConnection, policy: AddressPolicy) -> socket.socket:
    """Resolve once, refuse blocked addresses before any packet is sent, connect to the checked
    IP (the Host header and TLS name stay the original host), and re-check the socket's peer."""
    host, port = conn.host, conn.port
    timeout = conn.timeout if isinstance(conn.timeout, int | float) else None
    try:
        infos = _getaddrinfo(host.strip("[]"), port, timeout)
    except socket.gaierror as error:
        raise NameResolutionError(host, conn, error) from error
    except TimeoutError as error:
        raise ConnectTimeoutError(conn, str(error)) from error
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    allowed = [address for address in addresses if policy.allows(address)]
    if not allowed:
        raise BlockedAddressError(host, addresses[0] if addresses else "?")
    return _connect_first(conn, allowed, policy)


def _connect_first(conn: HTTPConnection, addresses: list[str], policy: AddressPolicy
                   ) -> socket.socket:
    last_error: OSError | None = None
    for address in addresses:
        try:
            sock = urllib3_connection.create_connection(
                (address, conn.port), conn.timeout, source_address=conn.source_address,
                socket_options=conn.socket_options)
        except TimeoutError as error:
            raise ConnectTimeoutError(
                conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
            ) from error
        except OSError as error:
            last_error = error
            continue
        peer = str(sock.getpeername()[0])
        if not policy.allows(peer):
            sock.close()
            raise BlockedAddressError(conn.host, peer)
        return sock
    raise NewConnectionError(conn, f"Failed to establish a new connection: {last_error}"
                             ) from last_error


class _GuardedHTTPConnection(HTTPConnection):
    policy = AddressPolicy()

    def _new_conn(self) -> socket.socket:
        return guarded_connect(self, self.policy)


class _GuardedHTTPSConnection(HTTPSConnection):
    policy = AddressPolicy()

    def _new_conn(self) -> socket.socket:
        return guarded_connect(self, self.policy)


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections go only to addresses the policy allows."""

    __attrs__: ClassVar[list[str]] = [*HTTPAdapter.__attrs__, "policy"]

    def __init__(self, policy: AddressPolicy, pool_maxsize: int = 10) -> None:
        self.policy = policy
        super().__init__(pool_maxsize=pool_maxsize, max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        http = type("GuardedHTTPConnection", (_GuardedHTTPConnection,), {"policy": self.policy})
        https = type("GuardedHTTPSConnection", (_GuardedHTTPSConnection,),
                     {"policy": self.policy})
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }


def make_session(settings: DownloadConfig, policy: AddressPolicy | None = None,
                 pool_maxsize: int = 4) -> requests.Session:
    """A session with the guarded adapter, a browser-like User-Agent and no proxies from env."""
    session = requests.Session()
    session.trust_env = False  # a proxy would hide the real peer address from the guard
    session.headers.update({"User-Agent": settings.user_agent,
                            "Accept-Language": "en-US,en;q=0.9"})
    adapter = GuardedAdapter(policy or AddressPolicy.from_settings(settings), pool_maxsize)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# ---------------------------------------------------------------- messages

def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 1_000_000 else f"{size / 1000:.0f} KB"


def http_error(status: int, reason: str = "") -> FetchError:
    label = f"HTTP {status}{' ' + reason if reason else ''}"
    if status == 404:
        text = "The server says this page does not exist (HTTP 404). Check the link."
    elif status == 410:
        text = "The server says this page was removed (HTTP 410). Use a current product link."
    elif status in (401, 403):
        text = (f"The site refused access to this link ({label}). It may need a login or block "
                f"automatic downloads; save the image and upload the file instead.")
    elif status == 429:
        text = f"The site is limiting how often it can be asked ({label}). Wait a minute and retry."
    elif status >= 500:
        text = f"The site had an internal problem ({label}). {ADVICE_UPLOAD}"
    else:
        text = f"The site answered with an error ({label}). Check the link."
    return FetchError(f"http_{status}", text)


def blocked_error(host: str, address: str) -> FetchError:
    who = "The link" if host.strip("[]") == address else f"The link's server {host}"
    return FetchError("blocked_address", f"{who} points to a private or internal network address "
                      f"({address}), which is not allowed. Use a public link.")


def not_image_error(kind: str | None, from_page: bool) -> FetchError:
    what = {"HTML": "a web page", "SVG": "an SVG drawing (not supported)", "PDF": "a PDF document",
            "JSON": "JSON data", "XML": "an XML document", "text": "a text file"}.get(
        kind or "", "a file that is not an image we can read")
    where = "The product image link on the page" if from_page else "The link"
    return FetchError("not_image", f"{where} returned {what}, not an image. "
                      f"Use a link to the image itself or to a product page.")


def image_error(error: ImageError, content: bytes, from_page: bool) -> FetchError:
    if error.kind == "too_large":
        return FetchError("too_large", f"The picture is too large to use ({error}). "
                          "Use a smaller version of the image.")
    if error.kind == "not_image":
        return not_image_error(sniff_text_kind(content), from_page)
    return FetchError("corrupt_image", f"The image file is damaged or incomplete ({error}). "
                      "Try the link again or use another image.")


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error, its causes/contexts and the `reason`/args of wrapped urllib3 errors."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None),
                  *(arg for arg in current.args if isinstance(arg, BaseException))]
        pending.extend(item for item in nested if isinstance(item, BaseException))


def _find(error: BaseException, kind: type[BaseException],
          unless: type[BaseException] | None = None) -> BaseException | None:
    return next((cause for cause in _causes(error) if isinstance(cause, kind)
                 and not (unless and isinstance(cause, unless))), None)


def network_error(error: BaseException, url: str, settings: DownloadConfig) -> FetchError:
    """Translate a requests/urllib3/socket failure into a FetchError."""
    host = urlsplit(url).hostname or url
    blocked = _find(error, BlockedAddressError)
    if isinstance(blocked, BlockedAddressError):
        return blocked_error(blocked.host, blocked.address)
    if _find(error, NameResolutionError) or _find(error, socket.gaierror):
        return FetchError("dns", f"The web address {host} could not be found (DNS lookup failed). "
                          "Check the link for typos.")
    if _find(error, ConnectionRefusedError):
        return FetchError("connection", f"Could not connect to {host} (connection refused). "
                          "Check the link, or try again later.")
    if _find(error, ConnectTimeoutError, unless=NewConnectionError):
        return FetchError("timeout", f"{host} did not accept a connection within "
                          f"{settings.connect_timeout_s:g} s. {ADVICE_UPLOAD}")
    if (isinstance(error, requests.Timeout) or _find(error, ReadTimeoutError)
            or _find(error, TimeoutError)):
        return FetchError("timeout", f"{host} did not answer within "
                          f"{settings.read_timeout_s:g} s. {ADVICE_UPLOAD}")
    if isinstance(error, requests.exceptions.SSLError) or _find(error, Urllib3SSLError):
        return FetchError("tls", f"The secure connection to {host} failed (certificate or TLS "
                          f"error). Check the link, or save the image and upload the file.")
    if isinstance(error, requests.exceptions.InvalidURL | requests.exceptions.InvalidSchema
                  | requests.exceptions.MissingSchema | requests.exceptions.InvalidHeader):
        return FetchError("bad_url", f"This link cannot be used ({error}). Paste the full link, "
                          "starting with https://.")
    if _find(error, ProtocolError) or isinstance(error, requests.exceptions.ChunkedEncodingError):
        return FetchError("connection", f"The connection to {host} broke off during the "
                          f"download. {ADVICE_UPLOAD}")
    if _find(error, DecodeError):
        return FetchError("bad_response", f"{host} sent data that could not be decoded. "
                          "Try another link.")
    os_error = next((cause for cause in _causes(error)
                     if isinstance(cause, OSError) and cause.strerror), None)
    detail = os_error.strerror.lower() if os_error else type(error).__name__
    return FetchError("connection", f"Could not connect to {host} ({detail}). "
                      "Check the link, or try again later.")


# ---------------------------------------------------------------- URLs

def normalize_pasted_url(url: str) -> str:
    """Trim a pasted link; a bare 'www.shop.com/…' gets https://, '//cdn…' gets https:."""
    url = url.strip()
    if url.startswith("//"):
        return "https:" + url
    if "://" not in url and BARE_HOST.match(url):
        return "https://" + url
    return url


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


# ---------------------------------------------------------------- download with limits

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


# ---------------------------------------------------------------- product pages

class ProductImageParser(HTMLParser):
    """Collects og:/twitter: meta images, JSON-LD blocks, link rel=image_src and <base href>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.jsonld: list[str] = []
        self.image_src: list[str] = []
        self.base: str | None = None
        self._script: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name.lower(): (value or "").strip() for name, value in attrs}
        if tag == "meta":
            key = (values.get("property") or values.get("name") or "").lower()
            if key in META_PRIORITY and values.get("content"):
                self.meta.setdefault(key, values["content"])
        elif tag == "link" and "image_src" in values.get("rel", "").lower().split():
            if values.get("href"):
                self.image_src.append(values["href"])
        elif tag == "base" and self.base is None and values.get("href"):
            self.base = values["href"]
        elif tag == "script" and values.get("type", "").split(";")[0].strip().lower() == (
                "application/ld+json"):
            self._script = []

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._script.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            self.jsonld.append("".join(self._script))
            self._script = None


def _is_product(node: dict) -> bool:
    types = node.get("@type")
    types = types if isinstance(types, list) else [types]
    return any(isinstance(kind, str) and kind.rsplit("/", 1)[-1] in PRODUCT_TYPES
               for kind in types)


def _products(node: object, depth: int = 0) -> Iterator[dict]:
    """Product objects anywhere in a JSON-LD document (top level, lists, @graph, mainEntity)."""
    if depth > 10:
        return
    if isinstance(node, list):
        for item in node:
            yield from _products(item, depth + 1)
    elif isinstance(node, dict):
        if _is_product(node):
            yield node
        for key, value in node.items():
            if key != "image" and isinstance(value, dict | list):
                yield from _products(value, depth + 1)


def _image_values(value: object, depth: int = 0) -> list[str]:
    """Product.image as a string, a list, or an ImageObject (url / contentUrl)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and depth < 3:
        return [url for item in value for url in _image_values(item, depth + 1)]
    if isinstance(value, dict):
        url = value.get("url") or value.get("contentUrl")
        return _image_values(url, depth + 1) if url else []
    return []


def jsonld_images(blocks: list[str]) -> list[str]:
    urls = []
    for block in blocks:
        try:
            document = json.loads(block.strip())
        except ValueError:
            log.debug("skipping unreadable JSON-LD block")
            continue
        for product in _products(document):
            urls.extend(_image_values(product.get("image")))
    return urls


def product_image_urls(html: str, page_url: str) -> list[str]:
    """Absolute http(s) product-image links of a page, best first: og:image,
    og:image:secure_url, twitter:image, JSON-LD Product.image, link rel=image_src."""
    parser = ProductImageParser()
    parser.feed(html)
    parser.close()
    found = [parser.meta[key] for key in META_PRIORITY if key in parser.meta]
    found += jsonld_images(parser.jsonld) + parser.image_src
    base = urljoin(page_url, parser.base) if parser.base else page_url
    urls: list[str] = []
    for value in found:
        url = urljoin(base, value.strip())
        if urlsplit(url).scheme in ("http", "https") and url not in urls:
            urls.append(url)
    return urls


def decode_html(content: bytes, content_type: str) -> str:
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type, re.IGNORECASE)
    try:
        return content.decode(match.group(1) if match else "utf-8", errors="replace")
    except LookupError:
        return content.decode("utf-8", errors="replace")


# ---------------------------------------------------------------- one pasted link

def _decode_image(body: Body, settings: DownloadConfig, from_page: bool) -> Image.Image:
    try:
        return open_image(body.content, settings.max_pixels)
    except ImageError as error:
        raise image_error(error, body.content, from_page) from None


def _fetched(source_url: str, body: Body, image: Image.Image, page_url: str | None = None
             ) -> FetchedImage:
    return FetchedImage(image=image, source_url=source_url, image_url=body.url,
                        content=body.content, sha256=sha256_of(body.content), page_url=page_url)


def _image_from_page(session: requests.Session, source_url: str, page: Body,
                     settings: DownloadConfig, deadline: Deadline) -> FetchedImage:
    candidates = product_image_urls(decode_html(page.content, page.content_type), page.url)
    if not candidates:
        raise FetchError("no_product_image", "This page has no product image we can find (no "
                         f"og:image, twitter:image, JSON-LD or image_src). {ADVICE_COPY_IMAGE}")
    first_error: FetchError | None = None
    for candidate in candidates[:MAX_PAGE_CANDIDATES]:
        try:
            body = download(session, candidate, settings, deadline, IMAGE_ACCEPT)
            image = _decode_image(body, settings, from_page=True)
        except FetchError as error:
            log.info("product image %s of %s failed: %s", candidate, page.url, error.code)
            first_error = first_error or error
            if error.code == "timeout":
                break
            continue
        return _fetched(source_url, body, image, page_url=page.url)
    assert first_error is not None
    raise first_error


def fetch_image(url: str, settings: DownloadConfig) -> FetchedImage:
    """Download a pasted image or product-page link into an RGB image, or raise FetchError."""
    deadline = Deadline(settings.total_deadline_s)
    with make_session(settings) as session:
        body = download(session, normalize_pasted_url(url), settings, deadline, PAGE_ACCEPT)
        if sniff_text_kind(body.content) == "HTML":
            log.info("%s is a page; looking for its product image", body.url)
            return _image_from_page(session, url, body, settings, deadline)
        fetched = _fetched(url, body, _decode_image(body, settings, from_page=False))
    log.info("fetched %s (%d bytes, %dx%d)", fetched.image_url, len(fetched.content),
             *fetched.image.size)
    return fetched


# ---------------------------------------------------------------- catalog bulk download

def cache_key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


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
