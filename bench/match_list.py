"""Match a list: seconds to match N image links served by a local HTTP server (the catalog's
own images), through `search.match_sources` (the "Match a list" page's path)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import load_config
from search import SearchService, match_sources
from util.local_servers import served_folder


def main() -> int:
    from common import config_parser, emit

    parser = config_parser(__doc__, "20 links")
    parser.add_argument("--links", type=int, default=200)
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()
    config = load_config(args.config)
    config.download.allow_private_networks = ["127.0.0.0/8"]
    service = SearchService.load(config)
    files = [Path(str(f)) for f in service.items["image_file"]][: 20 if args.quick else args.links]
    root = Path(os.path.commonpath([str(f.resolve()) for f in files]))
    root = root if root.is_dir() else root.parent
    with served_folder(root) as url_of:
        links = [url_of(str(f.resolve().relative_to(root.resolve()))) for f in files]
        began = time.perf_counter()
        result = match_sources(service, links, args.k)
        seconds = time.perf_counter() - began
    per_row = result.drop_duplicates("row")
    report = {"links": len(links), "k": args.k, "seconds": round(seconds, 2),
              "per_link_ms": round(1000 * seconds / max(len(links), 1), 1),
              "ok": int((per_row["status"] == "ok").sum()),
              "concurrency": config.download.concurrency, "colour": config.colour.default}
    emit(report, args.json, lambda r: (f"matched {r['ok']} of {r['links']} links in "
                                       f"{r['seconds']} s ({r['per_link_ms']} ms per link, "
                                       f"{r['concurrency']} downloads at once)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
