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
REDUCING_GAP = 2.0      # Pillow's resize shrinks by whole blocks first from this ratio x 2


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
        return self.resized(self.pad_to_square(image, fill))

    def resized(self, square: Image.Image) -> torch.Tensor:
        """A square image at the input size as uint8 [3, s, s]."""
        resized = square.resize((self.input_size, self.input_size), Image.Resampling.BILINEAR,
                                reducing_gap=REDUCING_GAP)
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
    return uniform_borders(colour_planes(work)[None], tolerance, margin, factor, (width, height))[0]


def uniform_borders(planes: np.ndarray, tolerance: int = 24, margin: float = 0.05,
                    factor: int = 1, size: tuple[int, int] | None = None
                    ) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int]] | None]:
    """`uniform_border` of each of n same-sized images at once (uint8 planes [n, 3, h, w],
    `factor` times smaller than the images' `size` (width, height)): numpy's per-call cost,
    not the pixels, is most of one 60x80 catalog shot's search."""
    width, height = size or (planes.shape[3] * factor, planes.shape[2] * factor)
    backgrounds = corner_colours(planes, tolerance)
    found: list = [None] * len(planes)
    bordered = np.flatnonzero(backgrounds[:, 0] >= 0)
    if len(bordered) == 0:
        return found
    foreground = product_mask(planes[bordered], backgrounds[bordered], tolerance)
    rows, cols = foreground.any(axis=2), foreground.any(axis=1)
    edges = zip(rows.any(axis=1).tolist(), (rows.argmax(axis=1) * factor).tolist(),
                ((rows.shape[1] - rows[:, ::-1].argmax(axis=1)) * factor).tolist(),
                (cols.argmax(axis=1) * factor).tolist(),
                ((cols.shape[1] - cols[:, ::-1].argmax(axis=1)) * factor).tolist(), strict=True)
    colours = backgrounds.tolist()  # plain ints: numpy scalars cost more than the pixels here
    for image, (inside, top, bottom, left, right) in zip(bordered.tolist(), edges, strict=True):
        if inside:
            bottom, right = min(bottom, height), min(right, width)
            pad = round(margin * max(bottom - 1 - top, right - 1 - left))
            box = (max(left - pad, 0), max(top - pad, 0), min(right + pad, width),
                   min(bottom + pad, height))
            found[image] = box, tuple(colours[image])
    return found


def product_mask(planes: np.ndarray, background: np.ndarray, tolerance: int) -> np.ndarray:
    """[..., h, w] True where a pixel and the mean of its 3x3 neighbourhood both differ from
    the `background` colour ([..., 3]) by more than `tolerance` in some channel: the product,
    not the card's grain or a stray speck. `planes` is [..., 3, h, w]."""
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
    colour = corner_colours(planes[None], tolerance)[0]
    return None if colour[0] < 0 else colour


def corner_colours(planes: np.ndarray, tolerance: int) -> np.ndarray:
    """`corner_colour` of each of n images (planes [n, 3, h, w]) as int16 [n, 3]; -1 rows
    where an image has no uniform border."""
    side = max(1, min(BORDER_PATCH, planes.shape[2] // 4, planes.shape[3] // 4))
    patches = np.concatenate([planes[..., :side, :side], planes[..., :side, -side:],
                              planes[..., -side:, :side], planes[..., -side:, -side:]], axis=2)
    ordered = np.sort(patches.reshape(*planes.shape[:2], 4, -1), axis=3).astype(np.int16)
    count = ordered.shape[3]
    twice_medians = np.sort(ordered[..., (count - 1) // 2] + ordered[..., count // 2], axis=2)
    colours = (twice_medians[..., 1] + twice_medians[..., 2]) // 4  # the median of the four
    uneven = (twice_medians[..., 3] - twice_medians[..., 0]).max(axis=1) > 2 * tolerance
    colours[uneven] = -1
    return colours


def neighbourhood_sum(planes: np.ndarray) -> np.ndarray:
    """The sum over each pixel's 3x3 neighbourhood per plane [..., h, w], edges repeated
    (int16: at most 9 x 255); 4x faster than PIL's BoxBlur on a catalog shot."""
    rows = planes.astype(np.int16)
    rows[..., 1:, :] += planes[..., :-1, :]
    rows[..., :-1, :] += planes[..., 1:, :]
    rows[..., 0, :] += planes[..., 0, :]  # the edge counted again (three times in a one-row image)
    rows[..., -1, :] += planes[..., -1, :]
    total = rows.copy()
    total[..., 1:] += rows[..., :-1]
    total[..., :-1] += rows[..., 1:]
    total[..., 0] += rows[..., 0]
    total[..., -1] += rows[..., -1]
    return total


def outside_range(planes: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """[..., h, w] True where some plane's value lies outside its [low, high] ([..., 3],
    0 <= low <= high): one wrapping unsigned subtraction (below `low` wraps to a large value),
    one comparison. `planes` is [..., 3, h, w]."""
    unsigned = np.uint8 if planes.dtype == np.uint8 else np.uint16
    shifted = planes.view(unsigned) - low.astype(unsigned)[..., None, None]
    return (shifted > (high - low).astype(unsigned)[..., None, None]).any(axis=-3)
