"""nmslib HNSW as the product runs it: build, size, load, recall@10 and latency vs exact numpy."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from common import (
    Timer,
    base_parser,
    clustered_vectors,
    emit,
    environment,
    holdout_split,
    int_list,
    latency,
    log,
    markdown_table,
    nmslib_build_kind,
    timed_queries,
)

from index_store.backends import backend_class, make_backend
from index_store.base import Backend
from index_store.evaluate import recall_sweep
from index_store.exact import exact_knn
from index_store.measure import cheapest
from index_store.tune import index_file_bytes

SPACE = "cosinesimil"
EXACT_QUERIES = 200


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__)
    parser.add_argument("--sizes", type=int_list, default=[50_000, 200_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--M", type=int, default=16)
    parser.add_argument("--efConstruction", type=int, default=200)
    parser.add_argument("--ef", type=int_list, default=[20, 40, 80, 160, 320])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="build threads (queries are single-threaded, as in the app)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.queries = [5000], 200
    return args


def build_save_load(base: np.ndarray, args) -> tuple[Backend, dict]:
    """Build, save (as the store does: graph without data) and load the index back."""
    params = {"M": args.M, "efConstruction": args.efConstruction,
              "indexThreadQty": args.threads, "post": 0}
    backend = make_backend("nmslib", SPACE, params)
    with Timer() as build:
        backend.build(base)
    with tempfile.TemporaryDirectory(prefix="bench-ann-") as folder:
        with Timer() as save:
            backend.save(Path(folder))
        size = index_file_bytes(backend, Path(folder))
        with Timer() as load:
            loaded = backend_class("nmslib").load(Path(folder), base, SPACE, params, {})
    return loaded, {"build_s": build.seconds, "save_s": save.seconds, "load_s": load.seconds,
                    "index_bytes": size, "vectors_bytes": int(base.nbytes)}


def sweep(backend: Backend, queries: np.ndarray, truth: np.ndarray, args) -> list[dict]:
    rows = recall_sweep(backend, [{"efSearch": ef} for ef in args.ef], queries, truth, args.k)
    return [{"efSearch": row["setting"]["efSearch"], f"recall_at_{args.k}": row["recall"],
             **{key: row[key] for key in ("p50_ms", "p99_ms", "mean_ms", "qps")}}
            for row in rows]


def exact_reference(base: np.ndarray, queries: np.ndarray, k: int) -> dict:
    exact = make_backend("exact", SPACE)
    exact.build(base)
    _, seconds = timed_queries(lambda q: exact.query(q, k).rows, queries[:EXACT_QUERIES])
    return latency(seconds)


def run_size(n: int, args) -> dict:
    data, _ = clustered_vectors(n + args.queries, args.dim, seed=args.seed)
    indexed, held_out = holdout_split(len(data), args.queries, args.seed)
    base, queries = data[indexed], data[held_out]
    del data
    log(f"n={n}: exact ground truth for {len(queries)} queries")
    truth, _ = exact_knn(base, queries, args.k, SPACE)
    log(f"n={n}: building HNSW M={args.M} efConstruction={args.efConstruction}")
    backend, costs = build_save_load(base, args)
    log(f"n={n}: built in {costs['build_s']:.1f} s; sweeping efSearch {args.ef}")
    return {"n": len(base), "dim": args.dim, "queries": len(queries), **costs,
            "sweep": sweep(backend, queries, truth, args),
            "exact": exact_reference(base, queries, args.k)}


def cheapest_at(sweep: list[dict], key: str, target: float) -> dict:
    """The lowest-p50 row reaching target recall, else the best-recall row."""
    return (cheapest(sweep, lambda row: row[key] >= target, lambda row: row["p50_ms"])
            or max(sweep, key=lambda row: row[key]))


def summary_lines(result: dict) -> list[str]:
    env = result["environment"]
    lines = [f"nmslib: {result['nmslib']['kind']}; {env['cpus']} CPUs, load average "
             f"{env['load_average_1m']} at start; index MB is nmslib's file (it embeds the "
             "vectors)"]
    k = result["params"]["k"]
    for size in result["sizes"]:
        best = cheapest_at(size["sweep"], f"recall_at_{k}", 0.99)
        lines.append(f"n={size['n']}: build {size['build_s']:.1f} s, "
                     f"index {size['index_bytes'] / 1e6:.1f} MB, load {size['load_s']:.2f} s, "
                     f"recall@{k} {best[f'recall_at_{k}']:.3f} at efSearch {best['efSearch']} "
                     f"(p50 {best['p50_ms']:.2f} ms) vs exact p50 {size['exact']['p50_ms']:.2f} ms")
    return lines


def render(result: dict) -> str:
    k = result["params"]["k"]
    parts = ["\n".join(result["summary"])]
    for size in result["sizes"]:
        rows = [[r["efSearch"], r[f"recall_at_{k}"], r["p50_ms"], r["p99_ms"], r["qps"]]
                for r in size["sweep"]]
        rows.append(["exact numpy", 1.0, size["exact"]["p50_ms"], size["exact"]["p99_ms"],
                     size["exact"]["qps"]])
        parts.append(f"n={size['n']} x {size['dim']}\n" + markdown_table(
            ["efSearch", f"recall@{k}", "p50 ms", "p99 ms", "QPS (1 thread)"], rows))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = {"benchmark": "ann", "quick": args.quick, "environment": environment(),
              "nmslib": nmslib_build_kind(),
              "params": {"M": args.M, "efConstruction": args.efConstruction, "k": args.k,
                         "threads": args.threads, "space": SPACE, "seed": args.seed},
              "sizes": [run_size(n, args) for n in args.sizes]}
    result["summary"] = summary_lines(result)
    emit(result, args.json, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
