"""Streamlit app: search the catalog by link, upload or example; index report; catalog map."""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, NoReturn

import altair as alt
import pandas as pd
import streamlit as st

from config import AppConfig, ConfigError, load_config
from contracts import IndexManifest
from index_store.base import IndexStoreError
from index_store.store import current_version
from ingest.links import fetch_image
from ingest.messages import FetchError
from search import SearchResponse, SearchService
from util.files import file_sha256, sha256_of
from util.urls import is_http_url
from vectorizer.checkpoint import CheckpointError
from vectorizer.images import ImageError, open_image

log = logging.getLogger("front_end")

ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = ROOT / "config" / "config.yml"
CONFIG_ENV = "VSEARCH_CONFIG"  # used when no --config is given (e.g. by tests)
UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "gif"]
RESULTS_PER_ROW = 5
GALLERY_PER_ROW = 6
THUMB_SIDE = 320
MAP_MAX_POINTS = 5000
BAND_COLORS = {"near-duplicate": "green", "similar": "blue", "loosely similar": "gray"}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=])")


class Found(NamedTuple):
    """One answered query, ready to show."""

    response: SearchResponse
    thumbnail: bytes | None
    title: str
    about: str           # what the query was, kept with shortlisted results
    item_query: bool     # searched with a catalog product (the product is shown, not announced)
    note: str = ""       # e.g. where on a product page the image was found (Markdown-escaped)


# ---------------------------------------------------------------- pure helpers


def md(text: object) -> str:
    """Catalog or user text made inert for st.markdown: every Markdown character escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def config_path_from_args(argv: list[str] | None = None) -> Path:
    """--config PATH (after `--` on the streamlit command line), else $VSEARCH_CONFIG, else
    config/config.yml."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--config", default=None)
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    chosen = args.config or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    return Path(chosen).expanduser().resolve()


def file_digest(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(f"--config: file not found: {path}")
    try:
        return file_sha256(path)
    except OSError as error:
        raise ConfigError(f"--config: cannot read {path}: {error.strerror or error}") from None


def filters_key(filters: dict[str, list[str]]) -> tuple:
    """A hashable, order-free form of the filters; columns with no values are dropped."""
    return tuple(sorted((column, tuple(sorted(values))) for column, values in filters.items()
                        if values))


def top_classes(predicted: dict) -> dict[str, str]:
    """The most likely class per task."""
    return {task: str(top[0][0]) for task, top in predicted.items() if top}


def predicted_line(predicted: dict) -> str:
    """e.g. 'Tshirt 92% · Blue 71% · Men 98%' (Markdown-escaped)."""
    return " · ".join(f"{md(top[0][0])} {top[0][1]:.0%}" for top in predicted.values() if top)


def is_missing(value: object) -> bool:
    try:
        return value is None or value == "" or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def label_line(row: dict, label_fields: list[str], top: dict[str, str]) -> str:
    """The item's labels, each marked ✓ where it equals the query's predicted class."""
    parts = []
    for column in label_fields:
        value = row.get(column)
        if is_missing(value):
            continue
        parts.append(md(value) + (" ✓" if top.get(column) == str(value) else ""))
    return " · ".join(parts)


def safe_link(url: object) -> str | None:
    """An http(s) product link, or None (javascript: and other schemes are never linked)."""
    text = "" if is_missing(url) else str(url).strip()
    return text if is_http_url(text) else None


def shortlist_row(item: dict, label_fields: list[str], query: str) -> dict:
    """What the shortlist keeps of one result."""
    row = {"id": str(item.get("id", "")), "name": str(item.get("name", "")),
           "distance": round(float(item.get("distance", 0.0)), 4), "band": item.get("band", "")}
    row.update({column: "" if is_missing(item.get(column)) else str(item.get(column))
                for column in label_fields})
    row["image"] = str(item.get("image_path") or item.get("image_file") or "")
    row["product_url"] = "" if is_missing(item.get("product_url")) else str(item["product_url"])
    row["query"] = query
    return row


def _no_formula(value: object) -> object:
    """Spreadsheets run cells starting with = + - @ as formulas: such text gets a leading '."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_START) else value


def shortlist_csv(rows: list[dict], label_fields: list[str]) -> bytes:
    """The shortlist as UTF-8 CSV: id, name, distance, band, labels, image, product_url, query."""
    columns = ["id", "name", "distance", "band", *label_fields, "image", "product_url", "query"]
    table = pd.DataFrame(rows, columns=columns)
    text_columns = [c for c in columns if c != "distance"]
    table[text_columns] = table[text_columns].map(_no_formula)
    return table.to_csv(index=False).encode("utf-8")


def gallery_rows(items: pd.DataFrame, size: int, column: str | None) -> list[int]:
    """`size` row positions, deterministic and varied: round-robin over `column`'s classes."""
    if size <= 0 or items.empty:
        return []
    table = items.assign(_row=range(len(items))).sort_values("id", kind="stable")
    if column and column in table:
        groups = table[column].astype(str)
        table = table.assign(_rank=table.groupby(groups).cumcount(), _group=groups)
        table = table.sort_values(["_rank", "_group", "id"], kind="stable")
    return table["_row"].head(size).tolist()


def thumbnail_bytes(image) -> bytes:
    """A small JPEG of a PIL image."""
    small = image.copy()
    small.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def picked_id(event: object, name: str = "pick") -> str | None:
    """The product id of a point picked on the map, from st.altair_chart's selection event."""
    selection = getattr(event, "selection", None)
    if selection is None and isinstance(event, dict):
        selection = event.get("selection")
    points = (selection or {}).get(name) or []
    first = points[0] if isinstance(points, list) and points else None
    return str(first["id"]) if isinstance(first, dict) and "id" in first else None


# ---------------------------------------------------------------- cached heavy objects


@st.cache_resource(max_entries=4, show_spinner=False)
def cached_config(path: str, digest: str) -> AppConfig:
    return load_config(path)


@st.cache_resource(max_entries=2, show_spinner="Loading the model and the index…")
def cached_service(path: str, digest: str, version: str | None) -> SearchService:
    """One service per config content and index version, shared by every session."""
    return SearchService.load(cached_config(path, digest))


@st.cache_data(max_entries=32, ttl=3600, show_spinner=False)
def fetch_url(url: str, download_settings: str, _config: AppConfig) -> tuple[bytes, str]:
    """Content and resolved image URL of a pasted link (cached per link and download settings)."""
    fetched = fetch_image(url, _config.download)
    return fetched.content, fetched.image_url


@st.cache_data(max_entries=64, show_spinner=False)
def search_content(_service: SearchService, service_key: str, digest: str, _content: bytes,
                   k: int, filters: tuple) -> SearchResponse:
    image = open_image(_content, _service.config.download.max_pixels)
    return _service.search_image(image, k, {c: list(v) for c, v in filters} or None)


@st.cache_data(max_entries=64, show_spinner=False)
def search_item(_service: SearchService, service_key: str, item_id: str, k: int,
                filters: tuple) -> SearchResponse:
    return _service.search_item(item_id, k, {c: list(v) for c, v in filters} or None)


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


# ---------------------------------------------------------------- app state


def load_service() -> tuple[SearchService, str]:
    """The shared service and its cache key; a config or index problem stops the page."""
    path = config_path_from_args()
    try:
        digest = file_digest(path)
        config = cached_config(str(path), digest)
        st.set_page_config(page_title=config.ui.title, layout="wide",
                           page_icon=":material/image_search:")
        version = current_version(Path(config.paths.ann_index_path))
        service = cached_service(str(path), digest, version)
    except (ConfigError, CheckpointError, IndexStoreError) as error:
        stop_with(str(error))
    except Exception as error:  # never a traceback in front of a merchandiser
        log.exception("loading the search service failed")
        stop_with(f"The search index could not be loaded ({type(error).__name__}: {error}). "
                  "See the server log for details.")
    return service, f"{path}|{digest}|{version}"


def stop_with(message: str) -> NoReturn:
    st.set_page_config(page_title="Visual similarity search", layout="wide")
    st.error(message, icon=":material/error:")
    st.stop()


def init_state() -> None:
    """First run of a session: reopen the search a shared link names (?url= or ?item=)."""
    if st.session_state.get("_started"):
        return
    st.session_state["_started"] = True
    st.session_state.setdefault("shortlist", {})
    params = st.query_params
    if params.get("url"):
        st.session_state["url_input"] = params["url"]
        st.session_state["query"] = {"kind": "url", "value": params["url"]}
    elif params.get("item"):
        st.session_state["query"] = {"kind": "item", "value": params["item"]}


def set_query_params(**params: str) -> None:
    for name in ("url", "item"):
        if params.get(name):
            st.query_params[name] = params[name]
        elif name in st.query_params:
            del st.query_params[name]


def submit_url() -> None:
    url = (st.session_state.get("url_input") or "").strip()
    if url:
        st.session_state["query"] = {"kind": "url", "value": url}
        set_query_params(url=url)
    elif (st.session_state.get("query") or {}).get("kind") == "url":
        st.session_state["query"] = None
        set_query_params()


def submit_upload() -> None:
    upload = st.session_state.get("upload")
    if upload is not None:
        st.session_state["query"] = {"kind": "upload", "value": upload.name}
    elif (st.session_state.get("query") or {}).get("kind") == "upload":
        st.session_state["query"] = None
    set_query_params()


def search_with_item(item_id: str) -> None:
    st.session_state["query"] = {"kind": "item", "value": str(item_id)}
    st.session_state["url_input"] = ""
    set_query_params(item=str(item_id))


def explore_with_item(item_id: str) -> None:
    st.session_state["explore_item"] = str(item_id)


def toggle_shortlist(row: dict) -> None:
    shortlist = st.session_state.setdefault("shortlist", {})
    if row["id"] in shortlist:
        del shortlist[row["id"]]
    else:
        shortlist[row["id"]] = row


def current_controls(service: SearchService) -> tuple[int, dict[str, list[str]]]:
    config = service.config
    k = int(st.session_state.get("k") or min(config.ann_index.k, config.ui.max_k))
    filters = {column: list(st.session_state.get(f"filter_{column}") or [])
               for column in config.ui.filter_fields}
    return k, {column: values for column, values in filters.items() if values}


# ---------------------------------------------------------------- sidebar


def sidebar(service: SearchService, service_key: str) -> None:
    config = service.config
    with st.sidebar:
        st.header("Search settings")
        st.slider("Number of results", 1, config.ui.max_k,
                  min(config.ann_index.k, config.ui.max_k), key="k", persist_state="session")
        options = filter_options(service, service_key)
        if options:
            st.subheader("Filters")
            for column, values in options.items():
                st.multiselect(column.replace("_", " ").capitalize(), values,
                               key=f"filter_{column}", placeholder="Any",
                               persist_state="session")
        st.divider()
        shortlist_panel(config.dataframe.label_fields)


def shortlist_panel(label_fields: list[str]) -> None:
    rows = list(st.session_state.get("shortlist", {}).values())
    st.header(f"Shortlist ({len(rows)})")
    if not rows:
        st.caption("Add results with “Add to shortlist”, then download them as a CSV.")
        return
    st.dataframe(pd.DataFrame(rows)[["id", "name"]], hide_index=True, width="stretch")
    st.download_button("Download CSV", shortlist_csv(rows, label_fields),
                       file_name="shortlist.csv", mime="text/csv", key="shortlist_csv",
                       icon=":material/download:", on_click="ignore", type="primary",
                       width="stretch")
    st.button("Clear shortlist", key="shortlist_clear", type="tertiary",
              on_click=lambda: st.session_state["shortlist"].clear())


# ---------------------------------------------------------------- search page


def search_page(service: SearchService, service_key: str) -> None:
    sidebar(service, service_key)
    st.title(service.config.ui.title)
    st.caption(f"Find visually similar products among {len(service.items):,} catalog items: "
               "paste a link, upload a photo or pick an example.")
    query_inputs(service, service_key)
    query = st.session_state.get("query")
    if not query:
        return
    st.divider()
    k, filters = current_controls(service)
    found = run_query(service, service_key, query, k, filters)
    if found is not None:
        show_query(found)
        show_results(service, found, filters, on_more=search_with_item, prefix="s")


def query_inputs(service: SearchService, service_key: str) -> None:
    link, upload, examples = st.tabs([":material/link: Paste a link",
                                      ":material/upload: Upload a photo",
                                      ":material/photo_library: Pick an example"])
    with link:
        text, button = st.columns([6, 1], vertical_alignment="bottom")
        text.text_input("Product page or image link", key="url_input", on_change=submit_url,
                        placeholder="https://shop.example.com/product/123",
                        persist_state="session")
        button.button("Search", key="url_search", on_click=submit_url, type="primary",
                      width="stretch")
    with upload:
        st.file_uploader("A product photo (PNG, JPEG, WebP or GIF)", type=UPLOAD_TYPES,
                         key="upload", on_change=submit_upload)
    with examples:
        gallery(service)


def gallery(service: SearchService) -> None:
    config = service.config
    column = config.task_columns[0] if config.task_columns else None
    rows = gallery_rows(service.items, config.ui.gallery_size, column)
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
    if query["kind"] == "item":
        return run_item_query(service, service_key, query["value"], k, filters)
    loaded = query_content(service, query)
    if loaded is None:
        return None
    content, note = loaded
    digest = sha256_of(content)
    try:
        with st.spinner("Searching…"):
            response = search_content(service, service_key, digest, content, k,
                                      filters_key(filters))
    except ImageError as error:
        return fail(query, f"This image cannot be used: {error}. "
                    "Use a JPEG, PNG, WebP or GIF photo.")
    thumbnail = content_thumbnail(digest, content, service.config.download.max_pixels)
    if query["kind"] == "upload":
        return Found(response, thumbnail, "Your photo", f"upload {query['value']}", False, note)
    return Found(response, thumbnail, "Linked image", query["value"], False, note)


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
            content, image_url = fetch_url(query["value"], settings, service.config)
    except FetchError as error:
        return fail(query, str(error))
    if image_url != query["value"]:
        return content, f"Image found at {md(image_url)}"
    return content, ""


def run_item_query(service: SearchService, service_key: str, item_id: str, k: int,
                   filters: dict) -> Found | None:
    try:
        with st.spinner("Searching…"):
            response = search_item(service, service_key, item_id, k, filters_key(filters))
    except KeyError:
        st.warning(f"Product {md(item_id)} is not in the catalog (any more). "
                   "Pick another product or paste a link.")
        return None
    item = response.same_product or {}
    return Found(response, item_thumbnail(service, item.get("image_file")),
                 "Products like this one", f"like product {item_id}", True)


def show_query(found: Found) -> None:
    response = found.response
    picture, text = st.columns([1, 4], gap="medium")
    with picture:
        show_thumbnail(found.thumbnail, "Query image")
    with text:
        st.subheader(found.title)
        item = response.same_product
        if item and found.item_query:
            st.markdown(f"**{md(item.get('name', ''))}** · id {md(item.get('id', ''))}")
        if response.predicted:
            st.markdown(f"Predicted: {predicted_line(response.predicted)}")
            st.caption("The model's attribute guesses for this image; ✓ on a result marks "
                       "a matching attribute.")
        if found.note:
            st.caption(found.note)
    if response.same_product and not found.item_query:
        same = response.same_product
        st.info(f"This is product {md(same.get('id', ''))}: {md(same.get('name', ''))}",
                icon=":material/verified:")


def show_results(service: SearchService, found: Found, filters: dict,
                 on_more: Callable[[str], None], prefix: str) -> None:
    response = found.response
    results = response.results
    noun = "product" if len(results) == 1 else "products"
    st.subheader(f"{len(results)} similar {noun}")
    if filters:
        st.caption("Filtered by " + "; ".join(f"{md(c)}: {', '.join(md(v) for v in values)}"
                                              for c, values in filters.items()))
    if results.empty:
        st.info("No product matches these filters. Clear some filters in the sidebar.")
        return
    top = top_classes(response.predicted)
    records = results.to_dict("records")
    for start in range(0, len(records), RESULTS_PER_ROW):
        for cell, item in zip(st.columns(RESULTS_PER_ROW),
                              records[start:start + RESULTS_PER_ROW], strict=False):
            with cell:
                result_card(service, item, top, on_more, prefix, found.about)


def result_card(service: SearchService, item: dict, top: dict[str, str],
                on_more: Callable[[str], None], prefix: str, query: str) -> None:
    label_fields = service.config.dataframe.label_fields
    item_id = str(item["id"])
    with st.container(border=True):
        show_thumbnail(item_thumbnail(service, item.get("image_file")),
                       f"Result: {item.get('name', '')}")
        st.markdown(f"**{md(item.get('name', ''))}**")
        st.caption(f"id {md(item_id)} · distance {float(item['distance']):.3f}")
        st.badge(str(item.get("band", "")), color=BAND_COLORS.get(item.get("band"), "gray"))
        labels = label_line(item, label_fields, top)
        if labels:
            st.caption(labels)
        link = safe_link(item.get("product_url"))
        if link:
            st.link_button("Product page", link, icon=":material/open_in_new:", width="stretch")
        st.button("More like this", key=f"{prefix}_more_{item_id}", width="stretch",
                  on_click=on_more, args=(item_id,))
        listed = item_id in st.session_state.get("shortlist", {})
        st.button("✓ Shortlisted" if listed else "Add to shortlist",
                  key=f"{prefix}_short_{item_id}", width="stretch",
                  type="tertiary" if listed else "secondary",
                  on_click=toggle_shortlist,
                  args=(shortlist_row(item, label_fields, query),))


def show_thumbnail(thumbnail: bytes | None, alt: str) -> None:
    """A cached thumbnail; `alt` (plain text, never markup) describes it for screen readers."""
    if thumbnail is None:
        st.caption(":material/hide_image: image unavailable")
    else:
        st.image(thumbnail, width="stretch", alt=alt)


# ---------------------------------------------------------------- report page


def report_page(service: SearchService, service_key: str) -> None:
    manifest = service.manifest
    metrics, model = manifest.metrics, manifest.model
    st.title("Index report")
    st.caption(f"Index version {md(manifest.version)}, built {md(manifest.built_at)} with config "
               f"{md(manifest.config_path)}; model {md(model.backbone)}, "
               f"checksum {md(model.checksum[:12])}.")
    report_numbers(manifest)
    tasks = metrics.tasks
    if not tasks:
        st.info("This index has no evaluation metrics (rebuild it with build_index.py).")
        return
    k = metrics.k or "k"
    st.subheader(f"Retrieval quality: mAP@{k} per attribute")
    st.caption(f"{metrics.queries or '?'} queries ({md(metrics.query_source)}); "
               "a result counts as relevant when it shares the query's attribute value.")
    per_task = pd.DataFrame([{"attribute": task, "mAP": values.map_at_k,
                              "precision": values.precision_at_k}
                             for task, values in tasks.items()])
    st.altair_chart(bar_chart(per_task, "attribute", k), width="stretch")
    st.subheader(f"mAP@{k} per class")
    task = st.selectbox("Attribute", list(tasks), key="report_task")
    per_class = pd.DataFrame([{"class": name, "mAP": values.map_at_k,
                               "precision": values.precision_at_k, "queries": values.queries}
                              for name, values in tasks[task].per_class.items()])
    if per_class.empty:
        st.caption("No per-class figures for this attribute.")
    else:
        st.altair_chart(bar_chart(per_class, "class", k), width="stretch")
    skipped_reasons(manifest.counts.skipped_reasons)


def report_numbers(manifest: IndexManifest) -> None:
    metrics, model, latency = manifest.metrics, manifest.model, manifest.metrics.latency
    first = st.columns(4)
    first[0].metric("Catalog items", f"{manifest.items_in_catalog:,}")
    first[1].metric("Indexed", f"{manifest.items_indexed:,}")
    first[2].metric("Skipped items", f"{manifest.counts.items_skipped:,}",
                    help="Rows whose image could not be read (listed in skipped.csv).")
    first[3].metric("Built", manifest.built_at[:10])
    second = st.columns(4)
    second[0].metric("Model", model.backbone, help=f"checksum {model.checksum[:12]}")
    recall = metrics.recall_at_k
    second[1].metric(f"Index recall@{metrics.recall_k or 'k'}",
                     "?" if recall is None else f"{recall:.3f}",
                     help="Share of the exact nearest neighbours the index returns.")
    second[2].metric("Search latency p50", f"{latency.p50_ms:.2f} ms")
    second[3].metric("Search latency p99", f"{latency.p99_ms:.2f} ms")


def bar_chart(frame: pd.DataFrame, category: str, k: object) -> alt.Chart:
    base = alt.Chart(frame).encode(
        y=alt.Y(f"{category}:N", sort="-x", title=None),
        x=alt.X("mAP:Q", scale=alt.Scale(domain=[0, 1]), title=f"mAP@{k}",
                axis=alt.Axis(format=".1f", tickCount=5)),
        tooltip=[alt.Tooltip(f"{category}:N"), alt.Tooltip("mAP:Q", format=".3f"),
                 alt.Tooltip("precision:Q", title=f"P@{k}", format=".3f")])
    bars = base.mark_bar(cornerRadiusEnd=3)
    text = base.mark_text(align="left", dx=4).encode(text=alt.Text("mAP:Q", format=".2f"))
    return (bars + text).properties(height=alt.Step(30))


def skipped_reasons(reasons: dict) -> None:
    if not reasons:
        return
    with st.expander(f"Why items were skipped ({sum(reasons.values()):,})"):
        table = pd.DataFrame({"reason": list(reasons), "items": list(reasons.values())})
        st.dataframe(table, hide_index=True, width="stretch")


# ---------------------------------------------------------------- explore page


def explore_page(service: SearchService, service_key: str) -> None:
    sidebar(service, service_key)
    st.title("Catalog map")
    frame = map_frame(service, service_key)
    label_fields = [c for c in service.config.dataframe.label_fields if c in frame]
    st.caption(f"Each point is a product ({len(frame):,} shown of {len(service.items):,}), "
               "placed by visual similarity. Click a point to search with that product.")
    if frame.empty:
        st.info("This index has no map.")
        return
    colour = st.selectbox("Colour by", label_fields, key="map_colour") if label_fields else None
    event = st.altair_chart(map_chart(frame, colour, label_fields), key="map",
                            on_select="rerun", selection_mode="pick", width="stretch")
    remember_pick(picked_id(event))
    item_id = st.session_state.get("explore_item")
    if not item_id:
        return
    st.divider()
    k, filters = current_controls(service)
    found = run_item_query(service, service_key, item_id, k, filters)
    if found is not None:
        show_query(found)
        show_results(service, found, filters, on_more=explore_with_item, prefix="x")


def remember_pick(item_id: str | None) -> None:
    """A new click on the map replaces the product searched with; a rerun keeps the last one."""
    if item_id and item_id != st.session_state.get("explore_last_pick"):
        st.session_state["explore_item"] = item_id
    st.session_state["explore_last_pick"] = item_id


def map_chart(frame: pd.DataFrame, colour: str | None, label_fields: list[str]) -> alt.Chart:
    safe = {column: f"label_{i}" for i, column in enumerate(label_fields)}
    data = frame[["id", "name", "map_x", "map_y", *label_fields]].rename(columns=safe)
    data = data.astype({"id": str, "name": str})
    pick = alt.selection_point(name="pick", fields=["id"], on="click")
    encoding = {
        "x": alt.X("map_x:Q", axis=None), "y": alt.Y("map_y:Q", axis=None),
        "tooltip": [alt.Tooltip("name:N", title="Name"), alt.Tooltip("id:N", title="Id"),
                    *(alt.Tooltip(f"{safe[c]}:N", title=c) for c in label_fields)],
        "opacity": alt.when(pick).then(alt.value(0.85)).otherwise(alt.value(0.35)),
    }
    if colour:
        encoding["color"] = alt.Color(f"{safe[colour]}:N", title=colour,
                                      legend=alt.Legend(orient="right"))
    return (alt.Chart(data).mark_circle(size=45).encode(**encoding).add_params(pick)
            .properties(height=560))


# ---------------------------------------------------------------- main


PAGES = {"search": ("Search", ":material/image_search:", search_page),
         "report": ("Report", ":material/analytics:", report_page),
         "explore": ("Explore", ":material/scatter_plot:", explore_page)}


def main(default_page: str = "search") -> None:
    """The app; `default_page` opens another page first (tests use it)."""
    service, service_key = load_service()
    init_state()
    pages = [st.Page(lambda render=render: guarded(render, service, service_key), title=title,
                     icon=icon, url_path=name, default=name == default_page)
             for name, (title, icon, render) in PAGES.items()]
    st.navigation(pages, position="top").run()


def guarded(render: Callable[[SearchService, str], None], service: SearchService,
            service_key: str) -> None:
    """Run a page; an unexpected error becomes a message (details go to the server log)."""
    try:
        render(service, service_key)
    except Exception as error:
        log.exception("page failed")
        st.error(f"Something went wrong ({type(error).__name__}: {md(error)}). "
                 "Try again; if it keeps happening, see the server log.", icon=":material/error:")


if __name__ == "__main__":
    main()
