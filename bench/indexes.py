"""Index libraries compared on the same data: build, size, RAM, latency, QPS, recall@10, mAP@5;
and filtered search (a broad ~50 % and a selective ~1 % filter): nmslib's over-fetch strategy
(`index_store.base.filtered_query`) against Milvus filtering inside the engine."""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from common import (
    OUT_DIR,
    Timer,
    base_parser,
    clustered_vectors,
    emit,
    environment,
    holdout_split,
    int_list,
    log,
    markdown_table,
    nmslib_build_kind,
    rss_bytes,
)
from libraries import ANNOY_TREES, HNSW, LIBRARIES, SPACE

from index_store.base import Backend, exact_topk, filtered_query, unit_rows
from index_store.evaluate import recall_at_k, recall_sweep, retrieval_metrics
from index_store.exact import exact_knn
from index_store.measure import cheapest, latency_summary, rows_matrix, timed_queries
from index_store.milvus_client import filter_expression

SIMD = "nmslib-simd"
LIBRARY_NAMES = tuple(LIBRARIES)
TARGETS = (0.90, 0.95, 0.99)
MAP_K = 5
BUCKETS = 100  # every row gets bucket row % 100: filters select whole buckets
FILTERS = {"broad (~50 %)": [str(b) for b in range(50)], "selective (~1 %)": ["0"]}
FILTERED = {"nmslib": {"efSearch": 40}, "milvus": {"ef": 64}}  # library: setting used
FILTER_QUERIES = 200  # default of --filter-queries


# the worker: one library on one dataset, in its own process (clean RSS, crashes contained) -----


def run_worker(args: argparse.Namespace) -> int:
    data = Path(args.data)
    base, queries = np.load(data / "base.npy"), np.load(data / "queries.npy")
    truth = np.load(data / "truth.npy")
    labels = _read_labels(data)
    library = LIBRARIES[args.worker]
    if library.module:  # before the RSS baseline, so the library's code is not counted as index
        __import__(library.module)
    backend = library.make(args.threads)
    gc.collect()
    before = rss_bytes()
    with Timer() as build:
        backend.build_catalog(base, bucket_items(len(base)))  # only milvus stores the items
    ram = rss_bytes() - before
    with tempfile.TemporaryDirectory(prefix="bench-idx-") as folder:
        backend.save(Path(folder))
        size = library.index_bytes(Path(getattr(backend, "lite_folder", folder)))
        sweep = recall_sweep(backend, library.settings(backend, args.k), queries, truth, args.k,
                             extra=None if labels is None else map_at_k(labels))
    result = {"library": library.name, "params": backend.index_params, "build_s": build.seconds,
              "index_bytes": size, "ram_bytes": ram, "sweep": sweep}
    if args.worker in FILTERED:
        backend.set_query_params(**FILTERED[args.worker])
        result["filtered"] = filtered_search(backend, base, queries[:args.filter_queries],
                                             args.k)
    Path(args.result).write_text(json.dumps(result))
    return 0


def bucket_items(n: int) -> pd.DataFrame:
    return pd.DataFrame({"id": np.arange(n).astype(str),
                         "bucket": (np.arange(n) % BUCKETS).astype(str)})


def filtered_search(backend: Backend, base: np.ndarray, queries: np.ndarray, k: int
                    ) -> list[dict]:
    """Per filter: recall@k against the exact filtered top k, and single-query latency.

    milvus: the filter as a boolean expression on the stored `bucket` field; the others: the
    product's `filtered_query` over a row mask (exact scan when selective, else over-fetch)."""
    buckets = np.arange(len(base)) % BUCKETS
    rows = []
    for name, values in FILTERS.items():
        allowed = np.isin(buckets, [int(v) for v in values])
        if backend.name == "milvus":
            expression = filter_expression({"bucket": values}, backend.fields)
            def search(q, e=expression):
                return [h["row"] for h in backend.filtered_hits(q, k, e)]
        else:
            def search(q, a=allowed):
                return filtered_query(backend, base, q, k, a).rows
        found, seconds = timed_queries(search, queries)
        truth = [exact_topk(base, q, k, SPACE, rows=np.flatnonzero(allowed)).rows
                 for q in queries]
        rows.append({"filter": name, "setting": FILTERED[backend.name],
                     "recall": recall_at_k(rows_matrix(found, k), rows_matrix(truth, k)),
                     **latency_summary(seconds)})
    return rows


def _read_labels(data: Path) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    if not (data / "base_labels.parquet").exists():
        return None
    return (pd.read_parquet(data / "base_labels.parquet"),
            pd.read_parquet(data / "query_labels.parquet"))


def map_at_k(labels: tuple[pd.DataFrame, pd.DataFrame]) -> Callable[[np.ndarray], dict]:
    """mAP@5 of the found rows, a result counting when it shares the query's label."""
    pool, asked = labels

    def figures(rows: np.ndarray) -> dict:
        metrics = retrieval_metrics(asked, rows[:, :MAP_K], pool, ["label"], MAP_K)
        return {f"map_at_{MAP_K}": metrics["label"]["map_at_k"]}

    return figures


# the driver: datasets, one worker per library, summary, table and plot -------------------------


def datasets(args: argparse.Namespace):
    """(name, vectors, labels or None) for each synthetic size, then the catalog vectors."""
    for n in args.sizes:
        vectors, clusters = clustered_vectors(n + args.queries, args.dim, seed=args.seed)
        yield f"synthetic {n // 1000}k x {args.dim}", vectors, clusters.astype(str)
    if args.vectors:
        vectors = unit_rows(np.load(args.vectors, allow_pickle=False).astype(np.float32))
        labels = None
        if args.items and args.label:
            column = pd.read_parquet(args.items, columns=[args.label])[args.label]
            labels = column.astype("string").to_numpy(dtype=object, na_value=None)
        yield f"catalog ({len(vectors)} x {vectors.shape[1]})", vectors, labels


def prepare(folder: Path, vectors: np.ndarray, labels: np.ndarray | None,
            args: argparse.Namespace) -> dict:
    """Hold out queries, compute exact ground truth, write everything the workers read."""
    indexed, held_out = holdout_split(len(vectors), args.queries, args.seed)
    base, queries = vectors[indexed], vectors[held_out]
    truth, _ = exact_knn(base, queries, args.k, SPACE)
    np.save(folder / "base.npy", base)
    np.save(folder / "queries.npy", queries)
    np.save(folder / "truth.npy", truth)
    if labels is not None:
        pd.DataFrame({"label": labels[indexed]}).to_parquet(folder / "base_labels.parquet")
        pd.DataFrame({"label": labels[held_out]}).to_parquet(folder / "query_labels.parquet")
    return {"n": len(base), "dim": base.shape[1], "queries": len(queries),
            "labels": labels is not None}


def run_library(name: str, folder: Path, args: argparse.Namespace) -> dict:
    """One worker process; a failure (missing library, crash) becomes a skip note."""
    result = folder / f"{name}.json"
    worker, env = name, None
    if name == SIMD:  # the same adapter, importing nmslib from the source build's folder
        worker = "nmslib"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(args.nmslib_simd), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, __file__, "--worker", worker, "--data", str(folder),
               "--result", str(result), "--k", str(args.k), "--threads", str(args.threads),
               "--filter-queries", str(args.filter_queries)]
    with Timer() as took:
        done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0 or not result.exists():
        note = _failure_note(done.stderr)
        log(f"  {name}: skipped ({note})")
        return {"library": name, "skipped": note}
    log(f"  {name}: done in {took.seconds:.1f} s")
    return _with_targets({**json.loads(result.read_text()), "library": name})


def _failure_note(stderr: str) -> str:
    if "ModuleNotFoundError" in stderr or "No module named" in stderr:
        missing = stderr.split("No module named")[-1].strip().splitlines()[0]
        return f"not installed ({missing}); pip install -r bench/requirements.txt"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return "failed: " + (lines[-1] if lines else "no output (crashed?)")


def _with_targets(result: dict) -> dict:
    """Add, per target recall, the cheapest (lowest p50) setting reaching it."""
    result["targets"] = {
        f"{target:.2f}": cheapest(result["sweep"], lambda row, t=target: row["recall"] >= t,
                                  lambda row: row["p50_ms"])
        for target in TARGETS}
    return result


def run_dataset(name: str, vectors: np.ndarray, labels: np.ndarray | None,
                args: argparse.Namespace) -> dict:
    log(f"{name}: exact ground truth, then {', '.join(args.libraries)}")
    with tempfile.TemporaryDirectory(prefix="bench-indexes-") as tmp:
        folder = Path(tmp)
        info = prepare(folder, vectors, labels, args)
        del vectors
        libraries = [run_library(library, folder, args) for library in args.libraries]
    return {"dataset": name, **info, "libraries": libraries}


# reporting ------------------------------------------------------------------------------------


def _setting_text(setting: dict | None) -> str:
    return ", ".join(f"{key}={value}" for key, value in (setting or {}).items()) or "-"


def table_rows(dataset: dict) -> list[list]:
    rows = []
    for lib in dataset["libraries"]:
        if "skipped" in lib:
            rows.append([lib["library"], "-", f"skipped: {lib['skipped']}"] + [None] * 8)
            continue
        top = max(row["recall"] for row in lib["sweep"])
        cost = [lib["build_s"], lib["index_bytes"] / 1e6, lib["ram_bytes"] / 1e6]
        targets = lib["targets"].items()
        if len(lib["sweep"]) == 1:  # one setting (exact search): one row for every target
            targets = [("any", lib["sweep"][0])]
        elif all(row is None for _, row in targets):
            targets = [(f"{TARGETS[0]:.2f}+", None)]
        for target, row in targets:
            if row is None:
                rows.append([lib["library"], target, f"not reached (max {top:.3f})",
                             None, None, None, None, None, *cost])
                continue
            rows.append([lib["library"], target, _setting_text(row["setting"]), row["recall"],
                         row["p50_ms"], row["p99_ms"], row["qps"], row.get(f"map_at_{MAP_K}"),
                         *cost])
    return rows


HEADERS = ["library", "target", "cheapest setting", "recall@10", "p50 ms", "p99 ms",
           "QPS (1 thread)", f"mAP@{MAP_K}", "build s", "index MB", "RAM MB"]


NOTES = """\
- Queries are held out of the index and searched one at a time (as the app does); QPS = 1 / mean
  latency on one thread. Recall@10 is against exact search; the cheapest setting is the one with
  the lowest p50 that reaches the target recall.
- index MB: the library's saved file. nmslib's optimised HNSW file embeds the vectors; exact has
  no file (it scans the store's vectors.npy); faiss-flat, annoy and hnswlib files hold the vectors.
- RAM MB: RSS growth while building, measured in a fresh process per library (data excluded).
- milvus: the product's milvus backend on Milvus Lite (the engine in the worker process, faiss
  HNSW inside), every query a gRPC round trip on loopback; RAM MB counts the engine, index MB is
  the Lite folder. Against a Milvus server the round trip and the server's own speed apply.
- faiss-ivfpq stores only PQ codes (about 8 dimensions per byte) and does not re-rank with the
  exact vectors, so quantisation error caps its recall whatever nprobe is."""


def filtered_rows(dataset: dict) -> list[list]:
    return [[lib["library"], row["filter"], _setting_text(row["setting"]), row["recall"],
             row["p50_ms"], row["p99_ms"]]
            for lib in dataset["libraries"] for row in lib.get("filtered", [])]


FILTERED_HEADERS = ["library", "filter", "setting", "recall@10", "p50 ms", "p99 ms"]


def render(result: dict) -> str:
    env = result["environment"]
    parts = [f"nmslib: {result['nmslib']['kind']}. {env['cpus']} CPUs, load average "
             f"{env['load_average_1m']} at start; build threads {result['params']['threads']}.",
             NOTES]
    for dataset in result["datasets"]:
        parts.append(f"### {dataset['dataset']} ({dataset['queries']} queries)\n\n"
                     + markdown_table(HEADERS, table_rows(dataset)))
        if filtered_rows(dataset):
            parts.append(f"Filtered search, {result['params']['filter_queries']} queries "
                         "(nmslib: over-fetch or "
                         "exact scan of the allowed rows; milvus: the filter inside the "
                         "engine):\n\n" + markdown_table(FILTERED_HEADERS, filtered_rows(dataset)))
    return "\n\n".join(parts)


def plot(result: dict, path: Path) -> str | None:
    """Recall vs p50 latency per library and dataset; None (and a note) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install -r bench/requirements.txt)"
    sets = result["datasets"]
    figure, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.5), squeeze=False)
    for axis, dataset in zip(axes[0], sets, strict=True):
        for lib in (lib for lib in dataset["libraries"] if "sweep" in lib):
            sweep = lib["sweep"]
            axis.plot([r["recall"] for r in sweep], [r["p50_ms"] for r in sweep], marker="o",
                      label=lib["library"])
        axis.set(title=dataset["dataset"], xlabel="recall@10", ylabel="p50 latency (ms)",
                 yscale="log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return None


def write_outputs(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    note = plot(result, out / "indexes.png")
    if note:
        result["notes"].append(note)
    else:
        result["plot"] = str(out / "indexes.png")
    (out / "indexes.md").write_text("# Index libraries compared\n\n" + render(result)
                                    + ("\n\n![recall vs latency](indexes.png)\n" if not note
                                       else "\n"))
    result["table"] = str(out / "indexes.md")


def summary_lines(result: dict) -> list[str]:
    lines = []
    for dataset in result["datasets"]:
        for lib in dataset["libraries"]:
            if "skipped" in lib:
                lines.append(f"{dataset['dataset']}: {lib['library']} skipped")
                continue
            at = lib["targets"]["0.95"]
            speed = f"p50 {at['p50_ms']:.2f} ms at recall>=0.95" if at else "recall<0.95"
            lines.append(f"{dataset['dataset']}: {lib['library']} build {lib['build_s']:.1f} s, "
                         f"{speed}")
    return lines


# CLI ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = base_parser(__doc__)
    parser.add_argument("--sizes", type=int_list, default=[50_000, 200_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--filter-queries", type=int, default=FILTER_QUERIES,
                        help="queries per filter (Milvus Lite takes seconds per filtered query)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="build threads (searches are one query at a time)")
    parser.add_argument("--libraries", type=lambda s: s.split(","), default=list(LIBRARY_NAMES),
                        help=f"comma-separated subset of {','.join(LIBRARY_NAMES)}")
    parser.add_argument("--vectors", type=Path, help="also a real catalog: an index's vectors.npy")
    parser.add_argument("--items", type=Path, help="items.parquet row-aligned with --vectors")
    parser.add_argument("--label", help="label column of --items for mAP@5, e.g. articleType")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where the .md and .png go")
    parser.add_argument("--nmslib-simd", type=Path,
                        default=os.environ.get("NMSLIB_SIMD_PATH") or None,
                        help="a folder holding a SIMD source build of nmslib (pip install "
                             "--target DIR --no-deps --no-binary nmslib nmslib==2.1.2): "
                             "adds nmslib-simd")
    parser.add_argument("--worker", choices=sorted(LIBRARIES), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.libraries) - {*LIBRARY_NAMES, SIMD})
    if unknown:
        parser.error(f"unknown libraries {unknown}; choose from {', '.join(LIBRARY_NAMES)}, {SIMD}")
    simd_dir = Path(args.nmslib_simd) if args.nmslib_simd else None
    if SIMD in args.libraries and not (simd_dir and any(simd_dir.glob("nmslib*.so"))):
        parser.error(f"{SIMD} needs --nmslib-simd DIR (or NMSLIB_SIMD_PATH) naming a folder with "
                     "a source build of nmslib")
    if args.nmslib_simd and SIMD not in args.libraries:
        args.libraries.insert(args.libraries.index("nmslib") + 1 if "nmslib" in args.libraries
                              else 0, SIMD)
    if args.quick:
        args.sizes, args.queries = [5000], 200
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    result = {"benchmark": "indexes", "quick": args.quick, "environment": environment(),
              "nmslib": nmslib_build_kind(),
              "params": {"k": args.k, "threads": args.threads, "hnsw": HNSW,
                         "filter_queries": args.filter_queries,
                         "annoy_trees": ANNOY_TREES, "space": SPACE, "seed": args.seed},
              "notes": [], "datasets": [run_dataset(name, vectors, labels, args)
                                        for name, vectors, labels in datasets(args)]}
    write_outputs(result, args.out)
    result["summary"] = summary_lines(result)
    emit(result, args.json, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
