"""Query latency after download: decode + embed + search (p50/p99), through the app's code path."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import load_config
from search import SearchService
from vectorizer.images import open_image


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.array(seconds) * 1000, q))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="config/fashion.yml")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="60 queries")
    parser.add_argument("--json", action="store_true")
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
    result = {"queries": len(blobs), "items": service.store.size,
              "embed_p50_ms": percentile_ms(embed[1:], 50),
              "search_p50_ms": percentile_ms(search[1:], 50),
              "total_p50_ms": percentile_ms(total[1:], 50),
              "total_p99_ms": percentile_ms(total[1:], 99)}
    result["total_over_embed"] = round(result["total_p50_ms"] / result["embed_p50_ms"], 3)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
