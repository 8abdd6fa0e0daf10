"""The search as shown, measured: held-out products searched through `SearchService` (their
own images as pasted photos, re-ranked as configured), scored like the vector's evaluation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from colour_match import MODES
from index_store.evaluate import evaluation_queries, retrieval_metrics
from search import SearchService
from vectorizer.images import ImageError, open_image

log = logging.getLogger(__name__)

IMAGE_QUERIES = "own image, searched as a pasted photo"


def found_rows(service: SearchService, rows: Sequence[int], mode: str | None, k: int,
               queries: str = "image",
               alter: Callable[[Image.Image], Image.Image] | None = None) -> np.ndarray:
    """[len(rows), k] result rows per query (-1 where fewer came back, or where the query's
    image cannot be read); the query's own product never counts (an image query finds itself
    as "the same product"); `alter` changes each query image first (bench/robustness.py)."""
    items = service.items
    found = np.full((len(rows), k), -1, np.int64)
    for position, row in enumerate(rows):
        if queries == "image":
            try:
                image = open_image(Path(str(items["image_file"].iloc[row])),
                                   service.config.download.max_pixels)
            except ImageError as error:
                log.warning("query row %d left out: %s", row, error)
                continue
            image = alter(image) if alter else image
            results = service.search_image(image, k + 1, colour=mode).results
        else:
            results = service.search_item(str(items["id"].iloc[row]), k, colour=mode).results
        others = [r for r in results["row"].to_numpy() if r != row][:k]
        found[position, :len(others)] = others
    return found


def shown_settings(service: SearchService) -> dict:
    """What re-ranks the search as shown: the default colour mode and source, label_match."""
    colour = service.config.colour
    mode = colour.default if service.has_colour else "any"
    return {"colour": MODES[mode] + ("" if mode == "any" else f" ({colour.source})"),
            "label_match": {column: service.config.label_match.weights[column]
                            for column in service.label_columns}}


def search_scores(service: SearchService, rows: Sequence[int], tasks: Sequence[str], k: int,
                  mode: str | None = None, queries: str = "image",
                  alter: Callable[[Image.Image], Image.Image] | None = None) -> dict:
    """`retrieval_metrics` (mAP@k, P@k per task and class) of the catalog `rows` searched as
    `found_rows` searches them, the rows' own labels as the truth."""
    labels = service.items[list(tasks)]
    found = found_rows(service, rows, mode, k, queries, alter)
    return retrieval_metrics(labels.iloc[rows].reset_index(drop=True), found, labels, tasks, k,
                             query_rows=rows)


def shown_search_metrics(service: SearchService, *, tasks: Sequence[str], k: int,
                         test_ids: set[str], max_queries: int, seed: int) -> dict:
    """mAP@k and P@k per task of the search as a merchandiser sees it, on the same held-out
    queries as `index_store.evaluate.evaluate_index` (with the same seed)."""
    items = service.items
    rows, source = evaluation_queries(items["id"], test_ids, max_queries, seed)
    tasks = [task for task in tasks if task in items]
    return {"k": k, "queries": len(rows), "query_source": f"{source}: {IMAGE_QUERIES}",
            "settings": shown_settings(service), "tasks": search_scores(service, rows, tasks, k)}


def describe_settings(settings: dict) -> str:
    """`shown_settings` in words: "Similar colour (catalog); label match articleType 0.2"."""
    weights = settings.get("label_match") or {}
    labels = ", ".join(f"{column} {weight:g}" for column, weight in weights.items())
    return f"{settings.get('colour', '?')}; " + (f"label match {labels}" if labels
                                                  else "no label match")
