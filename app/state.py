"""Session state: the active query, shared links (?url= / ?item=), the shortlist, the controls."""

from __future__ import annotations

import streamlit as st

from search import SearchService


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
    if params.get("crop") and st.session_state.get("query"):
        st.session_state["query"]["crop"] = params["crop"]


def set_query_params(**params: str) -> None:
    """The shareable link of the active query (a new query drops the old crop)."""
    for name in ("url", "item", "crop"):
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


def current_colour(service: SearchService) -> str:
    """The sidebar's colour mode (the config's default before the sidebar is drawn)."""
    return st.session_state.get("colour_mode") or service.config.colour.default


def current_controls(service: SearchService) -> tuple[int, dict[str, list[str]]]:
    config = service.config
    k = int(st.session_state.get("k") or min(config.ann_index.k, config.ui.max_k))
    filters = {column: list(st.session_state.get(f"filter_{column}") or [])
               for column in config.ui.filter_fields}
    return k, {column: values for column, values in filters.items() if values}
