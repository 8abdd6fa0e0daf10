"""Thumbs up / down on result cards, and the judgments on the Report page."""

from __future__ import annotations

import streamlit as st

from app.display import md
from exports import table_csv
from judgments.scores import judged_precision
from judgments.store import Judgment, JudgmentStore, JudgmentsUnavailable, query_image_bytes
from query_crop import crop_image, parse_crop
from search import SearchService
from vectorizer.images import ImageError, open_image

ERROR_KEY = "judgments_error"


@st.cache_resource(max_entries=4, show_spinner=False)
def judgment_store(path: str, busy_timeout_s: float) -> JudgmentStore:
    return JudgmentStore(path, busy_timeout_s)


def store_of(service: SearchService) -> JudgmentStore:
    return judgment_store(str(service.config.paths.judgments_path),
                          service.config.judgments.busy_timeout_s)


def judge_context(kind: str, ref: str, *, digest: str = "", crop: str = "",
                  filters: dict | None = None, colour: str = "",
                  content: bytes | None = None) -> dict:
    """What a verdict records about the query (the image bytes only to keep a small copy)."""
    return {"query_kind": kind, "query_ref": ref, "query_hash": digest, "crop": crop,
            "filters": dict(filters or {}), "colour": colour, "content": content}


def verdict_key(context: dict, item_id: str) -> tuple:
    return (context["query_kind"], context["query_ref"], context["query_hash"], context["crop"],
            str(sorted(context["filters"].items())), context["colour"], item_id)


def judge_buttons(service: SearchService, item: dict, context: dict, prefix: str) -> None:
    """👍 / 👎 for one result card; the chosen one is highlighted."""
    item_id = str(item["id"])
    given = st.session_state.setdefault("verdicts", {}).get(verdict_key(context, item_id))
    row = st.container(horizontal=True, gap="small")  # one block, not three (a lighter page)
    row.button(":material/thumb_up:", key=f"{prefix}_up_{item_id}", width="stretch",
              help="A good match", type="primary" if given == 1 else "secondary",
              on_click=record, args=(service, context, item, 1))
    row.button(":material/thumb_down:", key=f"{prefix}_down_{item_id}", width="stretch",
                help="A wrong match", type="primary" if given == -1 else "secondary",
                on_click=record, args=(service, context, item, -1))


def record(service: SearchService, context: dict, item: dict, verdict: int) -> None:
    """Store a verdict; a database problem is remembered as a message, never raised."""
    judgment = Judgment(query_kind=context["query_kind"], query_ref=context["query_ref"],
                        query_hash=context["query_hash"], crop=context["crop"],
                        filters=context["filters"], colour=context["colour"],
                        result_id=str(item["id"]),
                        rank=int(item.get("rank", 0)), distance=float(item["distance"]),
                        verdict=verdict, index_version=str(service.store.version or "?"))
    try:
        store_of(service).add(judgment, searched_image(service, context))
    except JudgmentsUnavailable as error:
        st.session_state[ERROR_KEY] = (f"Judgments are not saved: {error}. "
                                       "Searching works as before.")
        return
    st.session_state.pop(ERROR_KEY, None)
    st.session_state.setdefault("verdicts", {})[verdict_key(context, judgment.result_id)] = \
        verdict


def searched_image(service: SearchService, context: dict) -> bytes | None:
    """A small JPEG of the region that was searched (None for a product's own vector)."""
    if context.get("content") is None:
        return None
    try:
        image = open_image(context["content"], service.config.download.max_pixels)
        box = parse_crop(context["crop"]) if context["crop"] else None
        return query_image_bytes(crop_image(image, box))
    except (ImageError, ValueError):
        return None


def judgment_notice() -> None:
    message = st.session_state.get(ERROR_KEY)
    if message:
        st.warning(md(message), icon=":material/database_off:")


def judgments_section(service: SearchService) -> None:
    """Report page: judged precision@k per index version, every judgment, a CSV download."""
    k = service.config.evaluation.k
    st.subheader(f"Judged precision@{k}")
    try:
        table = store_of(service).table()
    except JudgmentsUnavailable as error:
        st.warning(f"Judgments cannot be read: {md(error)}.", icon=":material/database_off:")
        return
    if table.empty:
        st.caption("No judgments yet: use the thumbs on the result cards of the Search page.")
        return
    st.caption(f"Of the results people judged within the top {k}, the share with a thumbs up "
               "(each query and result counted once, with its latest verdict), per index "
               "version.")
    st.dataframe(judged_precision(table, k), hide_index=True, width="stretch",
                 column_config={f"precision_at_{k}": st.column_config.NumberColumn(
                     f"precision@{k}", format="%.3f")})
    judged = service.manifest.judgments
    if judged is not None and judged.asked:
        st.caption(f"This index still returns {judged.retained} of {judged.asked} approved "
                   f"matches in its top {judged.k} ({judged.share:.0%}; re-scored when it "
                   "was built).")
    with st.expander(f"All judgments ({len(table):,})"):
        shown = table.assign(verdict=table["verdict"].map({1: "up", -1: "down"}))
        st.dataframe(shown, hide_index=True, width="stretch")
    st.download_button("Download judgments (CSV)", table_csv(shown),
                       file_name="judgments.csv", mime="text/csv", key="judgments_csv",
                       icon=":material/download:", on_click="ignore")
