"""How much colour matters: any / similar / same colour, by re-ranking a wider candidate set.

score = visual distance + weight(mode) * colour distance, where the colour distance is the
Hellinger distance (0 = same, 1 = nothing in common) between two colour distributions: the
model's colour head output (`source: head`) or a colour histogram of the product's pixels
(`source: histogram`). Catalog products' head distributions are stored with the index at build
time (`index_store.colours`); histograms, and head distributions of an index built without
them, are computed from the image files the first time a product is a candidate; the most
recently used `ItemColours.max_rows` of them are kept (a Milvus catalog may be larger than memory).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from config.schema import ColourConfig
from vectorizer.images import ImageError, open_image
from vectorizer.preprocess import colour_planes, corner_colour, product_mask

log = logging.getLogger(__name__)

MODES = {"any": "Any colour", "similar": "Similar colour", "same": "Same colour"}
HISTOGRAM_BINS = 4           # per RGB channel: 64 colour cells
HISTOGRAM_SIDE = 64          # images are shrunk to this before counting (speed, not precision)
BORDER_TOLERANCE = 24

Features = Callable[[list[Image.Image]], np.ndarray]


def colour_weight(config: ColourConfig, mode: str) -> float:
    """The colour term's weight of a mode (0 for "any" or when colour control is off)."""
    if mode not in MODES:
        raise ValueError(f"colour mode {mode!r}: expected one of {', '.join(MODES)}")
    if config.column is None or mode == "any":
        return 0.0
    return config.similar_weight if mode == "similar" else config.same_weight


def colour_histogram(image: Image.Image) -> np.ndarray:
    """A normalised RGB histogram (HISTOGRAM_BINS³) of the product's pixels: a uniform border
    (the studio background, or a grainy card) is left out when there is one."""
    small = image.convert("RGB")
    small.thumbnail((HISTOGRAM_SIDE, HISTOGRAM_SIDE))
    planes = colour_planes(small)
    pixels = planes.reshape(3, -1).T.astype(np.int16)
    background = corner_colour(planes, BORDER_TOLERANCE)
    if background is not None:  # the trimming's own test: grain on the card is not product
        product = product_mask(planes, background, BORDER_TOLERANCE).reshape(-1)
        pixels = pixels[product] if product.any() else pixels
    cells = (pixels * HISTOGRAM_BINS) // 256
    index = (cells[:, 0] * HISTOGRAM_BINS + cells[:, 1]) * HISTOGRAM_BINS + cells[:, 2]
    counts = np.bincount(index, minlength=HISTOGRAM_BINS ** 3).astype(np.float32)
    return counts / counts.sum()


def histogram_features(images: list[Image.Image]) -> np.ndarray:
    return np.stack([colour_histogram(image) for image in images]).astype(np.float32)


def hellinger(query: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Hellinger distance of one distribution to each row (rows of NaN give NaN)."""
    overlap = np.sqrt(np.clip(items, 0, None) * np.clip(query, 0, None)[None, :]).sum(axis=1)
    return np.sqrt(np.clip(1.0 - overlap, 0.0, 1.0))


class ItemColours:
    """Colour distributions of catalog rows: computed from their images on first need, or
    stored beforehand (`ItemColours.stored`)."""

    def __init__(self, features: Features, image_files: Sequence[object], max_pixels: int,
                 batch_size: int = 128, max_rows: int = 200_000) -> None:
        self.features, self.image_files = features, list(image_files)
        self.max_pixels, self.batch_size, self.max_rows = max_pixels, batch_size, max_rows
        self._known: OrderedDict[int, np.ndarray | None] = OrderedDict()  # None: unreadable
        self._lock = threading.Lock()
        self._stored: np.ndarray | None = None

    @classmethod
    def stored(cls, values: np.ndarray) -> ItemColours:
        """Distributions computed beforehand for every row (nothing is computed on demand)."""
        colours = cls(histogram_features, [], 0)
        colours._stored = values
        return colours

    def of_rows(self, rows: Sequence[int], files: Sequence[object] | None = None
                ) -> np.ndarray:
        """[len(rows), d]; a row whose image cannot be read is NaN. `files`: each row's image
        file, where the rows' files were not given up front (a Milvus result carries its own)."""
        if self._stored is not None:
            return self._stored[np.asarray(rows, dtype=np.int64)]
        rows = [int(row) for row in rows]
        file_of = dict(zip(rows, files, strict=True)) if files is not None else None
        with self._lock:
            found = {row: self._known[row] for row in dict.fromkeys(rows) if row in self._known}
            for row in found:
                self._known.move_to_end(row)
        missing = [row for row in dict.fromkeys(rows) if row not in found]
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start:start + self.batch_size]
            found.update(self._compute(batch, [file_of[row] if file_of else self.image_files[row]
                                               for row in batch]))
        values = [found[row] for row in rows]
        width = max((len(v) for v in values if v is not None), default=1)
        nan = np.full(width, np.nan, np.float32)
        return np.stack([nan if v is None else v for v in values]) if values else \
            np.zeros((0, width), np.float32)

    def _compute(self, rows: list[int], files: list[object]) -> dict[int, np.ndarray | None]:
        """The rows' distributions (None where the image cannot be read), remembered."""
        images, readable = [], []
        for row, file in zip(rows, files, strict=True):
            try:
                images.append(open_image(Path(str(file)), self.max_pixels))
                readable.append(row)
            except ImageError as error:
                log.info("no colour for catalog row %d: %s", row, error)
        computed: dict[int, np.ndarray | None] = dict.fromkeys(rows)
        computed.update(zip(readable, list(self.features(images)) if images else [], strict=True))
        with self._lock:
            self._known.update(computed)
            while len(self._known) > self.max_rows:  # least recently used first
                self._known.popitem(last=False)
        return computed


def rerank(results: pd.DataFrame, terms: dict[str, tuple[np.ndarray, float]]) -> pd.DataFrame:
    """Candidates ordered by visual distance + the sum of weight * distance over `terms`
    ({column: (distances, weight)}, e.g. the colour and the type distance; a candidate without
    a value gets the candidates' mean); adds each term's column."""
    score = results["distance"].to_numpy().astype(np.float64)
    columns = {}
    for column, (distances, weight) in terms.items():
        values = np.asarray(distances, dtype=np.float64)
        known = ~np.isnan(values)
        columns[column] = np.where(known, values, values[known].mean() if known.any() else 0.0)
        score = score + weight * columns[column]
    scored = results.assign(**columns, _score=score)
    return (scored.sort_values(["_score", "distance"], kind="stable")
            .drop(columns="_score").reset_index(drop=True))
