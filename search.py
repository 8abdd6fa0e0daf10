"""The query path shared by the app and scripts: `python search.py --json IMAGE_OR_URL`."""

from __future__ import annotations

import argparse
import io
import itertools
import json
import logging
import re
import sys
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from colour_match import MODES, ItemColours, colour_weight, hellinger, histogram_features, rerank
from config import AppConfig, ConfigError, load_config
from contracts import CalibratedBands, IndexManifest, index_fingerprint
from index_store.base import IndexStoreError
from index_store.location import SearchableStore, load_index
from ingest.links import FetchedImage, fetch_image
from ingest.messages import FetchError
from label_match import catalog_distributions
from query_crop import Box, CropError, crop_image, parse_crop
from util.urls import is_http_url
from vectorizer.checkpoint import CheckpointError
from vectorizer.encoder import Encoder, Prediction
from vectorizer.images import ImageError, open_image

log = logging.getLogger(__name__)


@dataclass
class SearchResponse:
    results: pd.DataFrame           # id, name, distance, band, rank, labels..., one per result
    predicted: Prediction           # top classes per task for the query image
    same_product: dict | None       # the catalog item the query image is, if any
    no_match: bool = False          # the best match is past the calibrated bands


class SearchService:
    """Model + index + item table, loaded once and shared; every method is thread-safe."""

    def __init__(self, config: AppConfig, encoder: Encoder, store: SearchableStore) -> None:
        self.config, self.encoder, self.store = config, encoder, store
        self.bands = self.manifest.metrics.bands  # calibrated at build time; None when older
        self.colours = self._item_colours()  # head or histogram source: by row
        self.label_columns = [column for column in self.config.label_match.weights
                              if column in self.items]

    @property
    def has_colour(self) -> bool:
        """Is there a colour to re-rank by (a colour column, and its values at hand)?"""
        colour = self.config.colour
        if colour.source == "catalog":
            return colour.column is not None and colour.column in self.items
        return self.colours is not None

    def catalog_labels(self, products: pd.DataFrame, column: str) -> np.ndarray:
        """Each product's own label of `column` (the columns search results and `store.item`
        carry, from either backend) as a distribution over the head's classes."""
        return catalog_distributions(products, column, self.encoder.checkpoint.tasks[column])

    def _item_colours(self) -> ItemColours | None:
        colour = self.config.colour
        if colour.source == "catalog" or colour.column is None:
            return None  # catalog: each product's label, read from the results
        stored = self.store.colours  # computed at build time: no model run at query time
        if colour.source == "head" and stored is not None and stored.column == colour.column:
            return ItemColours.stored(stored.values)
        if "image_file" not in self.items:
            return None
        files = [] if self.config.backend == "milvus" else self.items["image_file"].tolist()
        return ItemColours(self.colour_features, files,  # milvus: the results carry the files
                           self.config.download.max_pixels, self.config.model.batch_size)

    def colours_of(self, products: pd.DataFrame) -> np.ndarray:
        """The products' colour distributions (rows of results, or one `store.item`)."""
        if self.config.colour.source == "catalog":
            return self.catalog_labels(products, str(self.config.colour.column))
        files = products["image_file"].tolist() if self.config.backend == "milvus" else None
        return self.colours.of_rows(products["row"].to_numpy(), files)

    def colour_features(self, images: list[Image.Image]) -> np.ndarray:
        """Colour distributions of images, by the configured source."""
        if self.config.colour.source == "histogram":
            return histogram_features(images)
        return self.encoder.embed_images(images).probabilities[self.config.colour.column]

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
        """near-duplicate / similar / loosely similar, and with calibrated bands "unlikely"
        past the distance where best matches were more often the wrong type of product."""
        bands, calibrated = self.config.ui.bands, self.bands
        if distance <= bands.near_duplicate:
            return "near-duplicate"
        if calibrated is None:
            return "similar" if distance <= bands.similar else "loosely similar"
        if distance <= calibrated.confident:
            return "similar"
        return "loosely similar" if distance <= calibrated.no_match else "unlikely match"

    def no_match(self, best_distance: float | None) -> bool:
        """Is the best match past the calibrated bands ("no confident match in this catalog")?"""
        calibrated: CalibratedBands | None = self.bands
        return bool(calibrated is not None and best_distance is not None
                    and best_distance > calibrated.no_match)

    def fetch_url(self, url: str) -> FetchedImage:
        """A pasted image or product-page link → its image (FetchError says why not)."""
        return fetch_image(url, self.config.download)

    def query_image(self, source: str) -> Image.Image:
        """A local file or an http(s) URL (product pages resolve to their image)."""
        if is_http_url(source):
            return self.fetch_url(source).image
        return open_image(Path(source), self.config.download.max_pixels)

    def search_image(self, image: Image.Image, k: int, filters: dict | None = None,
                     colour: str | None = None, crop: Box | None = None) -> SearchResponse:
        """The k nearest products to an image (or its `crop` region; CropError if it does not
        fit), re-ranked by the colour mode (default: the config's) and `label_match`."""
        image = crop_image(image, crop)
        embedded = self.encoder.embed_images([image])
        weight = self.colour_weight(colour)
        results = self.store.search(embedded.vectors[0], self.candidates(k + 1, weight),
                                    filters=filters)
        query_labels = {column: embedded.probabilities[column][0]
                        for column in self.label_columns}
        same = None
        if len(results) and results["distance"].iloc[0] <= self.config.ui.bands.same_product:
            same = results.iloc[0].to_dict()
            results = results.iloc[1:]
        best = float(results["distance"].iloc[0]) if len(results) and same is None else None
        query_colour = None  # (a query that is a catalog product is never "no confident match")
        if weight:
            query_colour = (self.colour_features([image])[0]
                            if self.config.colour.source == "histogram"
                            else embedded.probabilities[self.config.colour.column][0])
        results = self.reranked(results, query_colour, weight, query_labels)
        return self.respond(results.head(k), embedded.predictions[0], same, best)

    def search_item(self, item_id: str, k: int, filters: dict | None = None,
                    colour: str | None = None) -> SearchResponse:
        """More like this: the product's stored vector; the product itself is never returned."""
        item = self.store.item(item_id)
        weight = self.colour_weight(colour)
        results = self.store.search(self.store.vector_of(item_id), self.candidates(k, weight),
                                    filters=filters, exclude_ids=[item_id])
        best = float(results["distance"].iloc[0]) if len(results) else None
        own = pd.DataFrame([item])
        query_colour = self.colours_of(own)[0] if weight else None
        query_labels = {column: labels for column in self.label_columns  # its own labels
                        if not np.isnan(labels := self.catalog_labels(own, column)[0]).any()}
        results = self.reranked(results, query_colour, weight, query_labels)
        return self.respond(results.head(k), self.predict_file(item.get("image_file", "")),
                            item, best)

    def colour_weight(self, mode: str | None) -> float:
        """The colour term's weight for a mode (None: the config's default); 0 without colours."""
        weight = colour_weight(self.config.colour, mode or self.config.colour.default)
        return weight if self.has_colour else 0.0

    def candidates(self, want: int, weight: float) -> int:
        """How many nearest products to fetch: more when colour or labels re-rank them."""
        wider = [self.config.colour.candidates] if weight else []
        wider += [self.config.label_match.candidates] if self.label_columns else []
        return max([want, *wider])

    def reranked(self, results: pd.DataFrame, query_colour: np.ndarray | None, weight: float,
                 query_labels: dict[str, np.ndarray]) -> pd.DataFrame:
        """Visual distance + weight x colour distance + each label_match column's weight x
        the distance of the query's distribution to the product's own label."""
        if query_colour is None and not query_labels:
            return results
        terms = {}
        if query_colour is not None and len(results):
            terms["colour_distance"] = (hellinger(query_colour, self.colours_of(results)), weight)
        for column, query in query_labels.items() if len(results) else ():
            terms[f"label_distance_{column}"] = (
                hellinger(query, self.catalog_labels(results, column)),
                self.config.label_match.weights[column])
        return rerank(results, terms) if terms else results

    def predict_file(self, image_file: str) -> Prediction:
        """The heads' top classes for a catalog image ({} when its file cannot be read)."""
        try:
            image = open_image(Path(image_file), self.config.download.max_pixels)
        except ImageError:
            return {}
        return self.encoder.embed_images([image]).predictions[0]

    def respond(self, results: pd.DataFrame, predicted: Prediction, same: dict | None,
                best: float | None = None) -> SearchResponse:
        results = results.reset_index(drop=True).copy()
        results["band"] = [self.band(d) for d in results["distance"]]
        results["rank"] = range(1, len(results) + 1)
        return SearchResponse(results, predicted, same, self.no_match(best))


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
            "same_product": response.same_product and response.same_product.get("id"),
            "no_confident_match": response.no_match}


class QueryListError(ValueError):
    """A list of queries (CSV) that cannot be matched; str() says why, for the user."""


def read_query_list(content: bytes, column: str | None = None,
                    max_rows: int | None = None) -> tuple[pd.DataFrame, str]:
    """A CSV of image or product-page links (or paths) → (table, the query column); the column
    defaults to `image`, else the first. QueryListError names what is wrong."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise QueryListError("The file is not UTF-8 text: save it as a UTF-8 CSV.") from None
    if not text.strip():
        raise QueryListError("The CSV is empty: it needs a header row and one link per row.")
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                            skip_blank_lines=True)
    except pd.errors.ParserError as error:
        raise QueryListError(f"The CSV is malformed: {malformed_reason(error)}.") from None
    if column is None:
        column = "image" if "image" in table else str(table.columns[0])
    if column not in table:
        raise QueryListError(f"The CSV has no column {column!r} (its columns: "
                             f"{', '.join(map(str, table.columns))}).")
    if table.empty:
        raise QueryListError("The CSV has a header but no rows to match.")
    if max_rows is not None and len(table) > max_rows:
        raise QueryListError(f"The CSV has {len(table):,} rows; at most {max_rows:,} are matched "
                             "at once (ui.list_max_rows). Split the list into smaller files.")
    return table, column


def malformed_reason(error: Exception) -> str:
    """pandas' tokenizer message in a merchandiser's words (line numbers kept)."""
    text = str(error).strip()
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if found:
        expected, line, saw = found.groups()
        return (f"line {line} has {saw} fields but the header has {expected} (a comma inside "
                "a link? put such values in double quotes)")
    return text.removeprefix("Error tokenizing data. C error: ")


Progress = Callable[[int, int], None]


def match_sources(service: SearchService, sources: Sequence[str], k: int,
                  filters: dict | None = None, colour: str | None = None,
                  progress: Progress | None = None) -> pd.DataFrame:
    """Match each source (an image or product-page link, or a local path): images are fetched
    concurrently (download.concurrency at once), searched one by one; a failed row is a row
    with its reason, never a stop. Columns: row, query, status, reason, rank, id, name,
    distance, band (one row per match; one row per failed query)."""
    def load(source: str) -> Image.Image:
        if not source.strip():
            raise ImageError("empty cell", "empty")
        return service.query_image(source.strip())

    rows: list[dict] = []
    workers = service.config.download.concurrency
    numbered = iter(enumerate(sources, start=1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        waiting: deque = deque()  # at most 2x workers images in memory at once
        while True:
            for number, source in itertools.islice(numbered, 2 * workers - len(waiting)):
                waiting.append((number, source, pool.submit(load, source)))
            if not waiting:
                break
            number, source, future = waiting.popleft()
            rows.extend(match_one(service, number, source, future.result, k, filters, colour))
            if progress:
                progress(number, len(sources))
    return pd.DataFrame(rows, columns=["row", "query", "status", "reason", "rank", "id",
                                       "name", "distance", "band"])


def match_one(service: SearchService, number: int, source: str,
              image: Callable[[], Image.Image], k: int, filters: dict | None,
              colour: str | None) -> list[dict]:
    try:
        response = service.search_image(image(), k, filters, colour)
    except (FetchError, ImageError, OSError) as error:
        return [{"row": number, "query": source, "status": "failed", "reason": str(error)}]
    if response.results.empty:
        return [{"row": number, "query": source, "status": "no match",
                 "reason": "no product matches the filters"}]
    return [{"row": number, "query": source, "status": "ok", "reason": "", "rank": rank,
             "id": match.id, "name": match.name, "distance": float(match.distance),
             "band": match.band}
            for rank, match in enumerate(response.results.itertuples(), start=1)]


def bulk_match(service: SearchService, table_in: Path, table_out: Path, k: int,
               filters: dict | None, column: str | None = None,
               colour: str | None = None) -> pd.DataFrame:
    """A CSV of image URLs or paths in, a CSV of matches out; a failed row is marked, not fatal."""
    queries, column = read_query_list(Path(table_in).read_bytes(), column)
    result = match_sources(service, queries[column].tolist(), k, filters, colour)
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
    parser.add_argument("--column", default=None, help="with --bulk-out: the CSV's link column")
    parser.add_argument("--crop", default=None, metavar="X,Y,W,H",
                        help="search this region of the image (pixels)")
    parser.add_argument("--colour", choices=list(MODES), default=None,
                        help="how much colour matters (default: colour.default of the config)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        config = load_config(args.config)
        k = args.k or config.ann_index.k
        service = SearchService.load(config)
        filters = parse_filters(args.filter) or None
        crop = parse_crop(args.crop) if args.crop else None
        if args.bulk_out:
            result = bulk_match(service, Path(args.query), args.bulk_out, k, filters,
                                args.column, args.colour)
            print(f"wrote {len(result)} rows to {args.bulk_out}")
            return 0
        response = service.search_image(service.query_image(args.query), k, filters,
                                         args.colour, crop)
    except (ConfigError, CheckpointError, IndexStoreError, FetchError, ImageError, CropError,
            QueryListError, OSError, ValueError) as error:
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
