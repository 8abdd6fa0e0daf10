"""Streamlit app entry: `streamlit run front_end.py -- --config X`; loading at server start, the
shared search service and the navigation between the pages in `app/` (Search, Report, Explore)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import NoReturn

import streamlit as st
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from streamlit import delta_generator

from app.display import md
from app.service_loader import LOADER, Loading, Readiness
from search import SearchService
from util.local_servers import READY_PATH  # 200 once a visitor waits for nothing, else 503

log = logging.getLogger("front_end")

ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = ROOT / "config" / "config.yml"
CONFIG_ENV = "VSEARCH_CONFIG"  # used when no --config is given (e.g. by tests)
WARMED_UP = threading.Event()  # the pages are imported and their caches filled (at start)


def config_path_from_args(argv: list[str] | None = None) -> Path:
    """--config PATH (after `--` on the streamlit command line), else $VSEARCH_CONFIG, else
    config/config.yml."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--config", default=None)
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    chosen = args.config or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    return Path(chosen).expanduser().resolve()


def load_service() -> tuple[SearchService, str]:
    """The shared service and its cache key; while it loads, or when it cannot, the page stops."""
    answer = LOADER.request(config_path_from_args())
    if answer.error:
        stop_with(answer.error)
    if answer.service is None:
        show_starting(answer.loading)
    config = answer.service.config
    st.set_page_config(page_title=config.ui.title, layout="wide",
                       page_icon=":material/image_search:")
    return answer.service, answer.key


def stop_with(message: str) -> NoReturn:
    st.set_page_config(page_title="Visual similarity search", layout="wide")
    st.error(message, icon=":material/error:")
    st.stop()


def show_starting(loading: Loading | None) -> NoReturn:
    """A clear loading state at once; the page reruns by itself when the service is ready."""
    st.set_page_config(page_title="Visual similarity search (starting)", layout="wide")
    st.title("Visual similarity search")
    waited = f" ({loading.waited_s:.0f} s so far)" if loading else ""
    st.info(f"Starting up: loading the model and the index{waited}. "
            "This page opens by itself when they are ready.", icon=":material/hourglass_top:")

    @st.fragment(run_every=1.0)
    def poll() -> None:
        if loading is None or loading.done.is_set():
            st.rerun()
    poll()
    st.stop()


def pages() -> dict[str, tuple[str, str, Callable[[SearchService, str], None]]]:
    """url path -> (title, icon, render). The page modules import here, not at the top: Streamlit
    imports this file before its runtime exists, and their caches must be created inside it
    (`warm_up` imports them at server start, after the runtime; a custom component such as the
    cropper registers only when imported in a session's run, so app/crop.py imports it there)."""
    from app.explore_page import explore_page
    from app.list_page import list_page
    from app.report_page import report_page
    from app.search_page import search_page

    return {"search": ("Search", ":material/image_search:", search_page),
            "report": ("Report", ":material/analytics:", report_page),
            "explore": ("Explore", ":material/scatter_plot:", explore_page),
            "list": ("Match a list", ":material/checklist:", list_page)}


def main(default_page: str = "search") -> None:
    """The app; `default_page` opens another page first (tests use it)."""
    from app.state import init_state
    from app.widgets import narrow_screen_nav

    service, service_key = load_service()
    init_state()
    entries = [st.Page(lambda render=render: guarded(render, service, service_key), title=title,
                       icon=icon, url_path=name, default=name == default_page)
               for name, (title, icon, render) in pages().items()]
    navigation = st.navigation(entries, position="top")
    narrow_screen_nav(entries)
    navigation.run()


def guarded(render: Callable[[SearchService, str], None], service: SearchService,
            service_key: str) -> None:
    """Run a page; an unexpected error becomes a message (details go to the server log)."""
    try:
        render(service, service_key)
    except Exception as error:
        log.exception("page failed")
        st.error(f"Something went wrong ({type(error).__name__}: {md(error)}). "
                 "Try again; if it keeps happening, see the server log.", icon=":material/error:")


def show_our_logs() -> None:
    """Our packages' INFO lines (loading, ready) in the server log, beside Streamlit's own."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("app").setLevel(logging.INFO)


def warm_up() -> None:
    """At server start: import the pages (altair alone takes ~0.4 s) and, once the service is
    loaded, fill the caches the Search page reads first, so that the first visitor waits no
    longer than later ones. A failure here is logged; the page shows it when opened."""
    try:
        streamlit_first_element_check()
        pages()
        answer = LOADER.wait(config_path_from_args())
        if answer.service is not None:
            from app.cache import warm

            warm(answer.service, answer.key)
    except Exception:
        log.exception("warming up the pages failed")
    finally:
        WARMED_UP.set()


def streamlit_first_element_check() -> None:
    """Streamlit asks once per process, when the first element is sent, whether it runs in a
    REPL, and `inspect.stack()` resolves the path of every loaded module (~90 ms here, paid by
    the first visitor); ask it at start. A private function: skipped if a release drops it."""
    check = getattr(delta_generator, "_maybe_print_use_warning", None)
    if callable(check):
        check()


@contextlib.asynccontextmanager
async def start_loading(_app: st.App) -> AsyncIterator[None]:
    """At server start (the runtime exists by now): load the model and the index and warm the
    pages up, in background threads, so that no visitor waits for either."""
    show_our_logs()
    LOADER.request(config_path_from_args())
    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
    yield


def readiness() -> Readiness:
    """Ready when the search service is loaded and the pages are warmed up."""
    state = LOADER.request(config_path_from_args()).readiness
    if state.ready and not WARMED_UP.is_set():
        return Readiness("loading", "preparing the pages")
    return state


async def ready_endpoint(_request: Request) -> JSONResponse:
    """The readiness probe: /_stcore/health says the server answers, this that a visitor
    arriving now waits for nothing (`make serve`, the tests and bench/load.py wait for it)."""
    state = readiness()
    return JSONResponse({"status": state.status, "detail": state.detail},
                        status_code=200 if state.ready else 503)


# `streamlit run front_end.py` serves this app (Streamlit finds `app`); each session runs main().
app = st.App(__file__, lifespan=start_loading, routes=[Route(READY_PATH, ready_endpoint)])

if __name__ == "__main__":
    main()
