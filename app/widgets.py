"""Pieces shared by the pages: the sidebar with the shortlist, the query header, result cards."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pandas as pd
import streamlit as st

from app.cache import filter_options, item_thumbnail, search_item
from app.confidence import no_match_notice
from app.display import (
    column_title,
    filters_key,
    label_line,
    markdown_link,
    md,
    predicted_line,
    reference_labels,
    safe_link,
)
from app.judging import judge_buttons, judge_context, judgment_notice
from app.state import (
    change_shortlist,
    current_colour,
    current_controls,
    default_k,
    load_shortlist,
    remember_browser,
    restore_controls,
    sync_control_params,
)
from colour_match import MODES
from config import AppConfig
from exports import shortlist_csv, shortlist_row
from search import SearchResponse, SearchService

RESULTS_PER_ROW = 5
NARROW_SCREEN_PX = 768  # below Streamlit's "md" breakpoint the top navigation folds into the menu
NARROW_NAV_CSS = (f"<style>.st-key-narrow_nav {{display: none;}} @media (max-width: "
                  f"{NARROW_SCREEN_PX - 0.02}px) {{.st-key-narrow_nav {{display: flex;}}}}</style>")
BAND_COLORS = {"near-duplicate": "green", "similar": "blue", "loosely similar": "gray",
               "unlikely match": "orange"}


class Found(NamedTuple):
    """One answered query, ready to show."""

    response: SearchResponse
    thumbnail: bytes | None
    title: str
    about: str           # what the query was, kept with shortlisted results
    item_query: bool     # searched with a catalog product (the product is shown, not announced)
    note: str = ""       # e.g. where on a product page the image was found (Markdown-escaped)
    share: str | None = None  # the link that reopens this search ("" when it cannot be shared)
    judge: dict | None = None  # what a thumbs up / down records about the query
    can_crop: bool = False     # the query is an image that the crop tool can box


def narrow_screen_nav(pages: list) -> None:
    """The pages as links at the top of every page, shown on phone-width screens only (there
    Streamlit moves the navigation into the collapsed sidebar, out of sight)."""
    st.html(NARROW_NAV_CSS)
    with st.container(horizontal=True, key="narrow_nav", gap="small"):
        for page in pages:
            st.page_link(page, label=page.title, icon=page.icon)


def sidebar(service: SearchService, service_key: str) -> None:
    config = service.config
    options = filter_options(service, service_key)
    restore_controls(config, options)
    with st.sidebar:
        st.header("Search settings")
        st.slider("Number of results", 1, config.ui.max_k, default_k(config), key="k",
                  persist_state="session")
        if options:
            st.subheader("Filters")
            for column, values in options.items():
                st.multiselect(column_title(column, config.ui.column_names), values,
                               key=f"filter_{column}", placeholder="Any",
                               persist_state="session")
        sync_control_params(config)
        if service.has_colour:  # none configured, or none to re-rank with
            st.radio("Colour", list(MODES), format_func=MODES.get, key="colour_mode",
                     index=list(MODES).index(config.colour.default), horizontal=True,
                     help="Any colour: colour plays no part in the order; similar / same "
                          "colour: products of the query's colour move up.")
        st.divider()
        shortlist_panel(config)
        remember_browser()


def shortlist_panel(config: AppConfig) -> None:
    rows = list(load_shortlist(config).values())
    st.header(f"Shortlist ({len(rows)})")
    if st.session_state.get("shortlist_error"):
        st.warning(st.session_state["shortlist_error"], icon=":material/warning:")
    if not rows:
        st.caption("Add results with “Add to shortlist”, then download them as a CSV. "
                   "The list is kept for this browser.")
        return
    st.dataframe(pd.DataFrame(rows)[["id", "name"]], hide_index=True, width="stretch")
    st.download_button("Download CSV", shortlist_csv(rows, config.dataframe.label_fields),
                       file_name="shortlist.csv", mime="text/csv", key="shortlist_csv",
                       icon=":material/download:", on_click="ignore", type="primary",
                       width="stretch")
    st.button("Clear shortlist", key="shortlist_clear", type="tertiary",
              on_click=change_shortlist, args=(config, None))


def run_item_query(service: SearchService, service_key: str, item_id: str, k: int,
                   filters: dict) -> Found | None:
    try:
        with st.spinner("Searching…"):
            response = search_item(service, service_key, item_id, k, filters_key(filters),
                                   colour=current_colour(service))
    except KeyError:
        st.warning(f"Product {md(item_id)} is not in the catalog (any more). "
                   "Pick another product or paste a link.")
        return None
    item = response.same_product or {}
    return Found(response, item_thumbnail(service, item.get("image_file")),
                 "Products like this one", f"like product {item_id}", True,
                 judge=judge_context("item", item_id, filters=filters,
                                     colour=current_colour(service)))


def show_query(found: Found, label_fields: list[str]) -> dict[str, str]:
    """The query's picture and text; returns the labels ✓ on the results compare with."""
    response = found.response
    reference, why = reference_labels(response.same_product, response.predicted, label_fields)
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
        st.caption(why)
        if found.note:
            st.caption(found.note)
        show_share(found.share)
    if response.same_product and not found.item_query:
        same = response.same_product
        st.info(f"This is product {md(same.get('id', ''))}: {md(same.get('name', ''))}",
                icon=":material/verified:")
    return reference


def show_share(link: str | None) -> None:
    """Where the search's link is shown: the link, or why there is none."""
    if link is None:
        return
    if not link:
        st.caption(":material/link_off: This search used an uploaded photo, so it cannot be "
                   "shared as a link. Send the photo, or search with a product link to share.")
        return
    # a Markdown link, not st.code: the code block's 1.5 MB highlighter script was ~40 % of the
    # browser's work for a first search (bench/load.py, README "Live demos")
    st.caption(":material/link: Link to this search (filters and number of results included): "
               + markdown_link(link, link))


def show_results(service: SearchService, found: Found, filters: dict, reference: dict,
                 on_more: Callable[[str], None], prefix: str) -> None:
    response = found.response
    results = response.results
    noun = "product" if len(results) == 1 else "products"
    st.subheader(f"{len(results)} similar {noun}", help=order_help(service, found.item_query))
    if filters:
        names = service.config.ui.column_names
        st.caption("Filtered by " + "; ".join(
            f"{md(column_title(c, names))}: {', '.join(md(v) for v in values)}"
            for c, values in filters.items()))
    if results.empty:
        st.info("No product matches these filters. Clear some filters in the sidebar.")
        return
    no_match_notice(service, response, found.can_crop, prefix)
    judgment_notice()
    records = results.to_dict("records")
    for start in range(0, len(records), RESULTS_PER_ROW):
        for cell, item in zip(st.columns(RESULTS_PER_ROW),
                              records[start:start + RESULTS_PER_ROW], strict=False):
            with cell:
                result_card(service, item, reference, on_more, prefix, found.about, found.judge)


def order_help(service: SearchService, item_query: bool) -> str:
    """How the results are ordered: visual distance, and what re-ranks it in this config."""
    config, names = service.config, service.config.ui.column_names
    parts = ["Ordered by visual distance (the number on each card)."]
    if service.label_columns:
        columns = " and ".join(md(column_title(c, names)).lower() for c in service.label_columns)
        whose = ("this product's own" if item_query
                 else "what the model sees in the query (its prediction)")
        parts.append(f"Among the {config.label_match.candidates} nearest, products whose "
                     f"{columns} match {whose} move up.")
    mode = current_colour(service)
    if service.colour_weight(mode):
        parts.append(f"{MODES[mode]}: products of the query's colour move up.")
    return " ".join(parts)


def result_card(service: SearchService, item: dict, reference: dict[str, str],
                on_more: Callable[[str], None], prefix: str, query: str,
                judge: dict | None = None) -> None:
    label_fields = service.config.dataframe.label_fields
    item_id = str(item["id"])
    with st.container(border=True):
        show_thumbnail(item_thumbnail(service, item.get("image_file")),
                       f"Result: {item.get('name', '')}")
        st.markdown(f"**{md(item.get('name', ''))}**")
        band = str(item.get("band", ""))
        st.caption(f"id {md(item_id)} · distance {float(item['distance']):.3f} "
                   f":{BAND_COLORS.get(band, 'gray')}-badge[{md(band)}]")  # one element
        labels = label_line(item, label_fields, reference)
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
                  on_click=change_shortlist,
                  args=(service.config, shortlist_row(item, label_fields, query)))
        if judge is not None:
            judge_buttons(service, item, judge, prefix)


def show_thumbnail(thumbnail: bytes | None, alt: str) -> None:
    """A cached thumbnail; `alt` (plain text, never markup) describes it for screen readers."""
    if thumbnail is None:
        st.caption(":material/hide_image: image unavailable")
    else:
        st.image(thumbnail, width="stretch", alt=alt)


def answer(service: SearchService, run: Callable[[int, dict], Found | None],
           on_more: Callable[[str], None], prefix: str) -> None:
    """Below a divider: run the query with the sidebar's k and filters, show it and its results."""
    st.divider()
    k, filters = current_controls(service)
    found = run(k, filters)
    if found is not None:
        reference = show_query(found, service.config.dataframe.label_fields)
        show_results(service, found, filters, reference, on_more=on_more, prefix=prefix)
