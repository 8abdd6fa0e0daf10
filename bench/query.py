"""Query latency after download: decode + embed + search (p50/p99), through the app's code path."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import config_parser

from config import load_config
from index_store.measure import latency_summary
from search import SearchService
from vectorizer.images import open_image


def main() -> int:
    parser = config_parser(__doc__, quick="60 queries")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    config = load_config(args.config)
    service = SearchService.load(config)
    count = 60 if args.quick else args.queries
    files = service.items["image_file"].sample(n=min(count, len(service.items)), random_state=0)
    blobs = [Path(f).read_bytes() for f in files]
    embed, search, total = [], [], []
    for blob in blobs:
        began = time.perf_counter()
        image = open_image(blob, config.download.max_pixels)
        vector = service.encoder.embed_images([image]).vectors[0]
        embedded = time.perf_counter()
        service.store.search(vector, args.k + 1)
        done = time.perf_counter()
        embed.append(embedded - began)
        search.append(done - embedded)
        total.append(done - began)
    totals = latency_summary(total[1:])
    result = {"queries": len(blobs), "items": service.store.size,
              "embed_p50_ms": latency_summary(embed[1:])["p50_ms"],
              "search_p50_ms": latency_summary(search[1:])["p50_ms"],
              "total_p50_ms": totals["p50_ms"], "total_p99_ms": totals["p99_ms"]}
    result["total_over_embed"] = round(result["total_p50_ms"] / result["embed_p50_ms"], 3)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
