"""Product page → product image links (og:image, twitter:image, JSON-LD, image_src, and the
page's largest <img> when it names none)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

log = logging.getLogger(__name__)

META_PRIORITY = ("og:image", "og:image:url", "og:image:secure_url",
                 "twitter:image", "twitter:image:src")
PRODUCT_TYPES = {"Product", "ProductGroup", "ProductModel", "IndividualProduct"}
NOT_PRODUCT_WORDS = ("logo", "icon", "sprite", "avatar", "badge", "banner", "spinner",
                     "placeholder", "pixel", "tracking", "payment", "flag", "social")
MIN_PRODUCT_SIDE = 48  # pixels: smaller declared or fetched <img> are icons, not product shots


@dataclass(frozen=True)
class PageImage:
    """An <img> of a page: absolute link and the size its width/height attributes declare."""

    url: str
    width: int | None = None
    height: int | None = None

    @property
    def declared_area(self) -> int | None:
        return self.width * self.height if self.width and self.height else None


class ProductImageParser(HTMLParser):
    """Collects og:/twitter: meta images, JSON-LD blocks, link rel=image_src and <base href>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.jsonld: list[str] = []
        self.image_src: list[str] = []
        self.base: str | None = None
        self.imgs: list[dict[str, str]] = []
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
        elif tag == "img":
            self.imgs.append(values)
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


def _parse(html: str) -> ProductImageParser:
    parser = ProductImageParser()
    parser.feed(html)
    parser.close()
    return parser


def _absolute(parser: ProductImageParser, page_url: str, value: str) -> str | None:
    base = urljoin(page_url, parser.base) if parser.base else page_url
    url = urljoin(base, value.strip())
    return url if urlsplit(url).scheme in ("http", "https") else None


def product_image_urls(html: str, page_url: str) -> list[str]:
    """Absolute http(s) product-image links of a page, best first: og:image,
    og:image:secure_url, twitter:image, JSON-LD Product.image, link rel=image_src."""
    parser = _parse(html)
    found = [parser.meta[key] for key in META_PRIORITY if key in parser.meta]
    found += jsonld_images(parser.jsonld) + parser.image_src
    urls: list[str] = []
    for value in found:
        url = _absolute(parser, page_url, value)
        if url and url not in urls:
            urls.append(url)
    return urls


def _pixels(value: str | None) -> int | None:
    match = re.fullmatch(r"\s*(\d{1,5})(?:\.\d*)?\s*(?:px)?\s*", value or "")
    return int(match.group(1)) if match else None


def _looks_like_decoration(attrs: dict[str, str], url: str) -> bool:
    """Logos, icons, sprites, badges…: by the link's path, alt text, class or id."""
    text = " ".join([urlsplit(url).path, attrs.get("alt", ""), attrs.get("class", ""),
                     attrs.get("id", "")]).lower()
    return urlsplit(url).path.lower().endswith(".svg") or any(
        word in text for word in NOT_PRODUCT_WORDS)


def page_images(html: str, page_url: str) -> list[PageImage]:
    """The page's <img> that may show the product, best first: those declaring a size
    (width and height attributes) by area, largest first, then the others in page order.
    Logos, icons, SVGs, data: links and images declared smaller than MIN_PRODUCT_SIDE are left
    out."""
    parser = _parse(html)
    images: list[PageImage] = []
    for attrs in parser.imgs:
        source = attrs.get("src", "")
        if not source or source.startswith("data:"):
            source = attrs.get("data-src", "")
        url = _absolute(parser, page_url, source) if source else None
        if not url or url in {image.url for image in images}:
            continue
        image = PageImage(url, _pixels(attrs.get("width")), _pixels(attrs.get("height")))
        declared = [side for side in (image.width, image.height) if side is not None]
        if _looks_like_decoration(attrs, url) or (declared and min(declared) < MIN_PRODUCT_SIDE):
            continue
        images.append(image)
    return sorted(images, key=lambda image: -(image.declared_area or 0))


def decode_html(content: bytes, content_type: str) -> str:
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type, re.IGNORECASE)
    try:
        return content.decode(match.group(1) if match else "utf-8", errors="replace")
    except LookupError:
        return content.decode("utf-8", errors="replace")
