"""Results cached across reruns and sessions (st.cache_data); the service: app/service_loader.py."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app.display import gallery_rows, thumbnail_bytes
from index_store.store import MAP_MAX_POINTS
from query_crop import parse_crop
from search import SearchResponse, SearchService
from vectorizer.images import ImageError, open_image


@st.cache_data(max_entries=32, ttl=3600, show_spinner=False)
def fetch_url(url: str, download_settings: str, _service: SearchService) -> tuple[bytes, str]:
    """Content and resolved image URL of a pasted link (cached per link and download settings)."""
    fetched = _service.fetch_url(url)
    return fetched.content, fetched.image_url


@st.cache_data(max_entries=64, show_spinner=False)
def search_content(_service: SearchService, service_key: str, digest: str, _content: bytes,
                   k: int, filters: tuple, colour: str | None = None,
                   crop: str = "") -> SearchResponse:
    """`crop`: 'x,y,w,h' or ''; CropError when it does not fit the image."""
    image = open_image(_content, _service.config.download.max_pixels)
    return _service.search_image(image, k, {c: list(v) for c, v in filters} or None, colour,
                                 parse_crop(crop) if crop else None)


@st.cache_data(max_entries=64, show_spinner=False)
def search_item(_service: SearchService, service_key: str, item_id: str, k: int,
                filters: tuple, colour: str | None = None) -> SearchResponse:
    return _service.search_item(item_id, k, {c: list(v) for c, v in filters} or None, colour)


@st.cache_data(max_entries=256, show_spinner=False)
def content_thumbnail(digest: str, _content: bytes, max_pixels: int) -> bytes | None:
    try:
        return thumbnail_bytes(open_image(_content, max_pixels))
    except ImageError:
        return None


@st.cache_data(max_entries=3000, show_spinner=False)
def file_thumbnail(path: str, modified_ns: int, max_pixels: int) -> bytes | None:
    try:
        return thumbnail_bytes(open_image(Path(path), max_pixels))
    except ImageError:
        return None


@st.cache_data(max_entries=4, show_spinner=False)
def gallery_examples(_service: SearchService, service_key: str) -> list[int]:
    """The example gallery's item rows, chosen once per loaded service (it sorts the catalog)."""
    config = _service.config
    column = config.task_columns[0] if config.task_columns else None
    return gallery_rows(_service.items, config.ui.gallery_size, column, config.ui.gallery_seed,
                        config.ui.gallery_classes)


@st.cache_data(max_entries=4, show_spinner=False)
def filter_options(_service: SearchService, service_key: str) -> dict[str, list[str]]:
    return _service.store.filter_options(_service.config.ui.filter_fields)


@st.cache_data(max_entries=4, show_spinner=False)
def map_frame(_service: SearchService, service_key: str) -> pd.DataFrame:
    """Items with their 2-D map coordinates (a deterministic sample for large catalogs)."""
    return _service.store.map_sample(MAP_MAX_POINTS)


def warm(service: SearchService, service_key: str) -> None:
    """Fill what the Search page reads on its first run (the gallery, its thumbnails, the
    filter options), so that the first visitor waits no longer than later ones."""
    filter_options(service, service_key)
    for row in gallery_examples(service, service_key):
        item_thumbnail(service, service.items.iloc[row].get("image_file"))


def item_thumbnail(service: SearchService, image_file: object) -> bytes | None:
    path = Path(str(image_file or ""))
    try:
        modified = path.stat().st_mtime_ns
    except OSError:
        return None
    return file_thumbnail(str(path), modified, service.config.download.max_pixels)
