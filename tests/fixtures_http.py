"""Session fixture `http_server`: a real local HTTP server of generated images, pages, failures."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image, features

Color = str | tuple[int, ...]


def make_test_image(color: Color, size: tuple[int, int] = (60, 80), fmt: str = "JPEG") -> bytes:
    """Encoded bytes of a solid image (size is width, height)."""
    mode = "RGBA" if fmt.upper() in ("PNG", "WEBP") and isinstance(color, tuple) and len(
        color) == 4 else "RGB"
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, fmt)
    return buffer.getvalue()


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _halves(mode: str, size: tuple[int, int], left: Color, right: Color) -> Image.Image:
    image = Image.new(mode, size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (1-bit grey) with almost no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def _palette_png() -> bytes:
    image = Image.new("P", (40, 30), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    image.paste(1, (20, 0, 40, 30))
    return _encode(image, "PNG", transparency=0)  # left half transparent, right half red


def _exif_rotated_jpeg() -> bytes:
    """Stored 60 wide x 80 high, top half red, bottom half blue, EXIF orientation 6 (90° CW)."""
    image = Image.new("RGB", (60, 80), "red")
    image.paste((0, 0, 255), (0, 40, 60, 80))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(image, "JPEG", exif=exif.tobytes(), quality=95)


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (30, 20), color) for color in ("red", "blue")]
    return _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _noisy_jpeg() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    return _encode(Image.fromarray(pixels), "JPEG", quality=90)


@functools.cache
def sample_images() -> dict[str, bytes]:
    """Every image kind the pipeline must handle, by file name (content, not the name, decides)."""
    samples = {
        "red.jpg": make_test_image("red"),
        "blue.png": make_test_image("blue", fmt="PNG"),
        "wrong-type.png": make_test_image((0, 128, 0), fmt="PNG"),
        "palette.png": _palette_png(),
        "rgba.png": _encode(_halves("RGBA", (40, 30), (0, 0, 0, 0), (0, 0, 255, 255)), "PNG"),
        "la.png": _encode(_halves("LA", (40, 30), (0, 0), (0, 255)), "PNG"),
        "cmyk.jpg": _encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG", quality=95),
        "gray16.png": _encode(Image.fromarray(np.full((20, 30), 32768, dtype=np.uint16)), "PNG"),
        "gray.png": _encode(Image.new("L", (30, 20), 128), "PNG"),
        "bw.png": _encode(_halves("1", (30, 20), 0, 1), "PNG"),
        "exif-rotated.jpg": _exif_rotated_jpeg(),
        "animated.gif": _animated("GIF"),
        "bomb.png": png_header_only(20_000, 20_000),
        "big.png": png_header_only(7_000, 7_000),
        "noisy.jpg": _noisy_jpeg(),
        "product-large.jpg": make_test_image("green", (300, 400)),
        "thumb.png": make_test_image("blue", (30, 30), fmt="PNG"),
    }
    if features.check("webp"):
        samples["animated.webp"] = _animated("WEBP")
    samples["truncated.jpg"] = samples["noisy.jpg"][: len(samples["noisy.jpg"]) // 2]
    return samples


CONTENT_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".gif": "image/gif",
                 ".webp": "image/webp"}


def _page(head: str, body: str = "") -> bytes:
    return (f"<!DOCTYPE html>\n<html><head><title>Product</title>{head}</head>"
            f"<body><h1>Product</h1><img src=\"/img/logo.png\">{body}</body></html>").encode()


def _jsonld(document: object) -> str:
    return f'<script type="application/ld+json">{json.dumps(document)}</script>'


def product_pages(base: str) -> dict[str, bytes]:
    """HTML pages naming their product image in each supported way (base is http://host:port)."""
    og = '<meta property="og:image" content="{}">'
    return {
        "og": _page(og.format(f"{base}/img/red.jpg")),
        "og-secure": _page(f'<meta property="og:image:secure_url" content="{base}/img/blue.png">'),
        "twitter": _page(f'<meta name="twitter:image" content="{base}/img/blue.png">'),
        "jsonld": _page(_jsonld({"@context": "https://schema.org", "@type": "Product",
                                 "name": "Dress", "image": [f"{base}/img/palette.png",
                                                            f"{base}/img/red.jpg"]})),
        "jsonld-object": _page("<script type='application/ld+json'>{broken</script>" + _jsonld(
            {"@type": "Product", "image": {"@type": "ImageObject", "url": "/img/rgba.png"}})),
        "jsonld-graph": _page(_jsonld({"@context": "https://schema.org", "@graph": [
            {"@type": "WebPage", "name": "Shop"},
            {"@type": ["Product"], "image": f"{base}/img/gray16.png"}]})),
        "image-src": _page(f'<link rel="image_src" href="{base}/img/animated.gif">'),
        "relative": _page(og.format("../img/blue.png")),
        "base": _page('<base href="/img/">' + og.format("red.jpg")),
        "priority": _page(f'<link rel="image_src" href="{base}/img/animated.gif">'
                          + _jsonld({"@type": "Product", "image": f"{base}/img/palette.png"})
                          + f'<meta name="twitter:image" content="{base}/img/blue.png">'
                          + og.format(f"{base}/img/red.jpg")),
        "fallback": _page(og.format(f"{base}/404")
                          + f'<meta name="twitter:image" content="{base}/img/blue.png">'),
        "og-to-page": _page(og.format(f"{base}/page/og")),
        "none": _page("", '<img src="/img/cart-icon.png"><img src="/img/red.jpg" width="16" '
                      'height="16"><p>No product image metadata.</p>'),
        "img-declared": _page("", '<img src="/img/red.jpg" alt="Shop logo" width="600" '
                              'height="200"><img src="/img/red.jpg" width="60" height="80">'
                              '<img src="/img/product-large.jpg" width="300" height="400">'
                              '<img src="/img/thumb.png">'),
        "img-fetched": _page("", '<img class="site-icon" src="/img/noisy.jpg">'
                             '<img src="/img/thumb.png"><img src="/img/red.jpg">'
                             '<img src="/img/product-large.jpg"><img src="/img/blue.png">'),
        "img-limits": _page("", f'<img src="{base}/huge?n=200000" width="900" height="1200">'
                            '<img src="/img/red.jpg" width="60" height="80">'),
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def send_body(self, status: int, body: bytes, content_type: str,
                  headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str, status: int = 302) -> None:
        self.send_body(status, b"", "text/plain", {"Location": location})

    def do_GET(self) -> None:
        hits = self.server.owner.record(self.path, dict(self.headers.items()))
        parts = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        for prefix, route in self.routes().items():
            if parts.path == prefix or (prefix.endswith("/") and parts.path.startswith(prefix)):
                return route(parts.path.removeprefix(prefix), query, hits)
        return self.send_body(404, b"<html><body>Not found</body></html>", "text/html")

    def routes(self) -> dict[str, Callable[[str, dict[str, str], int], None]]:
        return {"/img/": self.image, "/truncated.jpg": self.truncated, "/notimage.txt": self.text,
                "/404": self.status(404), "/403": self.status(403), "/500": self.status(500),
                "/slow": self.slow, "/drip": self.drip, "/huge": self.huge,
                "/huge/nolength": self.huge_without_length, "/redirect/": self.redirect_chain,
                "/redirect-to-image": lambda *_: self.redirect("/img/red.jpg"),
                "/redirect-to": lambda _rest, query, _hits: self.redirect(query["url"]),
                "/page/": self.page, "/flaky/": self.flaky}

    def image(self, name: str, query: dict[str, str], hits: int) -> None:
        content = sample_images().get(name)
        if content is None:
            return self.send_body(404, b"no such image", "text/plain")
        suffix = name[name.rfind("."):]
        content_type = "text/html" if name == "wrong-type.png" else CONTENT_TYPES[suffix]
        return self.send_body(200, content, content_type)

    def truncated(self, *_: object) -> None:
        self.send_body(200, sample_images()["truncated.jpg"], "image/jpeg")

    def text(self, *_: object) -> None:
        self.send_body(200, b"hello, this is not an image\n", "text/plain")

    def status(self, code: int) -> Callable[..., None]:
        return lambda *_: self.send_body(code, f"<html><body>Error {code}</body></html>".encode(),
                                         "text/html")

    def slow(self, _rest: str, query: dict[str, str], _hits: int) -> None:
        with self.server.owner.in_flight():
            time.sleep(float(query.get("s", "2")))
        self.send_body(200, sample_images()["red.jpg"], "image/jpeg")

    def drip(self, _rest: str, query: dict[str, str], _hits: int) -> None:
        """Content-Length n, then one byte every `every` s: no single read ever times out."""
        count, every = int(query.get("n", "40")), float(query.get("every", "0.2"))
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(count))
        self.end_headers()
        for _ in range(count):
            self.wfile.write(b"\x00")
            self.wfile.flush()
            time.sleep(every)

    def huge(self, _rest: str, query: dict[str, str], _hits: int) -> None:
        size = int(query.get("n", "200000"))
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.stream_zeros(size)

    def huge_without_length(self, _rest: str, query: dict[str, str], _hits: int) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Connection", "close")
        self.end_headers()
        self.stream_zeros(int(query.get("n", "200000")))

    def stream_zeros(self, size: int) -> None:
        self.wfile.write(b"\xff\xd8\xff\xe0")
        for start in range(4, size, 8192):
            self.wfile.write(b"\x00" * min(8192, size - start))

    def redirect_chain(self, rest: str, *_: object) -> None:
        remaining = int(rest)
        self.redirect(f"/redirect/{remaining - 1}" if remaining > 1 else "/img/red.jpg")

    def page(self, kind: str, *_: object) -> None:
        host, port = self.server.server_address[:2]
        pages = product_pages(f"http://{host}:{port}")
        if kind not in pages:
            return self.send_body(404, b"no such page", "text/plain")
        return self.send_body(200, pages[kind], "text/html; charset=utf-8")

    def flaky(self, rest: str, _query: dict[str, str], hits: int) -> None:
        """/flaky/<key>/<n>: 503 for the first n requests of this exact path, then an image."""
        failures = int(rest.rsplit("/", 1)[-1])
        if hits <= failures:
            return self.send_body(503, b"busy, try later", "text/plain")
        return self.send_body(200, sample_images()["red.jpg"], "image/jpeg")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: LocalHTTPServer

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that time out or abandon a body close their socket; that is expected


class LocalHTTPServer:
    """The running server: `.url(path)`, `.hits[path]` (path with query), `.headers[path]`,
    `.peak_slow` (the most /slow requests that were ever answered at once)."""

    def __init__(self) -> None:
        self.peak_slow = self._slow_now = 0
        self.hits: Counter[str] = Counter()
        self.headers: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="test-http",
                                        daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def record(self, path: str, headers: dict[str, str]) -> int:
        with self._lock:
            self.hits[path] += 1
            self.headers[path] = headers
            return self.hits[path]

    @contextlib.contextmanager
    def in_flight(self):
        with self._lock:
            self._slow_now += 1
            self.peak_slow = max(self.peak_slow, self._slow_now)
        try:
            yield
        finally:
            with self._lock:
                self._slow_now -= 1

    def start(self) -> LocalHTTPServer:
        sample_images()
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def http_server():
    server = LocalHTTPServer().start()
    yield server
    server.stop()
