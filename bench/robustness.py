"""Robustness: mAP@k per task when test queries are altered as pasted photos are."""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import exact_top, split_rows
from ranking import variant

from config import AppConfig, load_config
from index_store.evaluate import retrieval_metrics
from ingest.catalog import load_catalog
from search import SearchService
from search_quality import search_scores
from vectorizer.dataset import load_all
from vectorizer.encoder import Encoder
from vectorizer.images import open_image

Alteration = Callable[[Image.Image, np.random.Generator], Image.Image]


def upscaled(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A 4x bicubic upscale, as a thumbnail grabbed from a web page is."""
    return image.resize((image.width * 4, image.height * 4), Image.BICUBIC)


def padded_wide(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Placed on a 16:9 light-grey canvas (a screenshot of a product tile)."""
    width = max(image.width, image.height * 16 // 9)
    canvas = Image.new("RGB", (width, image.height), (236, 236, 236))
    canvas.paste(image, ((width - image.width) // 2, 0))
    return canvas


def recompressed(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """JPEG quality 20, as images passed through chat tools are."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=20)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _background_mask(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image)
    return pixels.min(axis=2) > 235


def coloured_background(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The white studio background replaced by a random flat colour."""
    pixels = np.asarray(image).copy()
    pixels[_background_mask(image)] = rng.integers(0, 256, size=3)
    return Image.fromarray(pixels)


def textured_background(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The white background replaced by a blurred random texture (a photo taken on a surface)."""
    noise = rng.integers(60, 200, size=(image.height, image.width, 3), dtype=np.uint8)
    texture = np.asarray(Image.fromarray(noise).filter(ImageFilter.GaussianBlur(2)))
    pixels = np.asarray(image).copy()
    mask = _background_mask(image)
    pixels[mask] = texture[mask]
    return Image.fromarray(pixels)


def rotated(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotated by 10 degrees either way, white corners."""
    angle = float(rng.choice([-10, 10]))
    return image.rotate(angle, resample=Image.BILINEAR, expand=True, fillcolor=(255, 255, 255))


def cropped(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The central 80 % of each side (a tight crop cutting the product's edges)."""
    dx, dy = image.width // 10, image.height // 10
    return image.crop((dx, dy, image.width - dx, image.height - dy))


ALTERATIONS: dict[str, Alteration] = {
    "unaltered": lambda image, rng: image, "upscaled 4x": upscaled,
    "padded to 16:9": padded_wide, "JPEG quality 20": recompressed,
    "coloured background": coloured_background, "textured background": textured_background,
    "rotated 10 degrees": rotated, "cropped to 80 %": cropped,
}


def embed_altered(encoder: Encoder, images: list[Image.Image], alteration: Alteration,
                  seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tensors = torch.stack([encoder.preprocess(alteration(image, rng)) for image in images])
    return np.concatenate([encoder.forward(tensors[i:i + 256])[0]
                           for i in range(0, len(tensors), 256)])


def shown_rows(config: AppConfig, query_ids: list[str], tasks: list[str]) -> list[dict]:
    """The same alterations through the app's query path on the real index (the whole catalog
    as the pool): the vector alone (any colour, no label match) and the search as shown."""
    shown = SearchService.load(config)
    rows_of = {item_id: row for row, item_id in enumerate(shown.items["id"].astype(str))}
    rows = [rows_of[item_id] for item_id in query_ids if item_id in rows_of]
    k = config.evaluation.k
    out = []
    vector = variant(shown, config.colour.source, {})
    for search, service, mode in (("vector", vector, "any"), ("search as shown", shown, None)):
        for name, alteration in ALTERATIONS.items():
            metrics = search_scores(service, rows, tasks, k, mode,
                                    alter=partial(alteration, rng=np.random.default_rng(1)))
            out.append({"search": search, "alteration": name,
                        **{task: round(metrics[task]["map_at_k"], 4) for task in tasks}})
            print(out[-1], file=sys.stderr, flush=True)
    return out


def report_shown(config: AppConfig, query_ids: list[str], tasks: list[str], as_json: bool
                 ) -> int:
    rows, k = shown_rows(config, query_ids, tasks), config.evaluation.k
    report = {"queries": len(query_ids), "pool": "the index", "k": k, "results": rows}
    searches = dict.fromkeys(row["search"] for row in rows)
    print(json.dumps(report) if as_json else "\n".join(
        f"{search}:\n" + markdown([row for row in rows if row["search"] == search], tasks, k)
        for search in searches))
    return 0


def markdown(rows: list[dict], tasks: list[str], k: int) -> str:
    lines = ["| query image | " + " | ".join(f"{t} mAP@{k}" for t in tasks) + " |",
             "|---|" + "---|" * len(tasks)]
    base = rows[0]
    for row in rows:
        cells = [f"{row[t]:.3f}" + ("" if row is base else f" ({row[t] - base[t]:+.3f})")
                 for t in tasks]
        lines.append(f"| {row['alteration']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="config/fashion.yml")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="500 queries, 8,000 pool items")
    parser.add_argument("--trim", choices=["model", "on", "off"], default="model",
                        help="trim uniform borders before padding (default: as the model says)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--shown", action="store_true",
                        help="through the app's query path on the real index instead: the "
                             "vector alone and the search as shown (re-ranked as configured)")
    args = parser.parse_args()
    config = load_config(args.config)
    encoder = Encoder.from_config(config)
    if args.trim != "model":
        encoder.preprocess = replace(encoder.preprocess, trim_border=args.trim == "on")
    items = load_catalog(config)
    query_rows, pool_rows = split_rows(items, encoder.meta["split"], args.queries, args.quick)
    if args.shown:
        return report_shown(config, items["id"].iloc[query_rows].astype(str).tolist(),
                            list(encoder.meta["tasks"]), args.json)
    pool_images, _ = load_all(items["image_ref"].iloc[pool_rows].tolist(), encoder.preprocess,
                              batch_size=256, workers=config.model.num_workers,
                              max_pixels=config.download.max_pixels)
    pool = np.concatenate([encoder.forward(pool_images[i:i + 256])[0]
                           for i in range(0, len(pool_images), 256)])
    originals = [open_image(items["image_ref"].iloc[row], config.download.max_pixels)
                 for row in query_rows]
    k, tasks = config.evaluation.k, list(encoder.meta["tasks"])
    pool_labels = items[tasks].iloc[pool_rows].reset_index(drop=True)
    query_labels = items[tasks].iloc[query_rows].reset_index(drop=True)
    rows = []
    for name, alteration in ALTERATIONS.items():
        found = exact_top(embed_altered(encoder, originals, alteration, seed=1), pool, k)
        metrics = retrieval_metrics(query_labels, found, pool_labels, tasks, k)
        rows.append({"alteration": name,
                     **{task: round(metrics[task]["map_at_k"], 4) for task in tasks}})
    out = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.md").write_text(
        f"Test queries ({len(query_rows)}), altered, against training items ({len(pool_rows)}), "
        f"exact cosine search; in brackets the change from the unaltered query.\n\n"
        + markdown(rows, tasks, k))
    report = {"queries": len(query_rows), "pool": len(pool_rows), "k": k, "results": rows}
    print(json.dumps(report) if args.json else markdown(rows, tasks, k))
    return 0


if __name__ == "__main__":
    sys.exit(main())
