"""The calibrated bands: "no confident match" on the Search page, their basis on the Report page."""

from __future__ import annotations

import streamlit as st

from app.display import md
from contracts import IndexManifest
from search import SearchResponse, SearchService

CROP_OPEN = "crop_open"


def only_type(service: SearchService, response: SearchResponse) -> tuple[str, str] | None:
    """(column, predicted type) to offer as a one-click filter, when the filter exists."""
    column = service.config.calibration_column
    top = (response.predicted or {}).get(column or "")
    if not column or not top or column not in service.config.ui.filter_fields:
        return None
    value = str(top[0][0])
    in_catalog = column in service.items and (service.items[column].astype(str) == value).any()
    return (column, value) if in_catalog else None


def no_match_notice(service: SearchService, response: SearchResponse, can_crop: bool,
                    prefix: str) -> None:
    """When the best match is past the bands: say so, with the two ways out."""
    if not response.no_match:
        return
    bands = service.bands
    best = response.results["distance"].min() if len(response.results) else None
    st.warning(
        f"**No confident match in this catalog.** The closest product is at distance "
        f"{best:.3f}; past {bands.no_match:.3f}, the closest products of the catalog's own test "
        f"photos were the wrong kind of product ({md(bands.column)}) more often than not. "
        "The results below are the nearest there are, not necessarily the same kind of product.",
        icon=":material/help:")
    ways = st.columns(2)
    if can_crop:
        ways[0].button("Crop to the product", key=f"{prefix}_way_crop", icon=":material/crop:",
                       on_click=lambda: st.session_state.update({CROP_OPEN: True}),
                       width="stretch")
    offered = only_type(service, response)
    if offered:
        column, value = offered
        ways[1].button(f"Only {value}?", key=f"{prefix}_way_only", icon=":material/filter_alt:",
                       on_click=set_filter, args=(column, value), width="stretch",
                       help=f"Filter the results to {column} {value}, the model's guess.")


def set_filter(column: str, value: str) -> None:
    st.session_state[f"filter_{column}"] = [value]


def bands_section(manifest: IndexManifest) -> None:
    """Report page: the calibrated bands and what they rest on."""
    bands = manifest.metrics.bands
    st.subheader("Confidence bands")
    if bands is None:
        st.caption("This index has no calibrated bands (rebuild it with build_index.py); "
                   "the config's ui.bands label the results.")
        return
    share = bands.confident_share_seen
    seen = "" if share is None else f" (seen: {share:.0%})"
    if bands.no_match_basis == "share":
        beyond = (f"beyond it the best match had the query's {md(bands.column)} in only "
                  f"{bands.no_match_share_seen:.0%} of {bands.no_match_queries} queries")
    else:
        beyond = (f"the best match had the query's {md(bands.column)} in at least "
                  f"{bands.no_match_share:.0%} of the queries at every distance, so this is the "
                  f"{md(bands.no_match_basis)} of the best-match distances")
    st.caption(f"Calibrated at build time on {bands.queries:,} held-out queries: the best match "
               f"had the query's {md(bands.column)} in {bands.top1_share or 0:.0%} of them.")
    col = st.columns(2)
    col[0].metric("Similar up to distance", f"{bands.confident:.3f}",
                  help=f"Queries this close: the best match had the query's {bands.column} in "
                       f">= {bands.confident_share:.0%} of {bands.confident_queries} queries"
                       f"{seen}.")
    col[1].metric("No confident match beyond", f"{bands.no_match:.3f}")
    st.caption(f"Past {bands.no_match:.3f} the Search page says “no confident match in this "
               f"catalog”: {beyond}.")
