"""The pasted-link path: an image or product-page link → a checked RGB image, or FetchError."""

from __future__ import annotations

import logging
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
from ingest.pages import decode_html, product_image_urls
from util.files import sha256_of
from vectorizer.images import ImageError, open_image, sniff_text_kind

log = logging.getLogger(__name__)

MAX_PAGE_CANDIDATES = 3  # product-image links tried per page, in priority order


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
