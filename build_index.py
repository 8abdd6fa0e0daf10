"""Offline pipeline: catalog → vectors (cached) → index → evaluation → atomic save."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from config import AppConfig, ConfigError, load_config
from contracts import (
    BuildCounts,
    IndexManifest,
    IndexMetrics,
    JudgmentScores,
    ModelSummary,
    index_fingerprint,
)
from index_store.base import IndexStoreError
from index_store.colours import ItemDistributions
from index_store.evaluate import evaluate_index
from index_store.location import index_version, new_backend, save_index
from index_store.milvus_tune import tune_milvus
from index_store.store import IndexStore
from index_store.tune import tune_saved_index
from ingest.catalog import CatalogError, load_catalog, localize_images
from judgments.replay import rescore_judgments
from search import SearchService
from search_quality import describe_settings, shown_search_metrics
from util.files import file_sha256
from util.urls import is_http_url
from vectorizer.checkpoint import CheckpointError
from vectorizer.device import keep_freed_memory
from vectorizer.encoder import Encoder
from vectorizer.vector_cache import VectorCache

log = logging.getLogger("build_index")


class StepTimer:
    """Wall-clock seconds per named pipeline step, printed as they finish."""

    def __init__(self, quiet: bool) -> None:
        self.seconds: dict[str, float] = {}
        self.quiet = quiet

    @contextlib.contextmanager
    def step(self, name: str):
        began = time.perf_counter()
        if not self.quiet:
            print(f"→ {name} …", flush=True)
        yield
        self.seconds[name] = round(time.perf_counter() - began, 3)


def content_keys(paths: list[str], reasons: list[str]) -> list[str]:
    """sha256 of each image file's bytes ('' where the file is missing or unreadable)."""
    keys = []
    for index, path in enumerate(paths):
        if reasons[index]:
            keys.append("")
            continue
        try:
            keys.append(file_sha256(path))
        except OSError as error:
            reasons[index] = f"cannot read file: {error.strerror or error}"
            keys.append("")
    return keys


def safe_name(text: str) -> str:
    """A column name as a folder-name part."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:60]


def colour_task(config: AppConfig, encoder: Encoder) -> str | None:
    """The head whose class probabilities are stored with the index for the colour control
    (none for Milvus: the app does not re-rank by colour there)."""
    column = config.colour.column
    wanted = config.colour.source == "head" and config.backend != "milvus"
    return column if wanted and column in encoder.classes else None


@dataclass
class Vectorized:
    vectors: np.ndarray               # [n, dim], NaN rows where the image was skipped
    computed: int                     # rows the model ran on (the rest came from the caches)
    colour_task: str | None = None    # the head whose probabilities `colours` holds
    colours: np.ndarray | None = None  # [n, classes], NaN rows where skipped


def vectorize(config: AppConfig, encoder: Encoder, paths: list[str], keys: list[str],
              reasons: list[str], rebuild: bool, quiet: bool) -> Vectorized:
    """Vectors (and colour-head distributions) for every row, NaN where skipped, computing
    only what the caches lack."""
    task = colour_task(config, encoder)
    folder = Path(config.paths.vectors_path)
    caches = [VectorCache(folder, encoder.cache_key)]
    if task:  # a sibling cache: the same model's `task` probabilities, by the same content key
        caches.append(VectorCache(folder, f"{encoder.cache_key}.{safe_name(task)}"))
    wanted = [row for row, key in enumerate(keys) if key]
    lookups = [cache.lookup([keys[row] for row in wanted]) for cache in caches]
    found = np.logical_and.reduce([hit for hit, _ in lookups]) & (not rebuild)
    missing = [row for row, hit in zip(wanted, found, strict=True) if not hit]
    embedded = encoder.embed_paths(
        [paths[row] for row in missing], batch_size=config.model.batch_size,
        workers=config.model.num_workers, max_pixels=config.download.max_pixels,
        progress=None if quiet else "vectorize", task=task)
    for position, row in enumerate(missing):
        reasons[row] = embedded.reasons[position]
    hits = [row for row, hit in zip(wanted, found, strict=True) if hit]
    good = [(row, position) for position, row in enumerate(missing)
            if not embedded.reasons[position]]
    computed = [embedded.vectors, embedded.task_probabilities][:len(caches)]
    outputs = [_merge_rows(len(paths), hits, cached[found], good, new, cache,
                           [keys[row] for row, _ in good])
               for cache, (_, cached), new in zip(caches, lookups, computed, strict=True)]
    return Vectorized(outputs[0], len(missing), task, outputs[1] if task else None)


def _merge_rows(count: int, hits: list[int], cached: np.ndarray, good: list[tuple[int, int]],
                new: np.ndarray | None, cache: VectorCache, new_keys: list[str]) -> np.ndarray:
    """[count, width] of cached rows at `hits` and new rows at `good`'s rows (NaN elsewhere);
    the new rows are added to the cache."""
    width = cached.shape[1] if hits else (new.shape[1] if new is not None else 0)
    matrix = np.full((count, width), np.nan, dtype=np.float32)
    if hits:
        matrix[hits] = cached
    if good and new is not None:
        new_rows = new[[position for _, position in good]]
        matrix[[row for row, _ in good]] = new_rows
        cache.add(new_keys, new_rows)
        cache.save()
    return matrix


def write_skipped(items: pd.DataFrame, reasons: list[str], path: Path) -> pd.DataFrame:
    skipped = items.loc[[bool(r) for r in reasons], ["id", "image_path"]].copy()
    skipped["reason"] = [r for r in reasons if r]
    path.parent.mkdir(parents=True, exist_ok=True)
    skipped.to_csv(path, index=False)
    return skipped


def build(config: AppConfig, *, rebuild: bool = False, quiet: bool = False) -> dict:
    """Run every step and return the summary (also written into manifest.json)."""
    timer = StepTimer(quiet)
    keep_freed_memory()  # vectorizing reuses its large batch buffers instead of page-faulting
    with timer.step("load catalog"):
        items = load_catalog(config)
    with timer.step("fetch images"):
        paths, reasons = localize_images(items, config)
    with timer.step("load model"):
        encoder = Encoder.from_config(config)
    with timer.step("hash images"):
        keys = content_keys(paths, reasons)
    with timer.step("vectorize"):
        vectorized = vectorize(config, encoder, paths, keys, reasons, rebuild, quiet)
    root = Path(config.paths.ann_index_path)
    skipped = write_skipped(items, reasons, root / "skipped.csv")
    keep = np.array([not r for r in reasons])
    if not keep.any():
        raise CatalogError("no catalog image could be read; see " + str(root / "skipped.csv"))
    items_kept = items[keep].drop(columns=["image_ref"]).reset_index(drop=True)
    items_kept["image_file"] = [p for p, k in zip(paths, keep, strict=True) if k]
    vectors_kept = np.ascontiguousarray(vectorized.vectors[keep])
    colours = None if vectorized.colours is None else \
        ItemDistributions(vectorized.colour_task, vectorized.colours[keep])
    with timer.step("build index"):
        store = IndexStore.build(vectors_kept, items_kept, backend=new_backend(config),
                                 manifest={"fingerprint": index_fingerprint(config, encoder)},
                                 colours=colours)
    with timer.step("evaluate"):
        metrics = evaluate_index(
            store, tasks=config.task_columns, k=config.evaluation.k,
            recall_k=max(config.ann_index.k, 10), test_ids=encoder.checkpoint.test_ids,
            split=encoder.checkpoint.split_strategy, max_queries=config.evaluation.max_queries,
            seed=config.evaluation.seed, calibration=calibration(config))
    service = SearchService(config, encoder, store)
    with timer.step("evaluate the search as shown"):
        metrics["shown"] = shown_search_metrics(
            service, tasks=config.task_columns, k=config.evaluation.k,
            test_ids=encoder.checkpoint.test_ids, max_queries=config.evaluation.max_queries,
            seed=config.evaluation.seed)
    with timer.step("re-score judgments"):
        judged = rescore_judgments(service, config.evaluation.k)
    summary = {
        "items_in_catalog": len(items), "items_indexed": int(keep.sum()),
        "items_skipped": len(skipped),
        "skipped_reasons": skipped["reason"].value_counts().to_dict(),
        "vectors_computed": vectorized.computed,
        "vectors_from_cache": int(keep.sum()) - vectorized.computed,
        "metrics": metrics, "judgments": judged,
    }
    with timer.step("save"):
        store.manifest.update(make_manifest(config, encoder, summary, timer.seconds))
        version = save_index(store, config)
    version_dir = root / "versions" / version
    summary.update(version=version, step_seconds=timer.seconds,
                   index_bytes=folder_size(version_dir) if version_dir.is_dir() else 0,
                   skipped_file=str(root / "skipped.csv"))
    return summary


def calibration(config: AppConfig) -> dict | None:
    """What `evaluate_index` calibrates the distance bands on (None: no type column)."""
    column = config.calibration_column
    if column is None:
        return None
    return dict(config.evaluation.calibration.model_dump(), column=column)


def installed_version(package: str) -> str | None:
    """A package's installed version, read from its metadata (the package is not imported)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def make_manifest(config: AppConfig, encoder: Encoder, summary: dict, seconds: dict) -> dict:
    import torch

    checkpoint = encoder.checkpoint
    return IndexManifest(
        fingerprint=index_fingerprint(config, encoder),
        built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        config=json.loads(config.model_dump_json()),
        config_path=str(config.config_path),
        model=ModelSummary(backbone=checkpoint.backbone, checksum=encoder.checksum,
                           tasks={t: len(c) for t, c in checkpoint.tasks.items()},
                           val=checkpoint.metrics.get("val", {}), precision=encoder.precision),
        counts=BuildCounts(**{k: v for k, v in summary.items()
                              if k not in ("metrics", "judgments")}),
        metrics=IndexMetrics.model_validate(summary["metrics"]),
        judgments=summary["judgments"] and JudgmentScores.model_validate(summary["judgments"]),
        step_seconds=seconds,
        versions={"python": sys.version.split()[0], "torch": torch.__version__,
                  "nmslib": installed_version("nmslib"),
                  "pymilvus": installed_version("pymilvus"),
                  "numpy": np.__version__, "pandas": pd.__version__},
    ).as_dict()


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def dry_run(config: AppConfig) -> dict:
    """Validate config and catalog, and say what a build would do, without doing it."""
    items = load_catalog(config)
    root = Path(config.paths.ann_index_path)
    model = Path(config.paths.trained_model_path)
    return {"catalog": str(config.paths.images_dataframe_path), "items": len(items),
            "url_images": int(items["image_ref"].map(is_http_url).sum()),
            "model": str(model) + ("" if model.is_file() else " (missing: train it first)"),
            "index_folder": str(root), "current_version": index_version(config),
            "backend": config.backend, "space": config.ann_index.init_time.space}


def print_summary(summary: dict) -> None:
    metrics = summary["metrics"]
    print(f"indexed {summary['items_indexed']} of {summary['items_in_catalog']} items "
          f"({summary['items_skipped']} skipped, see {summary['skipped_file']}); "
          f"vectors computed {summary['vectors_computed']}, from cache "
          f"{summary['vectors_from_cache']}")
    print("steps (s): " + ", ".join(f"{k} {v:.1f}" for k, v in summary["step_seconds"].items()))
    print(f"index version {summary['version']}, {summary['index_bytes'] / 1e6:.1f} MB")
    k = metrics.get("k")
    for task, values in metrics.get("tasks", {}).items():
        print(f"  {task}: mAP@{k} {values['map_at_k']:.3f}, P@{k} {values['precision_at_k']:.3f}")
    shown = metrics.get("shown")
    if shown:
        print(f"  the search as shown ({describe_settings(shown['settings'])}), "
              f"{shown['queries']} queries by image: " + ", ".join(
                  f"{task} mAP@{k} {values['map_at_k']:.3f}"
                  for task, values in shown["tasks"].items()))
    if "recall_at_k" in metrics:
        print(f"  recall@{metrics['recall_k']} vs exact {metrics['recall_at_k']:.4f}; search p50 "
              f"{metrics['latency']['p50_ms']:.3f} ms, p99 {metrics['latency']['p99_ms']:.3f} ms "
              f"({metrics['queries']} queries: {metrics['query_source']})")
    bands = metrics.get("bands")
    if bands:
        print(f"  bands ({bands['column']}): best match of the query's type in "
              f">= {bands['confident_share']:.0%} up to distance {bands['confident']:.3f}; "
              f"'no confident match' beyond {bands['no_match']:.3f} ({bands['no_match_basis']})")
    judged = summary.get("judgments")
    if judged:
        share = "n/a" if judged["share"] is None else f"{judged['share']:.3f}"
        print(f"  judgments: {judged['retained']} of {judged['asked']} approved matches still in "
              f"the top {judged['k']} ({share}); {judged['unanswerable']} could not be asked again")


def run_tune(config: AppConfig, args: argparse.Namespace) -> int:
    """--tune: grid-search HNSW settings on the built index's vectors (milvus: sweep the
    query-time ef on the published collection), print table and YAML."""
    progress = None if args.quiet or args.json else lambda line: print(line, file=sys.stderr)
    ann = config.ann_index
    if config.backend == "milvus":
        report = tune_milvus(config.milvus, ann.init_time.space, target_recall=args.target_recall,
                             k=ann.k, current_ef=config.milvus.ef,
                             config_path=config.config_path, progress=progress)
        print(json.dumps(report.to_dict(), indent=2) if args.json else report.text())
        return 0
    report = tune_saved_index(
        Path(config.paths.ann_index_path), ann.init_time.space, target_recall=args.target_recall,
        quick=args.quick, k=ann.k, threads=ann.index_time.indexThreadQty,
        current={"M": ann.index_time.M, "efConstruction": ann.index_time.efConstruction,
                 "efSearch": ann.query_time.efSearch},
        config_path=config.config_path,
        progress=progress)
    if config.backend != "nmslib":
        report.notes.append(f"Note: this config uses backend {config.backend!r}; the settings "
                            "apply once it says `backend: nmslib`.")
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.text())
    return 0


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python build_index.py", description=__doc__)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--dry-run", action="store_true", help="validate and say what would run")
    parser.add_argument("--rebuild", action="store_true", help="ignore the vector cache")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--tune", action="store_true",
                        help="grid-search HNSW settings on the built index's vectors (no rebuild)")
    parser.add_argument("--target-recall", type=float, default=0.99,
                        help="with --tune: the recall@k to reach (default 0.99)")
    parser.add_argument("--quick", action="store_true", help="with --tune: a small grid")
    args = parser.parse_args(argv)
    if not 0 < args.target_recall <= 1:
        parser.error("--target-recall must be in (0, 1]")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        if args.dry_run:
            print(json.dumps(dry_run(config), indent=2))
            return 0
        if args.tune:
            return run_tune(config, args)
        summary = build(config, rebuild=args.rebuild, quiet=args.quiet or args.json)
    except (ConfigError, CatalogError, CheckpointError, IndexStoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the previous index (if any) is untouched", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
