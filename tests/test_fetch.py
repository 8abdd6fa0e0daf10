"""fetch_image and download_catalog_images against a real local server: pages, limits, SSRF."""

import hashlib
import socket
import time

import pytest
from urllib3.connection import HTTPConnection

import ingest.bulk as bulk
from config.schema import DownloadConfig
from ingest.bulk import download_catalog_images
from ingest.download import normalize_pasted_url, with_scheme
from ingest.guard import (
    AddressPolicy,
    BlockedAddressError,
    guarded_connect,
    is_internal,
    parse_networks,
)
from ingest.links import fetch_image
from ingest.messages import FetchError
from ingest.pages import page_images, product_image_urls
from tests.fixtures_http import sample_images

LOOPBACK = ["127.0.0.0/8"]


def settings(**overrides) -> DownloadConfig:
    values = {"connect_timeout_s": 1.0, "read_timeout_s": 0.5, "total_deadline_s": 3.0,
              "max_bytes": 50_000, "max_redirects": 3, "retries": 0, "concurrency": 4,
              "allow_private_networks": LOOPBACK}
    return DownloadConfig(**{**values, **overrides})


def fetch_error(url: str, config: DownloadConfig | None = None) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetch_image(url, config or settings())
    return caught.value


# ---------------------------------------------------------------- images

@pytest.mark.parametrize(("name", "size"), [
    ("red.jpg", (60, 80)), ("blue.png", (60, 80)), ("wrong-type.png", (60, 80)),
    ("palette.png", (40, 30)), ("rgba.png", (40, 30)), ("cmyk.jpg", (40, 30)),
    ("gray16.png", (30, 20)), ("exif-rotated.jpg", (80, 60)), ("animated.gif", (30, 20)),
])
def test_fetches_every_image_kind_as_rgb(http_server, name, size):
    url = http_server.url(f"/img/{name}")
    fetched = fetch_image(url, settings())
    assert fetched.image.mode == "RGB"
    assert fetched.image.size == size
    assert fetched.source_url == fetched.image_url == url
    assert fetched.page_url is None
    assert fetched.content == sample_images()[name]
    assert fetched.sha256 == hashlib.sha256(fetched.content).hexdigest()


def test_sends_the_browser_like_user_agent(http_server):
    fetch_image(http_server.url("/img/red.jpg?case=ua"), settings(user_agent="Test-Browser/1.0"))
    assert http_server.headers["/img/red.jpg?case=ua"]["User-Agent"] == "Test-Browser/1.0"


@pytest.mark.parametrize(("path", "code", "text"), [
    ("/404", "http_404", "The server says this page does not exist (HTTP 404). Check the link."),
    ("/403", "http_403", "refused access to this link (HTTP 403 Forbidden)"),
    ("/500", "http_500", "internal problem (HTTP 500 Internal Server Error)"),
    ("/notimage.txt", "not_image", "The link returned a text file, not an image."),
    ("/truncated.jpg", "corrupt_image", "damaged or incomplete (truncated or corrupt image)"),
    ("/img/bomb.png", "too_large", "400,000,000 pixels > limit 40,000,000"),
    ("/img/big.png", "too_large", "49,000,000 pixels > limit 40,000,000"),
    ("/huge", "too_large", "larger than the 50 KB limit (the server says 200 KB)"),
    ("/huge/nolength", "too_large", "larger than the 50 KB limit and the download was stopped"),
    ("/redirect/4", "too_many_redirects", "redirected more than 3 times"),
    ("/page/none", "no_product_image", "This page has no product image we can find"),
    ("/page/og-to-page", "not_image",
     "The product image link on the page returned a web page, not an image."),
])
def test_failures_have_a_code_and_a_message(http_server, path, code, text):
    error = fetch_error(http_server.url(path), settings(max_pixels=40_000_000))
    assert error.code == code
    assert text in str(error)


def test_read_timeout(http_server):
    started = time.monotonic()
    error = fetch_error(http_server.url("/slow?s=2"))
    assert error.code == "timeout"
    assert "did not answer within 0.5 s" in str(error)
    assert time.monotonic() - started < 1.5


def test_total_deadline_while_streaming(http_server):
    """A byte every 0.2 s never trips the 0.5 s read timeout; the 1 s total deadline stops it."""
    started = time.monotonic()
    error = fetch_error(http_server.url("/drip?n=40&every=0.2"), settings(total_deadline_s=1.0))
    assert error.code == "timeout"
    assert "took longer than 1 s in total" in str(error)
    assert time.monotonic() - started < 1.6


def test_connection_refused():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = fetch_error(f"http://127.0.0.1:{port}/x.jpg")
    assert error.code == "connection"
    assert "connection refused" in str(error)


def test_dns_failure_and_slow_dns(monkeypatch):
    def no_such_host(*_args, **_kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    error = fetch_error("https://shop.invalid/dress.jpg")
    assert error.code == "dns"
    assert "shop.invalid could not be found" in str(error)

    monkeypatch.setattr(socket, "getaddrinfo", lambda *_a, **_k: time.sleep(1.5))
    started = time.monotonic()
    error = fetch_error("https://slow-dns.example/dress.jpg", settings(connect_timeout_s=0.3))
    assert error.code == "timeout"
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(("url", "code", "text"), [
    ("ftp://example.com/x.jpg", "bad_scheme", "starts with 'ftp:'"),
    ("file:///etc/passwd", "bad_scheme", "Only http:// and https:// links can be used"),
    ("javascript:alert(1)", "bad_scheme", "starts with 'javascript:'"),
    ("", "bad_url", "No link given"),
    ("http:///x.jpg", "bad_url", "has no web address"),
    ("http://shop.example:99999/x.jpg", "bad_url", "does not look like a web link"),
])
def test_only_http_and_https_links(url, code, text):
    error = fetch_error(url)
    assert (error.code, text in str(error)) == (code, True)


def test_normalizes_pasted_links():
    assert normalize_pasted_url("  www.shop.com/p/1  ") == "https://www.shop.com/p/1"
    assert normalize_pasted_url("//cdn.shop.com/a.jpg") == "https://cdn.shop.com/a.jpg"
    assert normalize_pasted_url("http://x.com/a") == "http://x.com/a"
    assert normalize_pasted_url("localhost:8080/a") == "http://localhost:8080/a"


def test_missing_scheme_is_added_with_a_note(http_server):
    assert with_scheme("shop.example/p/1.jpg") == (
        "https://shop.example/p/1.jpg",
        "The link had no http:// or https://, so https:// was added.")
    assert with_scheme(" https://shop.example/p/1.jpg ") == ("https://shop.example/p/1.jpg", "")
    assert with_scheme("not a link") == ("not a link", "")
    bare = http_server.url("/img/red.jpg?case=bare").removeprefix("http://")
    link, note = with_scheme(bare)
    assert link == f"http://{bare}" and "http:// was added" in note
    assert fetch_image(bare, settings()).image.size == (60, 80)


def test_page_images_skip_logos_and_icons_and_rank_by_declared_size():
    html = """<img src="/logo.png" width="800" height="300"><img src="/a.jpg">
    <img src="/b.jpg" width="300px" height="400"><img src="/c.jpg" width="600" height="800">
    <img src="/sprite.png"><img src="/d.jpg" alt="Payment icon" width="200" height="200">
    <img src="data:image/gif;base64,R0lGOD" data-src="/e.jpg"><img src="/f.svg">
    <img src="/pixel.gif" width="1" height="1"><img src="/g.jpg" width="20" height="20">"""
    images = page_images(html, "https://shop.example/p/1")
    assert [image.url.rsplit("/", 1)[-1] for image in images] == ["c.jpg", "b.jpg", "a.jpg",
                                                                    "e.jpg"]
    assert images[1].declared_area == 300 * 400


# ---------------------------------------------------------------- SSRF guard

def test_loopback_is_blocked_by_default_before_any_request(http_server):
    path = "/img/red.jpg?case=blocked"
    error = fetch_error(http_server.url(path), DownloadConfig(allow_private_networks=[]))
    assert error.code == "blocked_address"
    assert ("points to a private or internal network address (127.0.0.1), which is not allowed"
            in str(error))
    assert 'list it under download.allow_private_networks in the config (e.g. ["127.0.0.0/24"])' \
        in str(error)
    assert http_server.hits[path] == 0
    assert fetch_image(http_server.url(path), settings()).image.size == (60, 80)


@pytest.mark.parametrize(("url", "address"), [
    ("https://127.0.0.1:1/x.jpg", "127.0.0.1"), ("http://2130706433/x.jpg", "127.0.0.1"),
    ("http://0x7f.1/x.jpg", "127.0.0.1"), ("http://[::ffff:127.0.0.1]/x.jpg", "::ffff:127.0.0.1"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
])
def test_disguised_internal_addresses_are_blocked(url, address):
    error = fetch_error(url, DownloadConfig(allow_private_networks=[]))
    assert error.code == "blocked_address"
    assert f"private or internal network address ({address})" in str(error)


def test_names_are_checked_by_the_address_they_resolve_to(http_server, monkeypatch):
    """A public-looking name that resolves to 127.0.0.1 (DNS rebinding) is refused; connecting
    goes to the checked IP while the request keeps the original Host header."""
    real = socket.getaddrinfo

    def resolve(host, port, *args, **kwargs):
        if host == "shop.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    url = f"http://shop.example:{http_server.port}/img/red.jpg?case=rebind"
    error = fetch_error(url, DownloadConfig(allow_private_networks=[]))
    assert error.code == "blocked_address"
    assert "shop.example points to a private or internal network address (127.0.0.1)" in str(
        error)
    assert fetch_image(url, settings()).image.size == (60, 80)
    assert http_server.headers["/img/red.jpg?case=rebind"]["Host"] == (
        f"shop.example:{http_server.port}")


def test_peer_address_is_checked_after_connecting(http_server):
    class AllowsOnlyOnce(AddressPolicy):
        calls = 0

        def allows(self, address: str) -> bool:
            type(self).calls += 1
            return type(self).calls == 1

    conn = HTTPConnection("127.0.0.1", http_server.port, timeout=1)
    with pytest.raises(BlockedAddressError):
        guarded_connect(conn, AllowsOnlyOnce())


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/",
                                    "http://10.0.0.1/x.jpg", "http://[::1]/x.jpg",
                                    "http://0.0.0.0/x.jpg"])
def test_every_redirect_hop_is_checked(http_server, target):
    error = fetch_error(http_server.url(f"/redirect-to?url={target}"))
    assert error.code == "blocked_address"


def test_redirect_to_another_scheme_is_refused(http_server):
    error = fetch_error(http_server.url("/redirect-to?url=ftp://example.com/x.jpg"))
    assert error.code == "bad_scheme"


@pytest.mark.parametrize(("address", "internal"), [
    ("127.0.0.1", True), ("10.1.2.3", True), ("172.16.0.1", True), ("192.168.1.1", True),
    ("169.254.169.254", True), ("0.0.0.0", True), ("224.0.0.1", True), ("100.64.0.1", True),
    ("240.0.0.1", True), ("::1", True), ("fe80::1", True), ("fd00:ec2::254", True),
    ("::ffff:127.0.0.1", True), ("93.184.216.34", False), ("8.8.8.8", False),
    ("2606:4700:4700::1111", False),
])
def test_internal_address_ranges(address, internal):
    import ipaddress

    assert is_internal(ipaddress.ip_address(address)) is internal


def test_allowed_networks():
    policy = AddressPolicy(parse_networks(["10.0.0.0/8", "fd00::/8"]))
    assert policy.allows("10.9.8.7") and policy.allows("fd12::1") and policy.allows("8.8.8.8")
    assert not policy.allows("192.168.0.1") and not policy.allows("127.0.0.1")
    with pytest.raises(ValueError, match="allow_private_networks"):
        parse_networks(["not-a-network"])


# ---------------------------------------------------------------- redirects and pages

def test_follows_redirects_up_to_the_limit(http_server):
    fetched = fetch_image(http_server.url("/redirect/3"), settings())
    assert fetched.image_url == http_server.url("/img/red.jpg")
    assert fetched.source_url == http_server.url("/redirect/3")
    redirected = fetch_image(http_server.url("/redirect-to-image"), settings())
    assert redirected.image_url == http_server.url("/img/red.jpg")


@pytest.mark.parametrize(("page", "image"), [
    ("og", "red.jpg"), ("og-secure", "blue.png"), ("twitter", "blue.png"),
    ("jsonld", "palette.png"), ("jsonld-object", "rgba.png"), ("jsonld-graph", "gray16.png"),
    ("image-src", "animated.gif"), ("relative", "blue.png"), ("base", "red.jpg"),
    ("priority", "red.jpg"), ("fallback", "blue.png"),
    ("img-declared", "product-large.jpg"), ("img-fetched", "product-large.jpg"),
    ("img-limits", "red.jpg"),
])
def test_product_page_resolves_to_its_image(http_server, page, image):
    page_url = http_server.url(f"/page/{page}")
    fetched = fetch_image(page_url, settings())
    assert fetched.image_url == http_server.url(f"/img/{image}")
    assert fetched.page_url == page_url
    assert fetched.source_url == page_url
    assert fetched.image.mode == "RGB"
    assert fetched.content == sample_images()[image]


def test_product_image_urls_priority_and_resolution():
    html = """<html><head><base href="https://cdn.shop.com/media/">
    <link rel="image_src" href="/d.jpg">
    <script type="application/ld+json">{"@type": "Product", "image": {"contentUrl": "c.jpg"}}
    </script><meta name="twitter:image" content="//img.shop.com/b.jpg">
    <meta property="og:image" content="a.jpg?w=800&amp;h=600"><meta property="og:image"
    content="second.jpg"></head></html>"""
    assert product_image_urls(html, "https://www.shop.com/p/1") == [
        "https://cdn.shop.com/media/a.jpg?w=800&h=600", "https://img.shop.com/b.jpg",
        "https://cdn.shop.com/media/c.jpg", "https://cdn.shop.com/d.jpg"]
    assert product_image_urls("<p>nothing</p><meta property='og:image' content='data:x'>",
                              "https://x.com/") == []


# ---------------------------------------------------------------- catalog bulk download

def test_bulk_download_keeps_order_reports_failures_and_caches(http_server, tmp_path):
    urls = [http_server.url("/img/red.jpg?case=bulk"), http_server.url("/404?case=bulk"),
            http_server.url("/img/blue.png?case=bulk"), http_server.url("/page/og?case=bulk"),
            http_server.url("/truncated.jpg?case=bulk"), "ftp://example.com/x.jpg",
            http_server.url("/img/red.jpg?case=bulk")]
    results = download_catalog_images(urls, tmp_path / "cache", settings(), progress=True)
    assert [r.url for r in results] == urls
    assert [r.status for r in results] == ["ok", "failed", "ok", "failed", "failed", "failed",
                                           "ok"]
    assert [r.code for r in results if r.status == "failed"] == [
        "http_404", "not_image", "corrupt_image", "bad_scheme"]
    assert "HTTP 404" in results[1].reason and "a web page, not an image" in results[3].reason
    assert all(r.path is None for r in results if r.status == "failed")
    red = results[0].path
    assert red.name == hashlib.sha256(urls[0].encode()).hexdigest() + ".jpg"
    assert red.read_bytes() == sample_images()["red.jpg"]
    assert results[2].path.suffix == ".png"
    assert http_server.hits["/img/red.jpg?case=bulk"] == 1  # the duplicate row downloads once
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [red.name, results[2].path.name])  # no temporary files left

    again = download_catalog_images(urls, tmp_path / "cache", settings(), progress=False)
    assert [r.status for r in again] == ["cached", "failed", "cached", "failed", "failed",
                                         "failed", "cached"]
    assert again[0].path == red
    assert http_server.hits["/img/red.jpg?case=bulk"] == 1
    assert http_server.hits["/img/blue.png?case=bulk"] == 1


def test_bulk_download_retries_transient_errors_only(http_server, tmp_path, monkeypatch):
    monkeypatch.setattr(bulk, "RETRY_BACKOFF_S", 0.01)

    def download(path: str, retries: int):
        [result] = download_catalog_images([http_server.url(path)], tmp_path,
                                           settings(retries=retries), progress=False)
        return result

    assert download("/flaky/a/2", retries=2).status == "ok"  # 503, 503, then the image
    assert http_server.hits["/flaky/a/2"] == 3
    failed = download("/flaky/b/2", retries=1)
    assert (failed.status, failed.code, http_server.hits["/flaky/b/2"]) == (
        "failed", "http_503", 2)
    assert "internal problem (HTTP 503" in failed.reason
    assert download("/404?case=retry", retries=2).code == "http_404"
    assert http_server.hits["/404?case=retry"] == 1  # 4xx is not retried


def test_bulk_download_blocks_private_addresses_without_raising(http_server, tmp_path):
    url = http_server.url("/img/red.jpg?case=bulk-blocked")
    [result] = download_catalog_images([url], tmp_path, DownloadConfig(), progress=False)
    assert (result.status, result.code, result.path) == ("failed", "blocked_address", None)
    assert http_server.hits["/img/red.jpg?case=bulk-blocked"] == 0
    with pytest.raises(ValueError, match="allow_private_networks"):
        download_catalog_images([url], tmp_path, settings(allow_private_networks=["nope"]))
