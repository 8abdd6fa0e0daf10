"""Heavy objects and results cached across reruns and sessions (st.cache_resource / cache_data)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app.display import thumbnail_bytes
from config import AppConfig, load_config
from query_crop import parse_crop
from search import SearchResponse, SearchService
from vectorizer.images import ImageError, open_image

MAP_MAX_POINTS = 5000


@st.cache_resource(max_entries=4, show_spinner=False)
def cached_config(path: str, digest: str) -> AppConfig:
    return load_config(path)


@st.cache_resource(max_entries=2, show_spinner="Loading the model and the index…")
def cached_service(path: str, digest: str, version: str | None) -> SearchService:
    """One service per config content and index version, shared by every session."""
    return SearchService.load(cached_config(path, digest))


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
def filter_options(_service: SearchService, service_key: str) -> dict[str, list[str]]:
    items = _service.items
    return {column: sorted(items[column].dropna().astype(str).unique())
            for column in _service.config.ui.filter_fields if column in items}


@st.cache_data(max_entries=4, show_spinner=False)
def map_frame(_service: SearchService, service_key: str) -> pd.DataFrame:
    """Items with their 2-D map coordinates (a deterministic sample for large catalogs)."""
    items = _service.items.drop(columns=["map_x", "map_y"], errors="ignore")
    frame = items.merge(_service.store.map[["id", "map_x", "map_y"]], on="id", how="inner")
    if len(frame) > MAP_MAX_POINTS:
        frame = frame.sample(MAP_MAX_POINTS, random_state=0).sort_index()
    return frame.reset_index(drop=True)


def item_thumbnail(service: SearchService, image_file: object) -> bytes | None:
    path = Path(str(image_file or ""))
    try:
        modified = path.stat().st_mtime_ns
    except OSError:
        return None
    return file_thumbnail(str(path), modified, service.config.download.max_pixels)
