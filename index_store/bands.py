"""Distance bands calibrated on the build's held-out queries: how far a best match may be before
its product type is more often wrong than right.

For each held-out query we know the distance to its best match and whether that match has the
query's type (e.g. articleType). Sorted by distance, that gives two thresholds:

* ``confident``: the largest distance up to which best matches had the query's type in at least
  ``confident_share`` of the queries (all queries that close, counted together);
* ``no_match``: the smallest distance beyond which best matches had the query's type in fewer
  than ``no_match_share`` of the (farther) queries. When no such distance exists (the model is
  right often enough at every distance seen), it is the 99th percentile of the best-match
  distances: a query farther than that is unlike what the catalog's own products look like.
"""

from __future__ import annotations

import numpy as np

FALLBACK_PERCENTILE = 99


def calibrate_bands(top_distances: np.ndarray, top_correct: np.ndarray, *, column: str,
                    confident_share: float, no_match_share: float, min_queries: int) -> dict:
    """The bands (a `contracts.CalibratedBands` dict) from best-match distances and hits."""
    order = np.argsort(np.asarray(top_distances, dtype=np.float64), kind="stable")
    distances = np.asarray(top_distances, dtype=np.float64)[order]
    correct = np.asarray(top_correct, dtype=bool)[order]
    n = len(distances)
    bands = {"column": column, "queries": n, "top1_share": float(correct.mean()) if n else None,
             "confident_share": confident_share, "no_match_share": no_match_share}
    if n == 0:
        return dict(bands, confident=0.0, no_match=0.0, no_match_basis="no queries")
    count = np.arange(1, n + 1)
    below = np.cumsum(correct) / count                      # share among the i+1 closest
    ok = np.flatnonzero((count >= min(min_queries, n)) & (below >= confident_share))
    confident_at = int(ok[-1]) if len(ok) else -1
    bands.update(confident=float(distances[confident_at]) if confident_at >= 0 else 0.0,
                 confident_queries=confident_at + 1,
                 confident_share_seen=float(below[confident_at]) if confident_at >= 0 else None)
    tail_count = n - count                                   # queries farther than distances[i]
    tail_hits = correct.sum() - np.cumsum(correct)
    tail = np.divide(tail_hits, tail_count, out=np.ones(n), where=tail_count > 0)
    weak = np.flatnonzero((tail_count >= min_queries) & (tail < no_match_share))
    if len(weak):
        at = int(weak[0])
        bands.update(no_match=float(distances[at]), no_match_basis="share",
                     no_match_queries=int(tail_count[at]), no_match_share_seen=float(tail[at]))
    else:
        bands.update(no_match=float(np.percentile(distances, FALLBACK_PERCENTILE)),
                     no_match_basis=f"percentile {FALLBACK_PERCENTILE}")
    bands["no_match"] = max(bands["no_match"], bands["confident"])
    return bands
