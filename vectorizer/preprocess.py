"""The one image preprocessing, stored with the model; training, indexing, queries use it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from vectorizer.pretrained import IMAGENET_MEAN, IMAGENET_STD

TRIM_REVISION = 2       # bumped when trimming gives other pixels: vector caches are keyed by it
BORDER_PATCH = 4        # the border colour: per-channel median of each corner's 4x4 patch
BORDER_WORK_SIDE = 512  # larger images are searched on a block-averaged copy this size


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
    when the corners share one colour and something else is inside; else None.

    Tolerates grain and JPEG noise on the border (a phone photo on a plain card or table): the
    corners' colour is the median of a patch each, and a pixel belongs to the product only if
    it and the mean of its 3x3 neighbourhood both differ from that colour by more than
    `tolerance` in some channel, so a stray speck does not stretch the box to the edges.
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    width, height = rgb.size
    factor = max(1, -(-max(width, height) // BORDER_WORK_SIDE))
    work = rgb.reduce(factor) if factor > 1 else rgb  # a block average: also denoises
    pixels = np.asarray(work, dtype=np.int16)
    background = corner_colour(pixels, tolerance)
    if background is None:
        return None
    foreground = (differs(pixels, background, tolerance)
                  & differs(neighbourhood_sum(pixels), 9 * background, 9 * tolerance))
    rows, cols = np.flatnonzero(foreground.any(axis=1)), np.flatnonzero(foreground.any(axis=0))
    if len(rows) == 0:
        return None
    top, bottom = rows[0] * factor, min((rows[-1] + 1) * factor, height)
    left, right = cols[0] * factor, min((cols[-1] + 1) * factor, width)
    pad = round(margin * max(bottom - 1 - top, right - 1 - left))
    box = (int(max(left - pad, 0)), int(max(top - pad, 0)),
           int(min(right + pad, width)), int(min(bottom + pad, height)))
    return box, tuple(int(value) for value in background)


def corner_colour(pixels: np.ndarray, tolerance: int) -> np.ndarray | None:
    """The per-channel median of the four corner patches' medians, or None when the patches
    differ by more than `tolerance` in some channel (no uniform border)."""
    side = max(1, min(BORDER_PATCH, pixels.shape[0] // 4, pixels.shape[1] // 4))
    patches = np.sort(np.stack([pixels[:side, :side], pixels[:side, -side:], pixels[-side:, :side],
                                pixels[-side:, -side:]]).reshape(4, -1, 3), axis=1)
    middle = patches.shape[1] // 2  # the median, 5x faster than np.median on such small arrays
    corners = (patches[:, (patches.shape[1] - 1) // 2] + patches[:, middle]) / 2
    if np.ptp(corners, axis=0).max() > tolerance:
        return None
    return np.median(corners, axis=0).astype(np.int16)


def neighbourhood_sum(pixels: np.ndarray) -> np.ndarray:
    """The sum over each pixel's 3x3 neighbourhood, edges repeated (int16: at most 9 x 255);
    4x faster than PIL's BoxBlur on a catalog shot."""
    rows = pixels.copy()
    rows[1:] += pixels[:-1]
    rows[:-1] += pixels[1:]
    rows[0] += pixels[0]  # the edge counted again (three times in a one-row image)
    rows[-1] += pixels[-1]
    total = rows.copy()
    total[:, 1:] += rows[:, :-1]
    total[:, :-1] += rows[:, 1:]
    total[:, 0] += rows[:, 0]
    total[:, -1] += rows[:, -1]
    return total


def differs(pixels: np.ndarray, colour: np.ndarray, tolerance: int) -> np.ndarray:
    """[h, w] True where some channel is farther than `tolerance` from `colour`."""
    difference = np.abs(pixels - colour)
    return ((difference[..., 0] > tolerance) | (difference[..., 1] > tolerance)
            | (difference[..., 2] > tolerance))  # 6x faster than .max(axis=2) over 3
