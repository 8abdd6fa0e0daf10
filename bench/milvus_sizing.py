"""Milvus memory per million vectors, measured: a Milvus Lite server in its own process, one
collection built through the product's milvus backend (vector + item columns, HNSW), and the
server's RSS growth and data folder size per row, extrapolated to 1M rows.

    python bench/milvus_sizing.py --vectors V.npy [--items I.parquet] [--M 16 32] [--json]
    python bench/milvus_sizing.py --synthetic 50000 --dim 256 512

Without --items the rows carry a short id only (the vector and graph dominate). Milvus Lite
keeps faiss' HNSW (vectors + links) and the scalar columns in memory, as a Milvus query node
does; a server's own overhead (segments, replicas) comes on top.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import clustered_vectors, markdown_table

from config.schema import MilvusConfig
from index_store.backends import make_backend
from index_store.base import unit_rows
from index_store.milvus_backend import client_for


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def start_server(data: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir",
                               str(data), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            client_for(MilvusConfig(uri=uri, timeout_s=2)).list_collections()
            return server, uri
        except Exception:  # not listening yet
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the Milvus Lite server did not start")


def measure(vectors: np.ndarray, items: pd.DataFrame, M: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="milvus-sizing-") as tmp:
        server, uri = start_server(Path(tmp) / "data")
        try:
            settings = MilvusConfig(uri=uri, collection_prefix=f"sizing_m{M}",
                                    consistency_level="Strong", insert_batch=2000)
            time.sleep(1.0)
            before = rss_of(server.pid)
            backend = make_backend("milvus", "cosinesimil",
                                   {"index_type": "HNSW", "M": M, "efConstruction": 100},
                                   {"ef": 64}, settings=settings)
            backend.build_catalog(vectors, items)
            loaded = rss_of(server.pid)
            disk = folder_bytes(Path(tmp) / "data")
        finally:
            server.terminate()
            server.wait(timeout=60)
    n, dim = vectors.shape
    per_row = (loaded - before) / n
    return {"n": n, "dim": dim, "M": M, "columns": len(items.columns),
            "server_rss_growth_mb": (loaded - before) / 1e6, "bytes_per_row": per_row,
            "gb_per_million": per_row * 1e6 / 1e9, "disk_bytes_per_row": disk / n,
            "disk_gb_per_million": disk / n * 1e6 / 1e9,
            "raw_vector_gb_per_million": dim * 4 * 1e6 / 1e9}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=Path)
    parser.add_argument("--items", type=Path)
    parser.add_argument("--synthetic", type=int, default=0, help="rows of synthetic vectors")
    parser.add_argument("--dim", type=int, nargs="+", default=[512])
    parser.add_argument("--M", type=int, nargs="+", default=[16])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sets = []
    if args.vectors:
        vectors = unit_rows(np.load(args.vectors).astype(np.float32))
        items = (pd.read_parquet(args.items) if args.items
                 else pd.DataFrame({"id": np.arange(len(vectors)).astype(str)}))
        sets.append(("catalog", vectors, items))
    for dim in args.dim if args.synthetic else []:
        vectors, _ = clustered_vectors(args.synthetic, dim)
        sets.append((f"synthetic {dim}-d", vectors,
                     pd.DataFrame({"id": np.arange(args.synthetic).astype(str)})))
    rows = [dict(measure(v, i, M), data=name) for name, v, i in sets for M in args.M]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(markdown_table(
            ["data", "rows", "dim", "M", "item columns", "server RSS growth MB", "bytes/row",
             "GB per 1M rows (RAM)", "GB per 1M rows (disk)", "raw vectors GB per 1M"],
            [[r["data"], r["n"], r["dim"], r["M"], r["columns"], r["server_rss_growth_mb"],
              r["bytes_per_row"], r["gb_per_million"], r["disk_gb_per_million"],
              r["raw_vector_gb_per_million"]] for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
