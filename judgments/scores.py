"""What the judgments say about an index: judged precision@k per index version, and how many
approved matches a new index still returns in its top k (the re-score `build_index.py` runs)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pandas as pd

from judgments.store import QUERY_FIELDS, latest_verdicts

log = logging.getLogger(__name__)

# query fields (as in the table) + k → the ids of the new index's top k for that query, or None
# when the query cannot be asked again (its image was not kept, its product is gone)
TopK = Callable[[dict, int], list[str] | None]


def judged_precision(table: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per index version: results judged within the top k, thumbs up, down and precision@k
    (thumbs up / judged), counting each (query, result) once with its latest verdict."""
    columns = ["index_version", "judged", "up", "down", f"precision_at_{k}"]
    latest = latest_verdicts(table)
    if latest.empty:
        return pd.DataFrame(columns=columns)
    top = latest[latest["rank"] <= k]
    rows = []
    for version, group in top.groupby("index_version", sort=False):
        up = int((group["verdict"] > 0).sum())
        rows.append({"index_version": version, "judged": len(group), "up": up,
                     "down": len(group) - up, f"precision_at_{k}": up / len(group)})
    frame = pd.DataFrame(rows, columns=columns)
    first_seen = latest.groupby("index_version")["id"].min()
    return frame.sort_values("index_version", key=lambda v: v.map(first_seen)).reset_index(
        drop=True)


def approved_pairs(table: pd.DataFrame) -> pd.DataFrame:
    """(query, result) pairs whose latest verdict, over every index version, is a thumbs up."""
    if table.empty:
        return table
    keys = [*QUERY_FIELDS, "result_id"]
    latest = table.sort_values("id").drop_duplicates(keys, keep="last")
    return latest[latest["verdict"] > 0].reset_index(drop=True)


def rescore(table: pd.DataFrame, top_k: TopK, k: int) -> dict:
    """Of the matches people approved, how many does `top_k` (the new index) still return in its
    top k: {k, approved, retained, share, unanswerable} (share None when nothing was approved)."""
    approved = approved_pairs(table)
    retained = unanswerable = 0
    for query, pairs in (approved.groupby(QUERY_FIELDS, sort=False) if len(approved) else []):
        fields = dict(zip(QUERY_FIELDS, query, strict=True))
        fields["filters"] = json.loads(fields["filters"] or "{}")
        found = top_k(fields, k)
        if found is None:
            unanswerable += len(pairs)
            continue
        retained += int(pairs["result_id"].isin(found).sum())
    asked = len(approved) - unanswerable
    return {"k": k, "approved": len(approved), "asked": asked, "retained": retained,
            "share": retained / asked if asked else None, "unanswerable": unanswerable}
