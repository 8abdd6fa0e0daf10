"""The query path shared by the app and scripts: `python search.py --json IMAGE_OR_URL`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from config import AppConfig, ConfigError, load_config
from contracts import IndexManifest, index_fingerprint
from index_store.base import IndexStoreError
from index_store.location import SearchableStore, load_index
from ingest.links import FetchedImage, fetch_image
from ingest.messages import FetchError
from util.urls import is_http_url
from vectorizer.checkpoint import CheckpointError
from vectorizer.encoder import Encoder, Prediction
from vectorizer.images import ImageError, open_image

log = logging.getLogger(__name__)

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # spreadsheet formula starts


@dataclass
class SearchResponse:
    results: pd.DataFrame           # id, name, distance, band, labels..., one row per result
    predicted: Prediction           # top classes per task for the query image
    same_product: dict | None       # the catalog item the query image is, if any


class SearchService:
    """Model + index + item table, loaded once and shared; every method is thread-safe."""

    def __init__(self, config: AppConfig, encoder: Encoder, store: SearchableStore) -> None:
        self.config, self.encoder, self.store = config, encoder, store

    @classmethod
    def load(cls, config: AppConfig) -> SearchService:
        encoder = Encoder.from_config(config)
        return cls(config, encoder, load_index(config, index_fingerprint(config, encoder)))

    @property
    def items(self) -> pd.DataFrame:
        """The item table (milvus backend: a bounded sample; `size` counts the catalog)."""
        return self.store.items

    @property
    def size(self) -> int:
        """Products in the index."""
        return self.store.size

    @property
    def manifest(self) -> IndexManifest:
        """The loaded index version's manifest, typed (older manifests read with defaults)."""
        return IndexManifest.model_validate(self.store.manifest or {})

    def band(self, distance: float) -> str:
        bands = self.config.ui.bands
        if distance <= bands.near_duplicate:
            return "near-duplicate"
        return "similar" if distance <= bands.similar else "loosely similar"

    def fetch_url(self, url: str) -> FetchedImage:
        """A pasted image or product-page link → its image (FetchError says why not)."""
        return fetch_image(url, self.config.download)

    def query_image(self, source: str) -> Image.Image:
        """A local file or an http(s) URL (product pages resolve to their image)."""
        if is_http_url(source):
            return self.fetch_url(source).image
        return open_image(Path(source), self.config.download.max_pixels)

    def search_image(self, image: Image.Image, k: int,
                     filters: dict | None = None) -> SearchResponse:
        embedded = self.encoder.embed_images([image])
        results = self.store.search(embedded.vectors[0], k + 1, filters=filters)
        same = None
        if len(results) and results["distance"].iloc[0] <= self.config.ui.bands.same_product:
            same = results.iloc[0].to_dict()
            results = results.iloc[1:]
        return self.respond(results.head(k), embedded.predictions[0], same)

    def search_item(self, item_id: str, k: int, filters: dict | None = None) -> SearchResponse:
        """More like this: the product's stored vector; the product itself is never returned."""
        item = self.store.item(item_id)
        results = self.store.search(self.store.vector_of(item_id), k, filters=filters,
                                    exclude_ids=[item_id])
        return self.respond(results, self.predict_file(item.get("image_file", "")), item)

    def predict_file(self, image_file: str) -> Prediction:
        """The heads' top classes for a catalog image ({} when its file cannot be read)."""
        try:
            image = open_image(Path(image_file), self.config.download.max_pixels)
        except ImageError:
            return {}
        return self.encoder.embed_images([image]).predictions[0]

    def respond(self, results: pd.DataFrame, predicted: Prediction, same: dict | None
                ) -> SearchResponse:
        results = results.reset_index(drop=True).copy()
        results["band"] = [self.band(d) for d in results["distance"]]
        return SearchResponse(results, predicted, same)


def parse_filters(pairs: list[str]) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for pair in pairs:
        column, separator, value = pair.partition("=")
        if not separator:
            raise ValueError(f"--filter {pair!r}: expected column=value")
        filters.setdefault(column, []).append(value)
    return filters


def response_json(response: SearchResponse, label_fields: list[str]) -> dict:
    columns = ["id", "name", "distance", "band", *label_fields]
    rows = response.results[[c for c in columns if c in response.results]].to_dict("records")
    return {"results": [{key: (float(v) if key == "distance" else v) for key, v in row.items()}
                        for row in rows],
            "predicted": {task: [[label, round(p, 4)] for label, p in top]
                          for task, top in response.predicted.items()},
            "same_product": response.same_product and response.same_product.get("id")}


def is_missing(value: object) -> bool:
    """None, '' or NaN (a missing catalog value)."""
    try:
        return value is None or value == "" or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def public_link(value: object) -> str:
    """An http(s) link a colleague can open, or '' (a server's file path is never exported)."""
    text = "" if is_missing(value) else str(value).strip()
    return text if is_http_url(text) else ""


def shortlist_row(item: dict, label_fields: list[str], query: str) -> dict:
    """What the shortlist keeps of one result."""
    row = {"id": str(item.get("id", "")), "name": str(item.get("name", "")),
           "distance": round(float(item.get("distance", 0.0)), 4), "band": item.get("band", "")}
    row.update({column: "" if is_missing(item.get(column)) else str(item.get(column))
                for column in label_fields})
    row["image_url"] = public_link(item.get("image_path"))
    row["product_url"] = public_link(item.get("product_url"))
    row["query"] = query
    return row


def _no_formula(value: object) -> object:
    """Spreadsheets run cells starting with = + - @ as formulas: such text gets a leading '."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_START) else value


def shortlist_csv(rows: list[dict], label_fields: list[str]) -> bytes:
    """The shortlist as UTF-8 CSV: id, name, distance, band, labels, image_url, product_url,
    query (links only where the catalog gave http(s) links; never file paths)."""
    columns = ["id", "name", "distance", "band", *label_fields, "image_url", "product_url",
               "query"]
    table = pd.DataFrame(rows, columns=columns)
    text_columns = [c for c in columns if c != "distance"]
    table[text_columns] = table[text_columns].map(_no_formula)
    return table.to_csv(index=False).encode("utf-8")


def bulk_match(service: SearchService, table_in: Path, table_out: Path, k: int,
               filters: dict) -> pd.DataFrame:
    """A CSV of image URLs or paths in, a CSV of matches out; a failed row is marked, not fatal."""
    queries = pd.read_csv(table_in, dtype=str)
    column = "image" if "image" in queries else queries.columns[0]
    rows = []
    for source in queries[column].fillna(""):
        try:
            response = service.search_image(service.query_image(source), k, filters)
        except (FetchError, ImageError, OSError) as error:
            rows.append({"query": source, "status": "failed", "reason": str(error)})
            continue
        for rank, match in enumerate(response.results.itertuples(), start=1):
            rows.append({"query": source, "status": "ok", "reason": "", "rank": rank,
                         "id": match.id, "name": match.name, "distance": match.distance})
    result = pd.DataFrame(rows)
    result.to_csv(table_out, index=False)
    return result


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python search.py", description=__doc__)
    parser.add_argument("query", help="image path or http(s) URL, or a CSV with --bulk-out")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--k", type=int, default=None)
    parser.add_argument("--filter", action="append", default=[], metavar="COLUMN=VALUE")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--bulk-out", type=Path, default=None, help="write matches of a CSV here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        config = load_config(args.config)
        k = args.k or config.ann_index.k
        service = SearchService.load(config)
        filters = parse_filters(args.filter) or None
        if args.bulk_out:
            result = bulk_match(service, Path(args.query), args.bulk_out, k, filters)
            print(f"wrote {len(result)} rows to {args.bulk_out}")
            return 0
        response = service.search_image(service.query_image(args.query), k, filters)
    except (ConfigError, CheckpointError, IndexStoreError, FetchError, ImageError,
            ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    payload = response_json(response, config.dataframe.label_fields)
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        for row in payload["results"]:
            print(f"{row['distance']:.4f}  {row['id']}  {row['name']}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
