"""The "Match a list" page: a CSV of image or product-page links in, the matches of every row out
(the bulk path of `search.py`: concurrent downloads, a status per row, never a stop)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pandas as pd
import streamlit as st

from app.display import md
from app.state import current_colour
from exports import table_csv
from search import QueryListError, SearchService, match_sources, read_query_list
from util.files import sha256_of
from vectorizer.images import ImageError, open_image

THUMB = 96
RESULT_KEY = "list_result"


def list_page(service: SearchService, service_key: str) -> None:
    config = service.config
    st.title("Match a list")
    st.caption(f"Upload a CSV with one image link or product-page link per row (at most "
               f"{config.ui.list_max_rows:,} rows, ui.list_max_rows); every row is matched "
               "against the catalog. A row that cannot be downloaded gets its reason, the "
               "others go on.")
    upload = st.file_uploader("CSV of links", type=["csv", "txt"], key="list_upload")
    if upload is None:
        return
    content = upload.getvalue()
    try:
        table, guessed = read_query_list(content)
    except QueryListError as error:
        st.error(md(error), icon=":material/error:")
        return
    columns = [str(c) for c in table.columns]
    column = st.selectbox("Column with the links", columns, index=columns.index(link_column(
        table, guessed)), key="list_column")
    k = st.number_input("Matches per row", 1, config.ui.max_k, min(3, config.ui.max_k),
                        key="list_k")
    try:
        table, column = read_query_list(content, column, config.ui.list_max_rows)
    except QueryListError as error:
        st.error(md(error), icon=":material/error:")
        return
    job = (sha256_of(content), column, int(k), current_colour(service), service_key)
    if st.button(f"Match {len(table):,} rows", key="list_run", type="primary",
                 icon=":material/checklist:"):
        st.session_state[RESULT_KEY] = (job, run_list(service, table[column].tolist(), int(k)))
    done = st.session_state.get(RESULT_KEY)
    if done and done[0] == job:
        show_matches(service, done[1])


def link_column(table: pd.DataFrame, guessed: str) -> str:
    """The column whose cells look most like links (the guess when none do)."""
    shares = {str(c): table[c].astype(str).str.strip().str.match(r"(?i)https?://").mean()
              for c in table.columns}
    best = max(shares, key=shares.get)
    return best if shares[best] > 0 else guessed


def run_list(service: SearchService, sources: list[str], k: int) -> pd.DataFrame:
    bar = st.progress(0.0, text=f"Matching 0 of {len(sources):,} rows…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Matching {done:,} of {total:,} rows…")

    result = match_sources(service, sources, k, colour=current_colour(service),
                           progress=progress)
    bar.empty()
    return result


def show_matches(service: SearchService, result: pd.DataFrame) -> None:
    per_row = result.drop_duplicates("row")
    ok = int((per_row["status"] == "ok").sum())
    failed = len(per_row) - ok
    st.subheader(f"{ok:,} of {len(per_row):,} rows matched")
    if failed:
        noun = "row" if failed == 1 else "rows"
        st.warning(f"{failed:,} {noun} could not be matched; the reasons are in the table.",
                   icon=":material/warning:")
    files = service.items.set_index("id")["image_file"] if "image_file" in service.items \
        else pd.Series(dtype=str)
    shown = result.assign(picture=[thumbnail_uri(files.get(i)) for i in result["id"]])
    st.dataframe(shown[["row", "query", "status", "reason", "rank", "picture", "id", "name",
                        "distance", "band"]], hide_index=True, width="stretch",
                 row_height=60, key="list_table",
                 column_config={"picture": st.column_config.ImageColumn("match", width="small"),
                                "query": st.column_config.TextColumn("query", width="medium"),
                                "distance": st.column_config.NumberColumn(format="%.3f")})
    st.download_button("Download matches (CSV)", table_csv(result), file_name="matches.csv",
                       mime="text/csv", key="list_csv", icon=":material/download:",
                       on_click="ignore", type="primary")


@st.cache_data(max_entries=5000, show_spinner=False)
def thumbnail_uri(image_file: object) -> str | None:
    """A small JPEG data URI of a catalog image (None when there is none)."""
    if not isinstance(image_file, str) or not image_file:
        return None
    try:
        image = open_image(Path(image_file), 40_000_000)
    except ImageError:
        return None
    image.thumbnail((THUMB, THUMB))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
