"""What the Explore and Report charts draw, as plain functions (no Streamlit): colour names in
their own colours, rare classes grouped into "other", per-class scores with query counts."""

from __future__ import annotations

import math

import pandas as pd

OTHER = "other"
OTHER_COLOUR = "#c8c8c8"
MISSING = "(none)"
COLOUR_COLUMN_SHARE = 0.8  # a column is drawn in its own colours when this share are colour names
# Catalog colour names → what to draw (a garment's "Grey" is not a web "gray"); keys lower case.
NAMED_COLOURS = {
    "black": "#222222", "white": "#ffffff", "off white": "#f4f1e8", "cream": "#f5efd6",
    "grey": "#8c8c8c", "gray": "#8c8c8c", "grey melange": "#a9a9a9", "charcoal": "#36454f",
    "silver": "#c0c0c0", "steel": "#7b8a99", "metallic": "#aaa9ad", "taupe": "#8b8589",
    "red": "#d62728", "maroon": "#800020", "burgundy": "#800020", "rust": "#b7410e",
    "orange": "#f28c28", "peach": "#ffcba4", "coral": "#ff7f50", "yellow": "#f2d13a",
    "mustard": "#d9a520", "gold": "#d4af37", "khaki": "#c3b091", "beige": "#e8d9b5",
    "tan": "#d2b48c", "skin": "#e0b59a", "nude": "#e3bc9a", "brown": "#8b5a2b",
    "coffee brown": "#6f4e37", "mushroom brown": "#a68b6d", "bronze": "#a97142",
    "copper": "#b87333", "green": "#2e8b3a", "olive": "#708238", "lime green": "#7ccd32",
    "sea green": "#2e8b57", "fluorescent green": "#39e61a", "teal": "#1a8a8a",
    "turquoise blue": "#30b5c8", "blue": "#1f5fbf", "navy blue": "#1f2a60", "navy": "#1f2a60",
    "purple": "#7b3fa0", "violet": "#8f5fbf", "lavender": "#b7a6d9", "mauve": "#c19aa6",
    "magenta": "#d0308f", "pink": "#f08cb4", "rose": "#e8748f",
}
PALETTE = ["#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2",
           "#ff9da6", "#9d755d", "#bab0ac", "#1f77b4", "#9467bd", "#8c564b", "#17becf",
           "#bcbd22", "#d62728", "#2ca02c", "#7f7f7f", "#aec7e8", "#ffbb78"]


def colour_of(name: object) -> str | None:
    """What to draw for a catalog colour name ('Navy Blue' → navy), None when it is not one."""
    return NAMED_COLOURS.get(" ".join(str(name).lower().split()))


def is_colour_column(values: pd.Series) -> bool:
    """True when most rows hold colour names (baseColour, colour…)."""
    known = values.dropna().astype(str).map(colour_of).notna()
    return bool(len(known) > 0 and known.mean() >= COLOUR_COLUMN_SHARE)


def group_rare(values: pd.Series, top: int) -> pd.Series:
    """The `top` most common classes kept, the rest (and missing values) renamed OTHER."""
    text = values.astype("string").fillna(MISSING)
    counts = text.value_counts()
    kept = [name for name in counts.index if name != MISSING][:top]
    return text.where(text.isin(kept), OTHER).astype(str)


def legend_scale(grouped: pd.Series, colour_names: bool) -> tuple[list[str], list[str]]:
    """Legend entries (most common first, OTHER last) and the colour of each: the colour a
    name means where the column holds colour names, else a palette; OTHER is light grey."""
    domain = [name for name in grouped.value_counts().index if name != OTHER]
    if (grouped == OTHER).any():
        domain.append(OTHER)
    colours, spare = [], iter(PALETTE * (1 + len(domain) // len(PALETTE)))
    for name in domain:
        named = colour_of(name) if colour_names else None
        colours.append(OTHER_COLOUR if name == OTHER else named or next(spare))
    return domain, colours


def per_class_table(per_class: dict, classes: list[str]) -> pd.DataFrame:
    """One row per class of the attribute: mAP, precision and the number of test queries,
    best first; classes the evaluation had no query for come last, marked, not left out."""
    rows = []
    for name in dict.fromkeys([*per_class, *classes]):
        scores = per_class.get(name)
        queries = int(getattr(scores, "queries", 0) or 0) if scores is not None else 0
        if scores is None or queries == 0:
            rows.append({"class": str(name), "mAP": math.nan, "precision": math.nan,
                         "queries": 0, "label": "no test queries"})
            continue
        rows.append({"class": str(name), "mAP": float(scores.map_at_k),
                     "precision": float(scores.precision_at_k), "queries": queries,
                     "label": f"{scores.map_at_k:.2f} (n={queries:,})"})
    table = pd.DataFrame(rows, columns=["class", "mAP", "precision", "queries", "label"])
    return table.sort_values(["mAP", "queries", "class"], ascending=[False, False, True],
                             na_position="last", kind="stable").reset_index(drop=True)
