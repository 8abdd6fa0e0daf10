"""Crop the query: a box drawn on the query image (streamlit-cropper); the region is searched
and kept in the shareable link (`crop=x,y,w,h`, pixels of the original image)."""

from __future__ import annotations

import streamlit as st

from app.confidence import CROP_OPEN
from app.display import md, thumbnail_bytes
from query_crop import Box, CropError, check_crop, crop_image, default_box, parse_crop
from search import SearchService
from vectorizer.images import ImageError, open_image


def crop_tool(service: SearchService, query: dict, content: bytes, digest: str) -> None:
    """An expander with the box over the query image and the buttons that search with it."""
    try:
        image = open_image(content, service.config.download.max_pixels)
    except ImageError:
        return  # the search below says why the image cannot be used
    current = query.get("crop", "")
    start = shown_box(current, image.size) or default_box(image)
    opened = st.toggle("Crop the photo", key=CROP_OPEN,
                       help="Draw a box around the product and search only that region.")
    if current:
        st.caption(f"Searching the region {md(current)} of the photo.")
    if not opened:  # mounted only when shown: a hidden cropper measures itself 0 px high
        return
    with st.container(border=True):
        st.caption("Drag the box (or its corners) around the product, then search that region. "
                   "The box starts on the product's own bounds when the photo has a plain "
                   "border.")
        from streamlit_cropper import st_cropper  # imported in a session's run: see pages()
        drawn = st_cropper(image, realtime_update=True, box_color="#ff4b4b", return_type="box",
                           default_coords=(start.x, start.x + start.w, start.y,
                                           start.y + start.h),
                           key=f"cropper_{digest[:16]}")
        box = Box(int(drawn["left"]), int(drawn["top"]), int(drawn["width"]),
                  int(drawn["height"]))
        st.caption(f"Box: {md(box.text())} (x, y, width, height in pixels of the "
                   f"{image.width}x{image.height} image)")
        search, whole = st.columns(2)
        search.button("Search this region", key="crop_search", type="primary", width="stretch",
                      icon=":material/crop:", on_click=set_crop, args=(query, box.text()))
        whole.button("Search the whole image", key="crop_reset", width="stretch",
                     disabled=not current, on_click=set_crop, args=(query, ""))


def shown_box(text: str, size: tuple[int, int]) -> Box | None:
    """The link's box to draw, if it fits the image (a bad one is reported by the search)."""
    try:
        return check_crop(parse_crop(text), size) if text else None
    except CropError:
        return None


def set_crop(query: dict, box: str) -> None:
    query.pop("error", None)
    if box:
        query["crop"] = box
        st.query_params["crop"] = box
    else:
        query.pop("crop", None)
        if "crop" in st.query_params:
            del st.query_params["crop"]


@st.cache_data(max_entries=64, show_spinner=False)
def cropped_thumbnail(digest: str, _content: bytes, max_pixels: int, crop: str) -> bytes | None:
    """The searched region's thumbnail (None when the image or the box cannot be used)."""
    try:
        return thumbnail_bytes(crop_image(open_image(_content, max_pixels), parse_crop(crop)))
    except (ImageError, CropError):
        return None
