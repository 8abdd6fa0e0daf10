"""The pasted-link path: an image or product-page link → a checked RGB image, or FetchError."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import requests
from PIL import Image

from config.schema import DownloadConfig
from ingest.download import (
    IMAGE_ACCEPT,
    PAGE_ACCEPT,
    Body,
    Deadline,
    download,
    normalize_pasted_url,
)
from ingest.guard import make_session
from ingest.messages import ADVICE_COPY_IMAGE, FetchError, image_error
from ingest.pages import (
    MIN_PRODUCT_SIDE,
    PageImage,
    decode_html,
    page_images,
    product_image_urls,
)
from util.files import sha256_of
from vectorizer.images import ImageError, open_image, sniff_text_kind

log = logging.getLogger(__name__)

MAX_PAGE_CANDIDATES = 3  # product-image links tried per page, in priority order
MAX_IMG_FETCHES = 4      # <img> without a declared size fetched to compare their sizes
NO_PRODUCT_IMAGE = ("This page has no product image we can find (no og:image, twitter:image, "
                    "JSON-LD, image_src or large <img> that is not a logo or icon). "
                    f"{ADVICE_COPY_IMAGE}")


@dataclass(frozen=True)
class FetchedImage:
    image: Image.Image
    source_url: str
    image_url: str
    content: bytes
    sha256: str
    page_url: str | None = None



def _decode_image(body: Body, settings: DownloadConfig, from_page: bool) -> Image.Image:
    try:
        return open_image(body.content, settings.max_pixels)
    except ImageError as error:
        raise image_error(error, body.content, from_page) from None


def _fetched(source_url: str, body: Body, image: Image.Image, page_url: str | None = None
             ) -> FetchedImage:
    return FetchedImage(image=image, source_url=source_url, image_url=body.url,
                        content=body.content, sha256=sha256_of(body.content), page_url=page_url)


def _try_images(session: requests.Session, urls: list[str], settings: DownloadConfig,
                deadline: Deadline) -> Iterator[tuple[Body, Image.Image] | FetchError]:
    """Download and decode each link in turn: (body, image), or the FetchError; a timeout
    (the shared deadline) ends the walk."""
    for url in urls:
        try:
            body = download(session, url, settings, deadline, IMAGE_ACCEPT)
            yield body, _decode_image(body, settings, from_page=True)
        except FetchError as error:
            log.info("page image %s failed: %s", url, error.code)
            yield error
            if error.code == "timeout":
                return


def _first_image(session: requests.Session, urls: list[str], settings: DownloadConfig,
                 deadline: Deadline) -> tuple[Body, Image.Image]:
    """The first of `urls` that gives an image, else the first error."""
    errors = []
    for outcome in _try_images(session, urls, settings, deadline):
        if not isinstance(outcome, FetchError):
            return outcome
        errors.append(outcome)
    raise errors[0]


def _largest_image(session: requests.Session, images: list[PageImage],
                   settings: DownloadConfig, deadline: Deadline) -> tuple[Body, Image.Image]:
    """The page's <img> fallback: by declared size the first that loads; without declared
    sizes, the largest (in pixels) of the first MAX_IMG_FETCHES, icons left out."""
    declared = [image.url for image in images if image.declared_area]
    if declared:
        return _first_image(session, declared[:MAX_PAGE_CANDIDATES], settings, deadline)
    loaded, errors = [], []
    for outcome in _try_images(session, [i.url for i in images[:MAX_IMG_FETCHES]], settings,
                               deadline):
        if isinstance(outcome, FetchError):
            errors.append(outcome)
        elif min(outcome[1].size) >= MIN_PRODUCT_SIDE:
            loaded.append(outcome)
    if loaded:
        return max(loaded, key=lambda pair: pair[1].size[0] * pair[1].size[1])
    if errors:
        raise errors[0]
    raise FetchError("no_product_image", NO_PRODUCT_IMAGE)


def _image_from_page(session: requests.Session, source_url: str, page: Body,
                     settings: DownloadConfig, deadline: Deadline) -> FetchedImage:
    html = decode_html(page.content, page.content_type)
    candidates = product_image_urls(html, page.url)
    if candidates:
        body, image = _first_image(session, candidates[:MAX_PAGE_CANDIDATES], settings, deadline)
    else:
        images = page_images(html, page.url)
        if not images:
            raise FetchError("no_product_image", NO_PRODUCT_IMAGE)
        log.info("%s names no product image; trying its largest <img>", page.url)
        body, image = _largest_image(session, images, settings, deadline)
    return _fetched(source_url, body, image, page_url=page.url)


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
