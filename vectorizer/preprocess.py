"""The one image preprocessing, stored with the model; training, indexing, queries use it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from vectorizer.pretrained import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class Preprocess:
    """Pad to a square with the background colour, resize, and hand over uint8 CHW tensors.

    Normalisation (mean/std) happens inside the model, so uint8 tensors travel between
    processes (four times less memory than float) and the weights carry their own statistics.
    """

    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pad_value: int = 255
    trim_border: bool = False  # crop a uniform border (a product tile on a wide canvas) first

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> Preprocess:
        return cls(input_size=int(values["input_size"]), mean=tuple(values["mean"]),
                   std=tuple(values["std"]), pad_value=int(values["pad_value"]),
                   trim_border=bool(values.get("trim_border", False)))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image if image.mode == "RGB" else image.convert("RGB")  # nothing is drawn on it
        fill = (self.pad_value,) * 3
        if self.trim_border:  # pad with the border's own colour: a product on a coloured
            image, fill = trim_uniform_border(image, fill)  # card stays on that colour
        square = self.pad_to_square(image, fill)
        resized = square.resize((self.input_size, self.input_size), Image.Resampling.BILINEAR,
                                reducing_gap=2.0)
        return torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1)

    @staticmethod
    def pad_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
        width, height = image.size
        side = max(width, height)
        if width == height:
            return image
        canvas = Image.new("RGB", (side, side), fill)
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        return canvas


def trim_uniform_border(image: Image.Image, fill: tuple[int, int, int], tolerance: int = 24,
                        margin: float = 0.05) -> tuple[Image.Image, tuple[int, int, int]]:
    """Crop the border whose colour matches the corners, keeping a small margin around the rest.

    Returns the crop and the border's colour, so that a pasted product tile on a wide or
    coloured canvas frames like a catalog shot. An image with no uniform border, or nothing but
    border, is returned unchanged with `fill`.
    """
    found = uniform_border(image, tolerance, margin)
    if found is None:
        return image, fill
    box, background = found
    return image.crop(box), background


def uniform_border(image: Image.Image, tolerance: int = 24, margin: float = 0.05
                   ) -> tuple[tuple[int, int, int, int], tuple[int, int, int]] | None:
    """(the product's box (left, top, right, bottom) with a small margin, the border colour)
    when the corners share one colour and something else is inside; else None."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    width, height = rgb.size
    corners = np.array([rgb.getpixel(corner) for corner in
                        ((0, 0), (width - 1, 0), (0, height - 1), (width - 1, height - 1))],
                       dtype=np.int16)
    if np.ptp(corners, axis=0).max() > tolerance:  # decided before the whole image is read
        return None
    background = np.median(corners, axis=0).astype(np.int16)
    difference = np.abs(np.asarray(rgb, dtype=np.int16) - background)
    foreground = ((difference[..., 0] > tolerance) | (difference[..., 1] > tolerance)
                  | (difference[..., 2] > tolerance))  # 6x faster than .max(axis=2) over 3
    rows, cols = np.flatnonzero(foreground.any(axis=1)), np.flatnonzero(foreground.any(axis=0))
    if len(rows) == 0:
        return None
    pad = round(margin * max(rows[-1] - rows[0], cols[-1] - cols[0]))
    box = (int(max(cols[0] - pad, 0)), int(max(rows[0] - pad, 0)),
           int(min(cols[-1] + 1 + pad, width)), int(min(rows[-1] + 1 + pad, height)))
    return box, tuple(int(value) for value in background)
