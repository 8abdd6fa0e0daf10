"""Session state: the active query, shared links (?url= / ?item=, k and filters), the browser's
saved shortlist, the controls."""

from __future__ import annotations

import logging
from urllib.parse import urlencode, urlsplit

import streamlit as st

from app.shortlists import ShortlistStore, new_owner, valid_owner
from config import AppConfig
from ingest.download import with_scheme
from search import SearchService

log = logging.getLogger(__name__)

QUERY_PARAMS = ("url", "item", "crop")
K_PARAM = "k"  # filters travel as ?<column>=<value>, repeated for several values
BROWSER_COOKIE = "vsearch_browser"
COOKIE_MAX_AGE_S = 400 * 24 * 3600  # the longest browsers keep a cookie


def init_state() -> None:
    """First run of a session: reopen the search a shared link names (?url= or ?item=) and
    find this browser's id (its cookie) for the saved shortlist."""
    if st.session_state.get("_started"):
        return
    st.session_state["_started"] = True
    known = valid_owner(st.context.cookies.get(BROWSER_COOKIE))
    st.session_state["browser_id"] = known or new_owner()
    st.session_state["browser_id_saved"] = known is not None
    params = st.query_params
    if params.get("url"):
        st.session_state["url_input"] = params["url"]
        st.session_state["query"] = {"kind": "url", "value": params["url"]}
    elif params.get("item"):
        st.session_state["query"] = {"kind": "item", "value": params["item"]}
    if params.get("crop") and st.session_state.get("query"):
        st.session_state["query"]["crop"] = params["crop"]


def remember_browser() -> None:
    """Give a browser without our cookie its id, so a reload or a restarted server finds its
    shortlist again (the id is ours, never user text)."""
    if st.session_state.get("browser_id_saved"):
        return
    owner = valid_owner(st.session_state.get("browser_id"))
    if owner:
        st.html(f"<script>document.cookie = '{BROWSER_COOKIE}={owner}; path=/; "
                f"max-age={COOKIE_MAX_AGE_S}; SameSite=Lax';</script>",
                unsafe_allow_javascript=True)


def set_query_params(**params: str) -> None:
    """The shareable link of the active query (a new query drops the old crop)."""
    for name in QUERY_PARAMS:
        if params.get(name):
            st.query_params[name] = params[name]
        elif name in st.query_params:
            del st.query_params[name]


def default_k(config: AppConfig) -> int:
    return min(config.ann_index.k, config.ui.max_k)


def restore_controls(config: AppConfig, options: dict[str, list[str]]) -> None:
    """Once per session, before the widgets are drawn: k and filters from a shared link
    (values the catalog does not have, and a k out of range, are ignored)."""
    if st.session_state.get("_controls_restored"):
        return
    st.session_state["_controls_restored"] = True
    text = st.query_params.get(K_PARAM, "")
    if text.isdigit() and 1 <= int(text) <= config.ui.max_k:
        st.session_state["k"] = int(text)
    for column, values in options.items():
        chosen = [value for value in st.query_params.get_all(column) if value in values]
        if chosen:
            st.session_state[f"filter_{column}"] = list(dict.fromkeys(chosen))


def sync_control_params(config: AppConfig) -> None:
    """Put k (when not the default) and the filters into the address, so the link shows what
    the sender saw."""
    k, filters = current_controls(config)
    wanted = {K_PARAM: [str(k)] if k != default_k(config) else []}
    wanted.update({column: filters.get(column, []) for column in config.ui.filter_fields})
    for name, values in wanted.items():
        if st.query_params.get_all(name) == values:
            continue
        if values:
            st.query_params[name] = values
        elif name in st.query_params:
            del st.query_params[name]


def share_link(base_url: str | None) -> str:
    """The address that reopens this search: the page's URL with the query parameters."""
    pairs = [(name, value) for name in st.query_params for value in st.query_params.get_all(name)]
    query = urlencode(pairs)
    base = (base_url or "").split("?", 1)[0].split("#", 1)[0]
    if base and not urlsplit(base).path:
        base += "/"
    return f"{base}?{query}" if query else base


def submit_url() -> None:
    url, note = with_scheme(st.session_state.get("url_input") or "")
    st.session_state["url_note"] = note
    if url:
        st.session_state["url_input"] = url
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
    st.session_state["url_note"] = ""
    set_query_params(item=str(item_id))


def explore_with_item(item_id: str) -> None:
    st.session_state["explore_item"] = str(item_id)


def load_shortlist(config: AppConfig) -> dict[str, dict]:
    """This browser's saved shortlist (read each run: another tab may have changed it)."""
    store = ShortlistStore(config.paths.shortlists_path)
    try:
        shortlist = store.load(st.session_state["browser_id"])
    except OSError as error:
        log.warning("shortlists unreadable: %s", error)
        shortlist = st.session_state.get("shortlist", {})
    st.session_state["shortlist"] = shortlist
    return shortlist


def change_shortlist(config: AppConfig, row: dict | None) -> None:
    """Add or remove a row (None clears the list) in the saved shortlist; when it cannot be
    saved, the change stays in this tab and a message names the config key."""
    store = ShortlistStore(config.paths.shortlists_path)
    owner = st.session_state["browser_id"]
    try:
        shortlist = store.toggle(owner, row) if row else store.clear(owner)
        st.session_state["shortlist_error"] = ""
    except OSError as error:
        log.warning("shortlist not saved: %s", error)
        shortlist = dict(st.session_state.get("shortlist", {}))
        if row is None:
            shortlist.clear()
        elif shortlist.pop(row["id"], None) is None:
            shortlist[row["id"]] = row
        st.session_state["shortlist_error"] = (
            f"The shortlist could not be saved in paths.shortlists_path "
            f"({config.paths.shortlists_path}: {error.strerror or error}); it is kept in this "
            "tab only.")
    st.session_state["shortlist"] = shortlist


def current_colour(service: SearchService) -> str:
    """The sidebar's colour mode (the config's default before the sidebar is drawn)."""
    return st.session_state.get("colour_mode") or service.config.colour.default


def current_controls(config: AppConfig | SearchService) -> tuple[int, dict[str, list[str]]]:
    config = config.config if isinstance(config, SearchService) else config
    k = int(st.session_state.get("k") or default_k(config))
    filters = {column: list(st.session_state.get(f"filter_{column}") or [])
               for column in config.ui.filter_fields}
    return k, {column: values for column, values in filters.items() if values}
