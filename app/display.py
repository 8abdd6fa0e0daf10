"""What the pages show, as plain functions (no Streamlit): escaped text, labels, safe links,
the example gallery, thumbnails, map picks."""

from __future__ import annotations

import io
import re

import pandas as pd

from search import is_missing
from util.urls import is_http_url

THUMB_SIDE = 320
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=])")


def md(text: object) -> str:
    """Catalog or user text made inert for st.markdown: every Markdown character escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def filters_key(filters: dict[str, list[str]]) -> tuple:
    """A hashable, order-free form of the filters; columns with no values are dropped."""
    return tuple(sorted((column, tuple(sorted(values))) for column, values in filters.items()
                        if values))


def top_classes(predicted: dict) -> dict[str, str]:
    """The most likely class per task."""
    return {task: str(top[0][0]) for task, top in predicted.items() if top}


def predicted_line(predicted: dict) -> str:
    """e.g. 'Tshirt 92% · Blue 71% · Men 98%' (Markdown-escaped)."""
    return " · ".join(f"{md(top[0][0])} {top[0][1]:.0%}" for top in predicted.values() if top)


def label_line(row: dict, label_fields: list[str], top: dict[str, str]) -> str:
    """The item's labels, each marked ✓ where it equals the query's predicted class."""
    parts = []
    for column in label_fields:
        value = row.get(column)
        if is_missing(value):
            continue
        parts.append(md(value) + (" ✓" if top.get(column) == str(value) else ""))
    return " · ".join(parts)


def safe_link(url: object) -> str | None:
    """An http(s) product link, or None (javascript: and other schemes are never linked)."""
    text = "" if is_missing(url) else str(url).strip()
    return text if is_http_url(text) else None


def gallery_rows(items: pd.DataFrame, size: int, column: str | None) -> list[int]:
    """`size` row positions, deterministic and varied: round-robin over `column`'s classes."""
    if size <= 0 or items.empty:
        return []
    table = items.assign(_row=range(len(items))).sort_values("id", kind="stable")
    if column and column in table:
        groups = table[column].astype(str)
        table = table.assign(_rank=table.groupby(groups).cumcount(), _group=groups)
        table = table.sort_values(["_rank", "_group", "id"], kind="stable")
    return table["_row"].head(size).tolist()


def thumbnail_bytes(image) -> bytes:
    """A small JPEG of a PIL image."""
    small = image.copy()
    small.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def picked_id(event: object, name: str = "pick") -> str | None:
    """The product id of a point picked on the map, from st.altair_chart's selection event."""
    selection = getattr(event, "selection", None)
    if selection is None and isinstance(event, dict):
        selection = event.get("selection")
    points = (selection or {}).get(name) or []
    first = points[0] if isinstance(points, list) and points else None
    return str(first["id"]) if isinstance(first, dict) and "id" in first else None
