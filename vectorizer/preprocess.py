"""The one image preprocessing, stored with the model; training, indexing, queries use it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> Preprocess:
        return cls(input_size=int(values["input_size"]), mean=tuple(values["mean"]),
                   std=tuple(values["std"]), pad_value=int(values["pad_value"]))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        square = self.pad_to_square(image.convert("RGB"))
        resized = square.resize((self.input_size, self.input_size), Image.Resampling.BILINEAR,
                                reducing_gap=2.0)
        return torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1)

    def pad_to_square(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        side = max(width, height)
        if width == height:
            return image
        canvas = Image.new("RGB", (side, side), (self.pad_value,) * 3)
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        return canvas
