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
        side = self.input_size  # PIL's bytes straight into a tensor: 2x faster than np.asarray
        pixels = torch.frombuffer(bytearray(resized.tobytes()), dtype=torch.uint8)
        return pixels.view(side, side, 3).permute(2, 0, 1)

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
    planes = colour_planes(work)
    background = corner_colour(planes, tolerance)
    if background is None:
        return None
    foreground = product_mask(planes, background, tolerance)
    rows, cols = np.flatnonzero(foreground.any(axis=1)), np.flatnonzero(foreground.any(axis=0))
    if len(rows) == 0:
        return None
    top, bottom = rows[0] * factor, min((rows[-1] + 1) * factor, height)
    left, right = cols[0] * factor, min((cols[-1] + 1) * factor, width)
    pad = round(margin * max(bottom - 1 - top, right - 1 - left))
    box = (int(max(left - pad, 0)), int(max(top - pad, 0)),
           int(min(right + pad, width)), int(min(bottom + pad, height)))
    return box, tuple(int(value) for value in background)


def product_mask(planes: np.ndarray, background: np.ndarray, tolerance: int) -> np.ndarray:
    """[h, w] True where a pixel and the mean of its 3x3 neighbourhood both differ from the
    `background` colour by more than `tolerance` in some channel: the product, not the card's
    grain or a stray speck."""
    low, high = np.maximum(background - tolerance, 0), np.minimum(background + tolerance, 255)
    return (outside_range(planes, low, high)
            & outside_range(neighbourhood_sum(planes), 9 * low, 9 * high))


def colour_planes(image: Image.Image) -> np.ndarray:
    """An RGB image as uint8 planes [3, h, w]: per-channel thresholds then broadcast over
    whole planes (numpy is slow on a trailing axis of 3; half the finder's time went there)."""
    width, height = image.size
    pixels = np.frombuffer(image.tobytes(), np.uint8).reshape(height, width, 3)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def corner_colour(planes: np.ndarray, tolerance: int) -> np.ndarray | None:
    """The per-channel median of the four corner patches' medians (int16 [3], floored), or None
    when the patches differ by more than `tolerance` in some channel (no uniform border)."""
    side = max(1, min(BORDER_PATCH, planes.shape[1] // 4, planes.shape[2] // 4))
    patches = np.concatenate([planes[:, :side, :side], planes[:, :side, -side:],
                              planes[:, -side:, :side], planes[:, -side:, -side:]], axis=1)
    ordered = np.sort(patches.reshape(3, 4, -1), axis=2).astype(np.int16)
    count = ordered.shape[2]
    twice_medians = np.sort(ordered[:, :, (count - 1) // 2] + ordered[:, :, count // 2], axis=1)
    if (twice_medians[:, 3] - twice_medians[:, 0]).max() > 2 * tolerance:
        return None
    return (twice_medians[:, 1] + twice_medians[:, 2]) // 4  # the median of the four


def neighbourhood_sum(planes: np.ndarray) -> np.ndarray:
    """The sum over each pixel's 3x3 neighbourhood per plane [c, h, w], edges repeated (int16:
    at most 9 x 255); 4x faster than PIL's BoxBlur on a catalog shot."""
    rows = planes.astype(np.int16)
    rows[:, 1:] += planes[:, :-1]
    rows[:, :-1] += planes[:, 1:]
    rows[:, 0] += planes[:, 0]  # the edge counted again (three times in a one-row image)
    rows[:, -1] += planes[:, -1]
    total = rows.copy()
    total[:, :, 1:] += rows[:, :, :-1]
    total[:, :, :-1] += rows[:, :, 1:]
    total[:, :, 0] += rows[:, :, 0]
    total[:, :, -1] += rows[:, :, -1]
    return total


def outside_range(planes: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """[h, w] True where some plane's value lies outside its [low, high] (0 <= low <= high):
    one wrapping unsigned subtraction (below `low` wraps to a large value), one comparison."""
    unsigned = np.uint8 if planes.dtype == np.uint8 else np.uint16
    shifted = planes.view(unsigned) - low.astype(unsigned)[:, None, None]
    return (shifted > (high - low).astype(unsigned)[:, None, None]).any(axis=0)
