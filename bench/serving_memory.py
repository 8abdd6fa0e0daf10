"""Memory of the serving process per backend: RSS of a fresh process before and after it loads
the SearchService (model + index) and runs a few searches, as the app would.

    python bench/serving_memory.py --config A.yml --config B.yml [--json]

Each config is measured in its own process. For `backend: milvus` with an http(s) uri the
vectors and the item table live in the Milvus server's process, not in the one measured here;
with a Milvus Lite file the engine runs inside the measured process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import ROOT, markdown_table, rss_bytes

SEARCHES = 20


def measure(config_path: Path) -> dict:
    """In this process: RSS before and after loading the service and searching."""
    sys.path.insert(0, str(ROOT))
    from config import load_config
    from search import SearchService

    config = load_config(config_path)
    import torch  # noqa: F401 - imported before the baseline: code is not the index

    import index_store.milvus_client as milvus

    if config.backend == "milvus":
        milvus.pymilvus()
    before = rss_bytes()
    service = SearchService.load(config)
    loaded = rss_bytes()
    sample = service.items["id"].head(SEARCHES).tolist()
    for item_id in sample:
        service.search_item(item_id, 10)
    return {"config": str(config_path), "backend": config.backend,
            "where": config.milvus.uri if config.backend == "milvus" else "in process",
            "items": service.size, "baseline_mb": before / 1e6,
            "after_load_mb": loaded / 1e6, "after_searches_mb": rss_bytes() / 1e6,
            "index_mb": (loaded - before) / 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, action="append", required=True)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.config[0])))
        return 0
    rows = []
    for config in args.config:
        done = subprocess.run([sys.executable, __file__, "--worker", "--config", str(config)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(markdown_table(["backend", "index at", "items", "RSS before load MB",
                              "after load MB", "after 20 searches MB", "load added MB"],
                             [[r["backend"], r["where"], r["items"], r["baseline_mb"],
                               r["after_load_mb"], r["after_searches_mb"], r["index_mb"]]
                              for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
