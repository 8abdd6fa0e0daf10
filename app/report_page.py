"""The Report page: the index manifest (counts, model, recall, latency, mAP per attribute)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app.confidence import bands_section
from app.display import md
from app.judging import judgments_section
from contracts import IndexManifest
from search import SearchService


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
        quality_charts(manifest)
    bands_section(manifest)
    judgments_section(service)
    skipped_reasons(manifest.counts.skipped_reasons)


def quality_charts(manifest: IndexManifest) -> None:
    metrics = manifest.metrics
    tasks = metrics.tasks
    k = metrics.k or "k"
    st.subheader(f"Retrieval quality: mAP@{k} per attribute")
    st.caption(f"{metrics.queries or '?'} queries ({md(metrics.query_source)}); "
               "a result counts as relevant when it shares the query's attribute value.")
    per_task = pd.DataFrame([{"attribute": task, "mAP": values.map_at_k,
                              "precision": values.precision_at_k}
                             for task, values in tasks.items()])
    st.altair_chart(bar_chart(per_task, "attribute", k), width="stretch")
    st.subheader(f"mAP@{k} per class")
    task = st.selectbox("Attribute", list(tasks), key="report_task")
    per_class = pd.DataFrame([{"class": name, "mAP": values.map_at_k,
                               "precision": values.precision_at_k, "queries": values.queries}
                              for name, values in tasks[task].per_class.items()])
    if per_class.empty:
        st.caption("No per-class figures for this attribute.")
    else:
        st.altair_chart(bar_chart(per_class, "class", k), width="stretch")


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
    base = alt.Chart(frame).encode(
        y=alt.Y(f"{category}:N", sort="-x", title=None),
        x=alt.X("mAP:Q", scale=alt.Scale(domain=[0, 1]), title=f"mAP@{k}",
                axis=alt.Axis(format=".1f", tickCount=5)),
        tooltip=[alt.Tooltip(f"{category}:N"), alt.Tooltip("mAP:Q", format=".3f"),
                 alt.Tooltip("precision:Q", title=f"P@{k}", format=".3f")])
    bars = base.mark_bar(cornerRadiusEnd=3)
    text = base.mark_text(align="left", dx=4).encode(text=alt.Text("mAP:Q", format=".2f"))
    return (bars + text).properties(height=alt.Step(30))


def skipped_reasons(reasons: dict) -> None:
    if not reasons:
        return
    with st.expander(f"Why items were skipped ({sum(reasons.values()):,})"):
        table = pd.DataFrame({"reason": list(reasons), "items": list(reasons.values())})
        st.dataframe(table, hide_index=True, width="stretch")
