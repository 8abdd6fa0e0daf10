"""What the pages show, as plain functions (no Streamlit): escaped text, labels, safe links,
the example gallery, thumbnails, map picks."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd

from exports import is_missing, public_link

THUMB_SIDE = 320
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=])")


def md(text: object) -> str:
    """Catalog or user text made inert for st.markdown: every Markdown character escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def markdown_link(text: object, url: str) -> str:
    """A Markdown link whose text is inert and whose address cannot end the link early."""
    address = "".join(f"%{ord(c):02X}" if c in "()<>[] \"'\\" or ord(c) < 33 else c
                      for c in url)
    return f"[{md(text)}]({address})"


def filters_key(filters: dict[str, list[str]]) -> tuple:
    """A hashable, order-free form of the filters; columns with no values are dropped."""
    return tuple(sorted((column, tuple(sorted(values))) for column, values in filters.items()
                        if values))


def column_title(column: str, names: dict[str, str] | None = None) -> str:
    """A label column's display name: ui.column_names, else from the column name
    ('articleType' → 'Article type', 'master_category' → 'Master category')."""
    if names and names.get(column):
        return names[column]
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", column).replace("_", " ").split()
    text = " ".join(words).lower()
    return text[:1].upper() + text[1:]


def top_classes(predicted: dict) -> dict[str, str]:
    """The most likely class per task."""
    return {task: str(top[0][0]) for task, top in predicted.items() if top}


def predicted_line(predicted: dict) -> str:
    """e.g. 'Tshirt 92% · Blue 71% · Men 98%' (Markdown-escaped)."""
    return " · ".join(f"{md(top[0][0])} {top[0][1]:.0%}" for top in predicted.values() if top)


def reference_labels(product: dict | None, predicted: dict, label_fields: list[str]
                     ) -> tuple[dict[str, str], str]:
    """What ✓ on a result compares with, and a caption saying so: the query product's own
    catalog labels when the query is a catalog product, else the model's guesses."""
    if product:
        labels = {column: str(product[column]) for column in label_fields
                  if not is_missing(product.get(column))}
        if labels:
            return labels, ("✓ on a result marks a label equal to this product's own catalog "
                            "labels (" + " · ".join(md(v) for v in labels.values()) + ").")
    return top_classes(predicted), ("✓ on a result marks a label equal to the model's guess "
                                    "above (the query is not a catalog product).")


def label_line(row: dict, label_fields: list[str], reference: dict[str, str]) -> str:
    """The item's labels, each marked ✓ where it equals the reference label of its column."""
    parts = []
    for column in label_fields:
        value = row.get(column)
        if is_missing(value):
            continue
        parts.append(md(value) + (" ✓" if reference.get(column) == str(value) else ""))
    return " · ".join(parts)


def safe_link(url: object) -> str | None:
    """An http(s) product link, or None (javascript: and other schemes are never linked)."""
    return public_link(url) or None


def gallery_rows(items: pd.DataFrame, size: int, column: str | None, seed: int = 0,
                 first: list[str] | tuple[str, ...] = ()) -> list[int]:
    """`size` row positions for the example gallery: one product of each class of `column`
    named in `first` (in that order, classes the catalog lacks skipped), then one of each of the
    most common classes, most common first (then a second round, ...); which product of a class
    is a seeded choice, so the same catalog and seed give the same gallery."""
    if size <= 0 or items.empty:
        return []
    wanted = ["id"] + ([column] if column and column in items and column != "id" else [])
    table = items[wanted].assign(_row=range(len(items))).sort_values("id", kind="stable")
    table = table.assign(_draw=np.random.default_rng(seed).permutation(len(table)))
    if column and column in table:
        groups = table[column].astype(str)
        counts = groups.map(groups.value_counts())
        chosen = {name: place for place, name in enumerate(dict.fromkeys(map(str, first)))}
        table = table.assign(_count=counts, _group=groups,
                             _chosen=groups.map(chosen).fillna(len(chosen)))
        table = table.sort_values("_draw", kind="stable")
        table = table.assign(_rank=table.groupby("_group").cumcount())
        table = table.sort_values(["_rank", "_chosen", "_count", "_group"],
                                  ascending=[True, True, False, True], kind="stable")
    else:
        table = table.sort_values("_draw", kind="stable")
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
