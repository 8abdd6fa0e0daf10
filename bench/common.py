"""Shared benchmark helpers: clustered data, held-out split, timers, RSS, CLI and output."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # scripts run as `python bench/x.py`: make the packages importable
    sys.path.insert(0, str(ROOT))

from index_store.exact import exact_knn  # noqa: E402 - after the path setup above
from index_store.measure import latency_summary, timed_queries  # noqa: E402, F401

OUT_DIR = ROOT / "docs" / "benchmarks"
_CHUNK_ROWS = 16384


# data -----------------------------------------------------------------------------------------


def clustered_vectors(n: int, dim: int = 512, *, clusters: int = 1000, latent_dim: int = 64,
                      spread: float = 0.6, noise: float = 0.02, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors [n, dim] float32 and their cluster labels [n], seeded.

    Gaussian clusters drawn in a `latent_dim`-dimensional space (centres ~ N(0, I), points
    centre + spread * N(0, I)), mapped to `dim` by a fixed random linear map, plus small
    isotropic noise, then normalised: like CNN embeddings, the data has a low intrinsic
    dimension and class structure. Generated in chunks so 200k x 512 stays within ~0.5 GB.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, latent_dim))
    basis = rng.standard_normal((latent_dim, dim)) / np.sqrt(latent_dim)
    labels = rng.integers(clusters, size=n)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, _CHUNK_ROWS):
        part = labels[start:start + _CHUNK_ROWS]
        latent = centres[part] + spread * rng.standard_normal((len(part), latent_dim))
        points = latent @ basis + noise * rng.standard_normal((len(part), dim))
        out[start:start + len(part)] = points / np.linalg.norm(points, axis=1, keepdims=True)
    return out, labels


def holdout_split(n: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(indexed rows, query rows): n_queries rows held out of the index as queries."""
    order = np.random.default_rng(seed + 1).permutation(n)
    n_queries = min(n_queries, n - 1)
    return np.sort(order[n_queries:]), np.sort(order[:n_queries])


def exact_top(queries: np.ndarray, pool: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k nearest pool vectors per query by cosine distance (`exact_knn`)."""
    return exact_knn(pool, queries, k, "cosinesimil")[0]


def split_rows(items, split: dict, queries: int, quick: bool, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, pool rows) of the catalog: a seeded sample of the model's test split as
    queries (500 with quick) against its training split (8,000 of it with quick)."""
    rng = np.random.default_rng(seed)
    test_rows = np.flatnonzero(items["id"].isin(set(split["test"])).to_numpy())
    pool_rows = np.flatnonzero(items["id"].isin(set(split["train"])).to_numpy())
    count = min(500 if quick else queries, len(test_rows))
    query_rows = np.sort(rng.choice(test_rows, count, replace=False))
    if quick:
        pool_rows = np.sort(rng.choice(pool_rows, min(8000, len(pool_rows)), replace=False))
    return query_rows, pool_rows


# measuring ------------------------------------------------------------------------------------


class Timer:
    """`with Timer() as t: ...` then t.seconds."""

    def __enter__(self) -> Timer:
        self.began = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.began


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    """Current resident memory of this process (VmRSS; peak RSS where /proc is missing)."""
    kib = _status_kib("VmRSS")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


def latency(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / mean in ms and single-thread QPS (1 / mean latency)."""
    return latency_summary(seconds, qps=True)


def environment() -> dict[str, Any]:
    """What the timings depend on: cores, load when the run began, BLAS/OpenMP thread settings.

    On a busy machine multi-threaded BLAS and OpenMP are much slower than one thread (a numpy
    matrix-vector product measured 30x slower with 2 OpenBLAS threads beside a training job).
    """
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    return {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
            "python": sys.version.split()[0], "numpy": np.__version__,
            **{name: os.environ.get(name) for name in names}}


def nmslib_build_kind(python: str = sys.executable) -> dict[str, Any]:
    """Whether nmslib is the registry wheel (no SIMD) or a source build with SIMD.

    Two independent signals: the registry wheel prints "Your CPU supports instructions that this
    binary was not compiled to use" on import (checked in a subprocess, the message goes to the
    C++ stderr), and pip's WHEEL metadata of a registry wheel carries a manylinux tag while a
    local source build is tagged linux_x86_64.
    """
    probe = subprocess.run([python, "-c", "import nmslib"], capture_output=True, text=True,
                           timeout=120)
    text = probe.stdout + probe.stderr
    warned = "not compiled to use" in text
    tag = _nmslib_wheel_tag()
    if probe.returncode != 0:
        kind = "not installed"
    elif warned or "manylinux" in tag:
        kind = "registry wheel (generic build, no SIMD)"
    else:
        kind = "source build (SIMD)"
    missing = text.split("not compiled to use:")[-1].splitlines()[0].strip() if warned else ""
    return {"kind": kind, "simd_warning": warned, "missing_instructions": missing,
            "wheel_tag": tag}


def _nmslib_wheel_tag() -> str:
    from importlib import metadata

    try:
        wheel = metadata.distribution("nmslib").read_text("WHEEL") or ""
    except metadata.PackageNotFoundError:
        return ""
    return ",".join(line.split(":", 1)[1].strip() for line in wheel.splitlines()
                    if line.startswith("Tag:"))


# CLI and output -------------------------------------------------------------------------------


def base_parser(doc: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def config_parser(doc: str | None, quick: str) -> argparse.ArgumentParser:
    """--config (default: the real catalog's), --quick (its meaning) and --json."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--config", default="config/fashion.yml")
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--json", action="store_true")
    return parser


def int_list(text: str) -> list[int]:
    """'50000,200000' → [50000, 200000] (for argparse)."""
    return [int(part) for part in text.split(",") if part.strip()]


def log(message: str) -> None:
    """Progress on stderr (stdout is the result)."""
    print(message, file=sys.stderr, flush=True)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return "" if value is None else str(value)


def emit(result: dict, as_json: bool, render: Callable[[dict], str]) -> None:
    """The result on stdout: JSON, or the human rendering."""
    print(json.dumps(result, indent=2, default=_jsonable) if as_json else render(result))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
