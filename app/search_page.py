"""The Search page: paste a link, upload a photo or pick an example; results with filters."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.cache import (
    content_thumbnail,
    fetch_url,
    gallery_examples,
    item_thumbnail,
    search_content,
)
from app.crop import crop_tool, cropped_thumbnail
from app.display import filters_key, md
from app.judging import judge_context
from app.state import current_colour, search_with_item, share_link, submit_upload, submit_url
from app.widgets import (
    Found,
    answer,
    run_item_query,
    show_thumbnail,
    sidebar,
)
from ingest.messages import FetchError
from query_crop import CropError
from search import SearchService
from util.files import sha256_of
from vectorizer.images import ImageError

UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "gif"]
GALLERY_PER_ROW = 6
EXAMPLES_TAB = ":material/photo_library: Pick an example"
INPUT_TABS = [":material/link: Paste a link", ":material/upload: Upload a photo", EXAMPLES_TAB]


def search_page(service: SearchService, service_key: str) -> None:
    sidebar(service, service_key)
    st.title(service.config.ui.title)
    st.caption(f"Find visually similar products among {service.size:,} catalog items: "
               "paste a link, upload a photo or pick an example.")
    query_inputs(service, service_key)
    query = st.session_state.get("query")
    if not query:
        return
    answer(service, lambda k, filters: shareable(run_query(service, service_key, query, k,
                                                           filters), query),
           on_more=search_with_item, prefix="s")


def shareable(found: Found | None, query: dict) -> Found | None:
    """The answer with its link to share (none for an upload: say so where the link would be)."""
    if found is None:
        return None
    return found._replace(share="" if query["kind"] == "upload" else share_link(st.context.url))


def query_inputs(service: SearchService, service_key: str) -> None:
    link, upload, examples = st.tabs(INPUT_TABS, key="input_tab", on_change="rerun")
    with link:
        text, button = st.columns([6, 1], vertical_alignment="bottom")
        text.text_input("Product page or image link", key="url_input", on_change=submit_url,
                        placeholder="https://shop.example.com/product/123",
                        persist_state="session")
        button.button("Search", key="url_search", on_click=submit_url, type="primary",
                      width="stretch")
        if st.session_state.get("url_note"):
            st.caption(f":material/info: {st.session_state['url_note']}")
    with upload:
        st.file_uploader("A product photo (PNG, JPEG, WebP or GIF)", type=UPLOAD_TYPES,
                         key="upload", on_change=submit_upload)
    with examples:  # sent while its tab is open, or (hidden) on a page with no query yet, so
        # that the browser has the image renderer and thumbnails before the first search
        if examples.open or not st.session_state.get("query"):
            gallery(service, service_key)


def gallery(service: SearchService, service_key: str) -> None:
    rows = gallery_examples(service, service_key)
    if not rows:
        st.caption("No examples configured (ui.gallery_size is 0).")
        return
    for start in range(0, len(rows), GALLERY_PER_ROW):
        for cell, row in zip(st.columns(GALLERY_PER_ROW), rows[start:start + GALLERY_PER_ROW],
                             strict=False):
            item = service.items.iloc[row]
            with cell, st.container(border=True):
                show_thumbnail(item_thumbnail(service, item.get("image_file")),
                               f"Example: {item['name']}")
                st.caption(md(item["name"]))
                st.button("Search", key=f"example_{item['id']}", width="stretch",
                          on_click=search_with_item, args=(str(item["id"]),))


def run_query(service: SearchService, service_key: str, query: dict, k: int,
              filters: dict) -> Found | None:
    """Search for the active query; problems are shown as messages and give None."""
    if query.get("error"):
        st.error(query["error"], icon=":material/error:")
        return None
    crop = query.get("crop", "")
    if query["kind"] == "item":
        content, note = item_content(service, query["value"]), ""
        if content is not None:
            crop_tool(service, query, content, sha256_of(content))
        if not crop or content is None:
            found = run_item_query(service, service_key, query["value"], k, filters)
            return found and found._replace(can_crop=content is not None)
    else:
        loaded = query_content(service, query)
        if loaded is None:
            return None
        content, note = loaded
        crop_tool(service, query, content, sha256_of(content))
    digest = sha256_of(content)
    try:
        with st.spinner("Searching…"):
            response = search_content(service, service_key, digest, content, k,
                                      filters_key(filters), colour=current_colour(service),
                                      crop=crop)
    except CropError as error:  # the crop tool above lets the user draw another box
        st.error(f"This crop cannot be searched: {md(error)}.", icon=":material/crop:")
        return None
    except ImageError as error:
        return fail(query, f"This image cannot be used: {error}. "
                    "Use a JPEG, PNG, WebP or GIF photo.")
    max_pixels = service.config.download.max_pixels
    thumbnail = (cropped_thumbnail(digest, content, max_pixels, crop) if crop
                 else content_thumbnail(digest, content, max_pixels))
    judge = judge_context(query["kind"], query["value"], digest=digest, crop=crop,
                          filters=filters, colour=current_colour(service), content=content)
    title, about = {"upload": ("Your photo", f"upload {query['value']}"),
                    "item": ("Part of a catalog photo", f"part of product {query['value']}")
                    }.get(query["kind"], ("Linked image", query["value"]))
    if crop:
        note = f"{note} · searched the region {md(crop)}" if note else \
            f"Searched the region {md(crop)}"
    return Found(response, thumbnail, title, about, False, note, judge=judge, can_crop=True)


def item_content(service: SearchService, item_id: str) -> bytes | None:
    """The catalog image of a product (None when it is gone or unreadable)."""
    try:
        image_file = service.store.item(item_id).get("image_file")
        return Path(str(image_file)).read_bytes()
    except (KeyError, OSError):
        return None


def fail(query: dict, message: str) -> None:
    """Remember the failure (no retry on every rerun) and show it."""
    query["error"] = message
    st.error(message, icon=":material/error:")


def query_content(service: SearchService, query: dict) -> tuple[bytes, str] | None:
    """The query image's bytes and where they came from (a note), or None after a message."""
    if query["kind"] == "upload":
        upload = st.session_state.get("upload")
        if upload is None:
            st.info("Upload the photo again to search with it.")
            return None
        return upload.getvalue(), f"Uploaded file {md(upload.name)}"
    settings = service.config.download.model_dump_json()
    try:
        with st.spinner("Downloading the image…"):
            content, image_url = fetch_url(query["value"], settings, service)
    except FetchError as error:
        return fail(query, str(error))
    if image_url != query["value"]:
        return content, f"Image found at {md(image_url)}"
    return content, ""
