"""The searched region of a query image: `x,y,w,h` boxes (the link's `crop=` and `--crop`),
checked against the image, and the default box (the product's bounds inside a uniform border)."""

from __future__ import annotations

from typing import NamedTuple

from PIL import Image

from vectorizer.preprocess import uniform_border

MIN_SIDE = 8  # pixels: a smaller region cannot be searched meaningfully


class CropError(ValueError):
    """A crop box that cannot be used; str() says why, for the user."""


class Box(NamedTuple):
    x: int
    y: int
    w: int
    h: int

    def text(self) -> str:
        return f"{self.x},{self.y},{self.w},{self.h}"


def parse_crop(text: str) -> Box:
    """'x,y,w,h' (integers, pixels of the original image) → Box."""
    parts = [part.strip() for part in str(text).split(",")]
    try:
        if len(parts) != 4:
            raise ValueError
        values = [int(part) for part in parts]
    except ValueError:
        raise CropError(f"crop {text!r}: expected four whole numbers x,y,w,h (pixels), "
                        "e.g. 10,20,200,300") from None
    return Box(*values)


def check_crop(box: Box, size: tuple[int, int]) -> Box:
    """The box if it lies inside an image of `size` (width, height) and is large enough."""
    width, height = size
    if box.w <= 0 or box.h <= 0:
        raise CropError(f"crop {box.text()}: the box has zero size; draw a larger box")
    if box.x < 0 or box.y < 0 or box.x + box.w > width or box.y + box.h > height:
        raise CropError(f"crop {box.text()}: the box reaches outside the image "
                        f"({width}x{height} pixels)")
    if box.w < MIN_SIDE or box.h < MIN_SIDE:
        raise CropError(f"crop {box.text()}: the box is smaller than {MIN_SIDE}x{MIN_SIDE} "
                        "pixels; draw a larger box")
    return box


def crop_image(image: Image.Image, box: Box | None) -> Image.Image:
    """The boxed region (the whole image for None); CropError when the box does not fit."""
    if box is None:
        return image
    box = check_crop(box, image.size)
    return image.crop((box.x, box.y, box.x + box.w, box.y + box.h))


def default_box(image: Image.Image) -> Box:
    """The product's own bounds when a uniform border can be trimmed, else the whole image."""
    found = uniform_border(image)
    if found is None:
        return Box(0, 0, image.width, image.height)
    left, top, right, bottom = found[0]
    return Box(left, top, right - left, bottom - top)
