"""What re-ranking adds to the vector: the held-out products' mAP@k (product type, colour,
gender) for each setting of colour mode, colour source and label match, through the app's own
query path. `--queries image` (default) searches each product's own image as a pasted photo
(`SearchService.search_image`: the query's type and colour are the model's predictions);
`--queries item` searches its stored vector as "More like this" does (the product's own catalog
labels then steer the `catalog` settings, so those rows do not test the model)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import AppConfig, load_config
from index_store.evaluate import evaluation_queries
from search import SearchService
from search_quality import search_scores

# name: (colour mode, colour source, label match: "" off, "type" the type column alone, "all"
# the config's label_match.weights)
SETTINGS = {
    "vector alone": ("any", "head", ""),
    "similar colour (head)": ("similar", "head", ""),
    "same colour (head)": ("same", "head", ""),
    "similar colour (histogram)": ("similar", "histogram", ""),
    "same colour (histogram)": ("same", "histogram", ""),
    "similar colour (catalog)": ("similar", "catalog", ""),
    "same colour (catalog)": ("same", "catalog", ""),
    "type match": ("any", "head", "type"),
    "label match": ("any", "head", "all"),
    "label match + similar colour (catalog)": ("similar", "catalog", "all"),
}
DEFAULT_TYPE_WEIGHT = 0.2  # when the config matches no labels


def label_weights(config: AppConfig, which: str) -> dict[str, float]:
    """The label_match weights a setting uses (the type column at its weight, or all)."""
    column = config.calibration_column
    weights = dict(config.label_match.weights) or {column: DEFAULT_TYPE_WEIGHT}
    if which == "type":
        return {column: weights.get(column, DEFAULT_TYPE_WEIGHT)}
    return weights if which == "all" else {}


def variant(base: SearchService, source: str, weights: dict[str, float]) -> SearchService:
    """The same model and index with another colour source and label match."""
    config = base.config.model_copy(deep=True)
    config.colour.source = source
    config.label_match.weights = weights
    config.config_path = base.config.config_path
    return SearchService(config, base.encoder, base.store)


def evaluate(base: SearchService, names: list[str], tasks: list[str], k: int, max_queries: int,
             queries: str) -> list[dict]:
    items = base.items
    rows, _ = evaluation_queries(items["id"], base.encoder.checkpoint.test_ids, max_queries, 0)
    out = []
    for name in names:
        mode, source, matched = SETTINGS[name]
        service = variant(base, source, label_weights(base.config, matched))
        began = time.perf_counter()
        metrics = search_scores(service, rows, tasks, k, mode, queries)
        out.append({"setting": name, **{t: round(metrics[t]["map_at_k"], 4) for t in tasks},
                    "seconds": round(time.perf_counter() - began, 1)})
        print(out[-1], file=sys.stderr, flush=True)
    return out


def measured_tasks(config: AppConfig) -> list[str]:
    """The product type, the colour and every column label_match steers."""
    wanted = [config.calibration_column, config.colour.column, *config.label_match.weights]
    return [t for t in dict.fromkeys(wanted) if t and t in config.dataframe.label_fields]


def markdown(result: dict) -> str:
    tasks, k = result["tasks"], result["k"]
    lines = [f"| setting | {' | '.join(f'{t} mAP@{k}' for t in tasks)} | seconds |",
             "|---|" + "---|" * (len(tasks) + 1)]
    for row in result["rows"]:
        lines.append(f"| {row['setting']} | " + " | ".join(f"{row[t]:.3f}" for t in tasks)
                     + f" | {row['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    from common import config_parser, emit

    parser = config_parser(__doc__, "200 queries")
    parser.add_argument("--queries", choices=["image", "item"], default="image")
    parser.add_argument("--count", type=int, default=None, help="default: evaluation.max_queries")
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="comma-separated names of SETTINGS")
    args = parser.parse_args()
    config = load_config(args.config)
    if config.colour.column is None:
        parser.error("colour.column is null in this config: no colour control to measure")
    names = args.settings.split(",")
    unknown = [name for name in names if name not in SETTINGS]
    if unknown:
        parser.error(f"--settings: unknown {unknown}; known: {', '.join(SETTINGS)}")
    count = 200 if args.quick else (args.count or config.evaluation.max_queries)
    base = SearchService.load(config)
    rows = evaluate(base, names, measured_tasks(config), config.evaluation.k, count,
                    args.queries)
    result = {"k": config.evaluation.k, "queries": args.queries, "count": count,
              "tasks": measured_tasks(config), "rows": rows,
              "weights": {"similar": config.colour.similar_weight,
                          "same": config.colour.same_weight,
                          "labels": label_weights(config, "all")},
              "candidates": config.colour.candidates}
    emit(result, args.json, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
