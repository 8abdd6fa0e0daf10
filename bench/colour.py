"""How much colour matters: articleType and baseColour mAP@k for each colour setting (any /
similar / same) and colour source (the model's colour head / a colour histogram), through the
app's own query path (`SearchService.search_item`: the held-out product's vector, candidates
re-ranked by the colour term)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from colour_match import MODES
from config import load_config
from index_store.evaluate import evaluation_queries, retrieval_metrics
from search import SearchService

SOURCES = ("head", "histogram")


def evaluate_modes(service: SearchService, modes: list[str], tasks: list[str], k: int,
                   max_queries: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """{mode: {task: mAP@k}} over the model's held-out products, each searched with its own
    stored vector (itself excluded), as "More like this" does."""
    items = service.items
    rows, _ = evaluation_queries(items["id"], service.encoder.checkpoint.test_ids, max_queries,
                                 seed)
    labels = items[tasks]
    scores = {}
    for mode in modes:
        found = np.full((len(rows), k), -1, np.int64)
        for position, row in enumerate(rows):
            if position and position % 100 == 0:
                print(f"  {mode}: {position} of {len(rows)} queries", file=sys.stderr, flush=True)
            results = service.search_item(str(items["id"].iloc[row]), k, colour=mode).results
            found[position, :len(results)] = results["row"].to_numpy()[:k]
        metrics = retrieval_metrics(labels.iloc[rows].reset_index(drop=True), found, labels,
                                    tasks, k, query_rows=rows)
        scores[mode] = {task: round(metrics[task]["map_at_k"], 4) for task in tasks}
    return scores


def with_source(service: SearchService, source: str) -> SearchService:
    """The same model and index with another colour source (its own colour cache)."""
    config = service.config.model_copy(deep=True)
    config.colour.source = source
    config.config_path = service.config.config_path
    return SearchService(config, service.encoder, service.store)


def markdown(result: dict) -> str:
    tasks, k = result["tasks"], result["k"]
    headers = " | ".join(f"{task} mAP@{k}" for task in tasks)
    lines = [f"| colour source | setting | {headers} | seconds |",
             "|---|---|" + "---|" * (len(tasks) + 1)]
    for row in result["rows"]:
        lines.append(f"| {row['source']} | {MODES[row['mode']]} | "
                     + " | ".join(f"{row[t]:.3f}" for t in tasks) + f" | {row['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    from common import config_parser, emit

    parser = config_parser(__doc__, "200 queries")
    parser.add_argument("--queries", type=int, default=None, help="default: evaluation.max_queries")
    parser.add_argument("--sources", default=",".join(SOURCES))
    args = parser.parse_args()
    config = load_config(args.config)
    if config.colour.column is None:
        parser.error("colour.column is null in this config: no colour control to measure")
    base = SearchService.load(config)
    tasks = [t for t in (config.calibration_column, config.colour.column) if t]
    queries = 200 if args.quick else (args.queries or config.evaluation.max_queries)
    rows = []
    for source in args.sources.split(","):
        service = with_source(base, source)
        for mode in MODES:
            began = time.perf_counter()
            scores = evaluate_modes(service, [mode], tasks, config.evaluation.k, queries)[mode]
            rows.append({"source": source, "mode": mode, **scores,
                         "seconds": time.perf_counter() - began})
            print(f"{source} {mode}: {scores}", file=sys.stderr, flush=True)
    result = {"k": config.evaluation.k, "queries": queries, "tasks": tasks, "rows": rows,
              "weights": {"similar": config.colour.similar_weight,
                          "same": config.colour.same_weight},
              "candidates": config.colour.candidates}
    emit(result, args.json, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
