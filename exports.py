"""What leaves the app as CSV: shortlists and match tables, with http(s) links only (never a
server's file path) and no cell a spreadsheet would run as a formula."""

from __future__ import annotations

import pandas as pd

from util.urls import is_http_url

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # spreadsheet formula starts


def is_missing(value: object) -> bool:
    """None, '' or NaN (a missing catalog value)."""
    try:
        return value is None or value == "" or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def public_link(value: object) -> str:
    """An http(s) link a colleague can open, or '' (a server's file path is never exported)."""
    text = "" if is_missing(value) else str(value).strip()
    return text if is_http_url(text) else ""


def shortlist_row(item: dict, label_fields: list[str], query: str) -> dict:
    """What the shortlist keeps of one result."""
    row = {"id": str(item.get("id", "")), "name": str(item.get("name", "")),
           "distance": round(float(item.get("distance", 0.0)), 4), "band": item.get("band", "")}
    row.update({column: "" if is_missing(item.get(column)) else str(item.get(column))
                for column in label_fields})
    row["image_url"] = public_link(item.get("image_path"))
    row["product_url"] = public_link(item.get("product_url"))
    row["query"] = query
    return row


def _no_formula(value: object) -> object:
    """Spreadsheets run cells starting with = + - @ as formulas: such text gets a leading '."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_START) else value


def shortlist_csv(rows: list[dict], label_fields: list[str]) -> bytes:
    """The shortlist as UTF-8 CSV: id, name, distance, band, labels, image_url, product_url,
    query (links only where the catalog gave http(s) links; never file paths)."""
    columns = ["id", "name", "distance", "band", *label_fields, "image_url", "product_url",
               "query"]
    table = pd.DataFrame(rows, columns=columns)
    text_columns = [c for c in columns if c != "distance"]
    table[text_columns] = table[text_columns].map(_no_formula)
    return table.to_csv(index=False).encode("utf-8")


def table_csv(table: pd.DataFrame) -> bytes:
    """Any table as UTF-8 CSV, text cells that a spreadsheet would run as formulas defused."""
    text_columns = [c for c in table.columns if table[c].dtype == object]
    safe = table.copy()
    safe[text_columns] = safe[text_columns].map(_no_formula)
    return safe.to_csv(index=False).encode("utf-8")
