"""Generate the offline demo catalog: synthetic shots labelled garment, colour, pattern."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from config import ConfigError, load_config
from util.files import atomic_path

log = logging.getLogger(__name__)

IMAGE_SIZE = (60, 80)
COLOURS = {
    "Red": (200, 30, 40), "Blue": (40, 70, 190), "Green": (40, 150, 60), "Black": (25, 25, 25),
    "Yellow": (235, 200, 40), "Pink": (235, 120, 170), "Grey": (130, 130, 135),
    "Brown": (120, 75, 40),
}
PATTERNS = ["Solid", "Striped", "Dotted", "Checked"]
# Outlines in unit coordinates (x, y in 0..1) of each garment's silhouette.
SHAPES = {
    "Tshirt": [(.2, .2), (.4, .15), (.6, .15), (.8, .2), (.95, .35), (.8, .42), (.75, .35),
               (.75, .85), (.25, .85), (.25, .35), (.2, .42), (.05, .35)],
    "Dress": [(.38, .1), (.62, .1), (.65, .35), (.85, .9), (.15, .9), (.35, .35)],
    "Trousers": [(.28, .08), (.72, .08), (.78, .92), (.56, .92), (.5, .35), (.44, .92),
                 (.22, .92)],
    "Skirt": [(.32, .3), (.68, .3), (.85, .75), (.15, .75)],
    "Shoe": [(.1, .5), (.45, .5), (.55, .6), (.9, .65), (.92, .75), (.1, .75)],
    "Bag": [(.2, .4), (.8, .4), (.85, .85), (.15, .85)],
    "Cap": [(.25, .55), (.3, .38), (.5, .3), (.7, .38), (.75, .55), (.95, .6), (.25, .6)],
    "Shorts": [(.25, .25), (.75, .25), (.8, .65), (.55, .65), (.5, .45), (.45, .65), (.2, .65)],
}
GENDERS = {"Dress": ["Women"], "Skirt": ["Women"], "Cap": ["Unisex", "Men"],
           "Bag": ["Women", "Unisex"]}


def generate_catalog(out_table: Path, count: int, seed: int) -> pd.DataFrame:
    """Write `count` product images and their table; the same seed gives the same catalog."""
    rng = np.random.default_rng(seed)
    image_dir = out_table.parent / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = [make_item(index, rng, image_dir) for index in range(count)]
    table = pd.DataFrame(rows)
    with atomic_path(out_table) as temporary:
        table.to_csv(temporary, index=False)
    return table


def make_item(index: int, rng: np.random.Generator, image_dir: Path) -> dict[str, str]:
    garment = str(rng.choice(list(SHAPES)))
    colour = str(rng.choice(list(COLOURS)))
    pattern = str(rng.choice(PATTERNS))
    gender = str(rng.choice(GENDERS.get(garment, ["Men", "Women"])))
    item_id = f"{100000 + index}"
    image = draw_product(garment, colour, pattern, rng)
    image.save(image_dir / f"{item_id}.jpg", quality=90)
    pattern_word = "" if pattern == "Solid" else f"{pattern.lower()} "
    return {"id": item_id, "name": f"{gender} {colour.lower()} {pattern_word}{garment.lower()}",
            "garment": garment, "colour": colour, "pattern": pattern, "gender": gender,
            "image_path": f"images/{item_id}.jpg"}


def draw_product(garment: str, colour: str, pattern: str, rng: np.random.Generator) -> Image.Image:
    """One studio-style shot: the silhouette, filled and patterned, on a near-white background."""
    width, height = IMAGE_SIZE
    background = tuple(int(v) for v in rng.integers(238, 256, size=3))
    image = Image.new("RGB", IMAGE_SIZE, background)
    scale, dx, dy = rng.uniform(0.8, 1.0), rng.uniform(-4, 4), rng.uniform(-4, 4)
    outline = [(x * width * scale + dx + width * (1 - scale) / 2,
                y * height * scale + dy + height * (1 - scale) / 2) for x, y in SHAPES[garment]]
    fill = jitter(COLOURS[colour], rng)
    mask = Image.new("L", IMAGE_SIZE, 0)
    ImageDraw.Draw(mask).polygon(outline, fill=255)
    image.paste(patterned_fill(fill, pattern, rng), mask=mask)
    return image


def jitter(rgb: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(np.clip(v + rng.integers(-18, 19), 0, 255)) for v in rgb)


def patterned_fill(fill: tuple[int, ...], pattern: str, rng: np.random.Generator) -> Image.Image:
    layer = Image.new("RGB", IMAGE_SIZE, fill)
    draw = ImageDraw.Draw(layer)
    ink = tuple(255 - v if sum(fill) < 300 else v // 3 for v in fill)
    step = int(rng.integers(6, 9))
    width, height = IMAGE_SIZE
    if pattern == "Striped":
        for y in range(0, height, step):
            draw.rectangle([0, y, width, y + step // 3], fill=ink)
    elif pattern == "Dotted":
        for y in range(2, height, step):
            for x in range(2 + (y // step) % 2 * step // 2, width, step):
                draw.ellipse([x, y, x + 2, y + 2], fill=ink)
    elif pattern == "Checked":
        for offset in range(0, max(width, height), step):
            draw.line([offset, 0, offset, height], fill=ink, width=1)
            draw.line([0, offset, width, offset], fill=ink, width=1)
    return layer


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.synthetic", description=__doc__)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--count", type=int, default=1200, help="number of products")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="regenerate even if the table exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out_table = Path(load_config(args.config).paths.images_dataframe_path)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if out_table.is_file() and not args.force:
        print(f"demo catalog already at {out_table} (use --force to regenerate)")
        return 0
    table = generate_catalog(out_table, args.count, args.seed)
    print(json.dumps({"table": str(out_table), "items": len(table)}))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
