"""The Report page: the index manifest (counts, model, recall, latency, mAP per attribute)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app.charts import per_class_table
from app.confidence import bands_section
from app.display import column_title, md
from app.judging import judgments_section
from contracts import IndexManifest, IndexMetrics
from search import SearchService
from search_quality import describe_settings, shown_settings


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
    else:
        quality_charts(service, manifest)
    bands_section(manifest)
    judgments_section(service)
    skipped_reasons(manifest.counts.skipped_reasons)


def quality_charts(service: SearchService, manifest: IndexManifest) -> None:
    metrics = manifest.metrics
    tasks = metrics.tasks
    k = metrics.k or "k"
    titles = service.config.ui.column_names
    st.subheader(f"Retrieval quality: mAP@{k} per attribute")
    vector = score_rows(tasks, "vector", titles)
    rows: list[dict] = []
    shown = metrics.shown
    if shown is not None and shown.tasks:
        rows = score_rows({task: values for task, values in shown.tasks.items() if task in tasks},
                          "search as shown", titles)
        st.caption(shown_caption(service, metrics))
    else:
        st.caption(f"{metrics.queries or '?'} queries ({md(metrics.query_source)}); "
                   "a result counts as relevant when it shares the query's attribute value. "
                   "The search as shown (re-ranked by colour and labels) was not measured for "
                   "this index: rebuild it with build_index.py.")
    chart = pd.DataFrame(rows + vector)
    st.altair_chart(bar_chart(chart, "attribute", k), width="stretch")
    per_class_chart(service, metrics)


def per_class_chart(service: SearchService, metrics: IndexMetrics) -> None:
    """mAP@k per class of one attribute, of the search as shown or of the vector."""
    k, titles = metrics.k or "k", service.config.ui.column_names
    st.subheader(f"mAP@{k} per class")
    tasks = metrics.tasks
    task = st.selectbox("Attribute", list(tasks), key="report_task",
                        format_func=lambda column: column_title(column, titles))
    shown = metrics.shown.tasks.get(task) if metrics.shown is not None else None
    if shown is not None and shown.per_class:
        measure = st.segmented_control("Measured", ["search as shown", "vector"],
                                       default="search as shown", key="report_measure")
        scores = tasks[task] if measure == "vector" else shown
    else:
        scores = tasks[task]
    classes = (sorted(service.items[task].dropna().astype(str).unique())
               if task in service.items else [])
    per_class = per_class_table(scores.per_class, classes)
    if per_class.empty:
        st.caption("No per-class figures for this attribute.")
    else:
        st.caption("Each bar: the class's mAP and n, the number of test queries it rests on; "
                   "a score from a few queries is uncertain.")
        st.altair_chart(bar_chart(per_class, "class", k), width="stretch")
        unscored = per_class.loc[per_class["queries"] == 0, "class"].tolist()
        if unscored:
            st.caption(f"No test queries, so not scored ({len(unscored)}): "
                       + ", ".join(md(name) for name in unscored) + ".")


def score_rows(scores: dict, measure: str, titles: dict) -> list[dict]:
    """One chart row per attribute: its title, mAP and precision, and the bar's label."""
    return [{"attribute": column_title(task, titles), "measure": measure,
             "mAP": values.map_at_k, "precision": values.precision_at_k,
             "label": f"{values.map_at_k:.2f}"} for task, values in scores.items()]


def shown_caption(service: SearchService, metrics: IndexMetrics) -> str:
    """What the two bars of each attribute measure, and whether the config still matches."""
    shown = metrics.shown
    now = shown_settings(service)
    changed = ("" if now == shown.settings else
               f" The config re-ranks differently now ({md(describe_settings(now))}): "
               "rebuild to measure it.")
    return (f"{shown.queries:,} held-out products; a result counts as relevant when it shares the "
            "query's attribute value. **Search as shown**: each product's own image searched "
            f"as a pasted photo, re-ranked as configured at build "
            f"({md(describe_settings(shown.settings))}). **Vector**: its stored vector "
            f"through the index, no re-ranking ({md(metrics.query_source)}).{changed}")


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
    """Horizontal bars in the frame's order, each labelled with its `label` text; long names
    are shown whole; with a `measure` column, one bar per measure in each category."""
    data = frame.assign(position=frame["mAP"].fillna(0.0))
    paired = "measure" in data and data["measure"].nunique() > 1
    base = alt.Chart(data).encode(
        y=alt.Y(f"{category}:N", sort=list(dict.fromkeys(data[category])), title=None,
                axis=alt.Axis(labelLimit=400)),
        x=alt.X("position:Q", scale=alt.Scale(domain=[0, 1.3]), title=f"mAP@{k}",
                axis=alt.Axis(format=".1f", values=[0, 0.2, 0.4, 0.6, 0.8, 1.0])),
        tooltip=[alt.Tooltip(f"{category}:N"),
                 *([alt.Tooltip("measure:N")] if paired else []),
                 alt.Tooltip("mAP:Q", format=".3f"),
                 alt.Tooltip("precision:Q", title=f"P@{k}", format=".3f"),
                 *([alt.Tooltip("queries:Q", title="test queries")]
                   if "queries" in data else [])])
    if paired:
        order = list(dict.fromkeys(data["measure"]))
        base = base.encode(
            yOffset=alt.YOffset("measure:N", sort=order),
            color=alt.Color("measure:N", sort=order, title=None,
                            legend=alt.Legend(orient="top")))
    bars = base.mark_bar(cornerRadiusEnd=3)
    text = base.mark_text(align="left", dx=4, color="gray").encode(text=alt.Text("label:N"))
    return (bars + text).properties(height=alt.Step(22 if paired else 30))


def skipped_reasons(reasons: dict) -> None:
    if not reasons:
        return
    with st.expander(f"Why items were skipped ({sum(reasons.values()):,})"):
        table = pd.DataFrame({"reason": list(reasons), "items": list(reasons.values())})
        st.dataframe(table, hide_index=True, width="stretch")
