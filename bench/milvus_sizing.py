"""Milvus memory per million vectors, measured: a Milvus Lite server in its own process, one
collection built through the product's milvus backend (vector + item columns, HNSW); then the
server restarted and the collection loaded, as for serving: its RSS growth, and the HNSW index
file and stored rows per row (what a Milvus query node holds), extrapolated to 1M rows.

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
from index_store.milvus_client import client_for


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
    """Build through one server, then restart it and load the collection, as serving does."""
    with tempfile.TemporaryDirectory(prefix="milvus-sizing-") as tmp:
        data = Path(tmp) / "data"
        server, uri = start_server(data)
        try:
            settings = MilvusConfig(uri=uri, collection_prefix=f"sizing_m{M}",
                                    consistency_level="Strong", insert_batch=2000)
            backend = make_backend("milvus", "cosinesimil",
                                   {"index_type": "HNSW", "M": M, "efConstruction": 100},
                                   {"ef": 64}, settings=settings)
            backend.build_catalog(vectors, items)
        finally:
            server.terminate()
            server.wait(timeout=60)
        server, uri = start_server(data)
        try:
            time.sleep(1.0)
            before = rss_of(server.pid)
            client_for(MilvusConfig(uri=uri)).load_collection(backend.collection)
            loaded = rss_of(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=60)
        index = sum(p.stat().st_size for p in data.rglob("*.idx") if "_meta" not in str(p))
        rows = sum(p.stat().st_size for p in data.rglob("*.parquet") if "_meta" not in str(p))
    n, dim = vectors.shape
    return {"n": n, "dim": dim, "M": M, "columns": len(items.columns),
            "lite_rss_mb": (loaded - before) / 1e6,
            "lite_gb_per_million": (loaded - before) / n * 1e6 / 1e9,
            "index_bytes_per_row": index / n, "links_bytes_per_row": index / n - 4 * dim,
            "rows_bytes_per_row": rows / n}


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
            ["data", "rows", "dim", "M", "item columns", "Lite server RSS after load MB",
             "Lite GB per 1M rows", "HNSW index bytes/row", "of which links", "stored row "
             "bytes/row (parquet)"],
            [[r["data"], r["n"], r["dim"], r["M"], r["columns"], r["lite_rss_mb"],
              r["lite_gb_per_million"], r["index_bytes_per_row"], r["links_bytes_per_row"],
              r["rows_bytes_per_row"]] for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
