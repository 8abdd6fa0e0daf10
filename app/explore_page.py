"""The Explore page: the catalog map; a click searches with that product."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app.cache import map_frame
from app.charts import group_rare, is_colour_column, legend_scale
from app.display import column_title, md, picked_id
from app.state import explore_with_item
from app.widgets import answer, run_item_query, sidebar
from search import SearchService


def explore_page(service: SearchService, service_key: str) -> None:
    sidebar(service, service_key)
    st.title("Catalog map")
    frame = map_frame(service, service_key)
    label_fields = [c for c in service.config.dataframe.label_fields if c in frame]
    st.caption(f"Each point is a product ({len(frame):,} shown of {service.size:,}), "
               "placed by visual similarity. Click a point to search with that product.")
    if frame.empty:
        st.info("This index has no map.")
        return
    titles = {c: column_title(c, service.config.ui.column_names) for c in label_fields}
    colour = st.selectbox("Colour by", label_fields, key="map_colour",
                          format_func=titles.get) if label_fields else None
    top = service.config.ui.map_top_classes
    if colour and frame[colour].nunique() > top:
        st.caption(f"The {top} most common {md(titles[colour].lower())} classes have their own "
                   "colour; the rest are grey (“other”, ui.map_top_classes). Hover a point for "
                   "its own labels.")
    event = st.altair_chart(map_chart(frame, colour, titles, top), key="map",
                            on_select="rerun", selection_mode="pick", width="stretch")
    remember_pick(picked_id(event))
    item_id = st.session_state.get("explore_item")
    if not item_id:
        return
    answer(service, lambda k, filters: run_item_query(service, service_key, item_id, k, filters),
           on_more=explore_with_item, prefix="x")


def remember_pick(item_id: str | None) -> None:
    """A new click on the map replaces the product searched with; a rerun keeps the last one."""
    if item_id and item_id != st.session_state.get("explore_last_pick"):
        st.session_state["explore_item"] = item_id
    st.session_state["explore_last_pick"] = item_id


def map_chart(frame: pd.DataFrame, colour: str | None, titles: dict[str, str],
              top: int) -> alt.Chart:
    """The map; coloured by `colour`'s `top` most common classes (colour names in their own
    colours), the rest grouped into "other"."""
    label_fields = list(titles)
    safe = {column: f"label_{i}" for i, column in enumerate(label_fields)}
    data = frame[["id", "name", "map_x", "map_y", *label_fields]].rename(columns=safe)
    data = data.astype({"id": str, "name": str})
    pick = alt.selection_point(name="pick", fields=["id"], on="click")
    encoding = {
        "x": alt.X("map_x:Q", axis=None), "y": alt.Y("map_y:Q", axis=None),
        "tooltip": [alt.Tooltip("name:N", title="Name"), alt.Tooltip("id:N", title="Id"),
                    *(alt.Tooltip(f"{safe[c]}:N", title=titles[c]) for c in label_fields)],
        "opacity": alt.when(pick).then(alt.value(0.85)).otherwise(alt.value(0.35)),
    }
    if colour:
        data["legend"] = group_rare(frame[colour], top).to_numpy()
        domain, colours = legend_scale(data["legend"], is_colour_column(frame[colour]))
        encoding["color"] = alt.Color(
            "legend:N", title=titles[colour], scale=alt.Scale(domain=domain, range=colours),
            legend=alt.Legend(orient="bottom", columns=2, symbolLimit=0, labelLimit=160,
                              symbolStrokeColor="#666", symbolStrokeWidth=0.5))
    return (alt.Chart(data).mark_circle(size=45, stroke="#666", strokeWidth=0.3)
            .encode(**encoding).add_params(pick).properties(height=520))
