"""Pieces shared by the pages: the sidebar with the shortlist, the query header, result cards."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pandas as pd
import streamlit as st

from app.cache import filter_options, item_thumbnail, search_item
from app.confidence import no_match_notice
from app.display import filters_key, label_line, md, predicted_line, safe_link, top_classes
from app.judging import judge_buttons, judge_context, judgment_notice
from app.state import current_colour, current_controls, toggle_shortlist
from colour_match import MODES
from search import SearchResponse, SearchService, shortlist_csv, shortlist_row

RESULTS_PER_ROW = 5
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
    judge: dict | None = None  # what a thumbs up / down records about the query
    can_crop: bool = False     # the query is an image that the crop tool can box


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
        if config.colour.column:
            st.radio("Colour", list(MODES), format_func=MODES.get, key="colour_mode",
                     index=list(MODES).index(config.colour.default), horizontal=True,
                     help="Any colour: shape and style only as the model sees them; similar / "
                          "same colour: products of the query's colour move up.")
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
    no_match_notice(service, response, found.can_crop, prefix)
    judgment_notice()
    top = top_classes(response.predicted)
    records = results.to_dict("records")
    for start in range(0, len(records), RESULTS_PER_ROW):
        for cell, item in zip(st.columns(RESULTS_PER_ROW),
                              records[start:start + RESULTS_PER_ROW], strict=False):
            with cell:
                result_card(service, item, top, on_more, prefix, found.about, found.judge)


def result_card(service: SearchService, item: dict, top: dict[str, str],
                on_more: Callable[[str], None], prefix: str, query: str,
                judge: dict | None = None) -> None:
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
        show_query(found)
        show_results(service, found, filters, on_more=on_more, prefix=prefix)
