"""Streamlit app entry: `streamlit run front_end.py -- --config X`; the config, the shared
search service and the navigation between the pages in `app/` (Search, Report, Explore)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import streamlit as st

from app.cache import cached_config, cached_service
from app.display import md
from app.explore_page import explore_page
from app.list_page import list_page
from app.report_page import report_page
from app.search_page import search_page
from app.state import init_state
from config import ConfigError
from index_store.base import IndexStoreError
from index_store.store import current_version
from search import SearchService
from util.files import file_sha256
from vectorizer.checkpoint import CheckpointError

log = logging.getLogger("front_end")

ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = ROOT / "config" / "config.yml"
CONFIG_ENV = "VSEARCH_CONFIG"  # used when no --config is given (e.g. by tests)


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


PAGES = {"search": ("Search", ":material/image_search:", search_page),
         "report": ("Report", ":material/analytics:", report_page),
         "explore": ("Explore", ":material/scatter_plot:", explore_page),
         "list": ("Match a list", ":material/checklist:", list_page)}


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
