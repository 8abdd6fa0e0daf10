"""FetchError and the messages a merchandiser reads: what happened and what to do."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import SSLError as Urllib3SSLError

from config.schema import DownloadConfig
from ingest.guard import BlockedAddressError
from vectorizer.images import ImageError, sniff_text_kind

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
                      f"({address}), which is not allowed. Use a public link, or, for a trusted "
                      "internal network, list it under download.allow_private_networks in the "
                      f"config (e.g. [\"{example_network(address)}\"]).")


def example_network(address: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) network of an address, as a config example."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return "10.0.0.0/8"
    ip = getattr(ip, "ipv4_mapped", None) or ip
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


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
