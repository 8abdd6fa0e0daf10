"""Training augmentations that turn studio shots into photo-like queries, on whole uint8 batches.

Hue and saturation are never changed (colour is a label): only geometry, the background,
brightness, contrast and sharpness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as functional

from config.schema import AUGMENTATIONS


def augment(images: torch.Tensor, generator: torch.Generator,
            parts: Sequence[str] = AUGMENTATIONS, warp_share: float = 1.0) -> torch.Tensor:
    """uint8 [n, 3, s, s] in, float in 0..255 out, as the model expects; `parts` names the
    augmentations to apply (`training.augment`), always in this order; the warp moves a
    `warp_share` of the images (`training.warp_share`)."""
    unknown = set(parts) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"unknown augmentations {sorted(unknown)}; known: {AUGMENTATIONS}")
    batch = images.float()
    if "flip" in parts:
        batch = random_flip(batch, generator)
    if "warp" in parts:
        batch = random_warp(batch, generator, warp_share)
    if "background" in parts:
        batch = swap_background(batch, generator, probability=0.6)
    if "lighting" in parts:
        batch = random_lighting(batch, generator)
    if "blur" in parts:
        batch = random_blur(batch, generator, probability=0.2)
    return batch.clamp_(0, 255)


def _uniform(shape: int | tuple, low: float, high: float,
             generator: torch.Generator) -> torch.Tensor:
    shape = (shape,) if isinstance(shape, int) else shape
    return low + (high - low) * torch.rand(shape, generator=generator)


def random_flip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(batch.shape[0], generator=generator) < 0.5
    batch[flip] = batch[flip].flip(-1)
    return batch


def random_warp(batch: torch.Tensor, generator: torch.Generator,
                share: float = 1.0) -> torch.Tensor:
    """Zoom 0.7-1.3, shift up to 10 %, rotate up to 12 degrees, and a mild perspective tilt,
    on a `share` of the images (all when 1).

    Zooming in crops the product's edges, zooming out leaves it small in the frame, as in a
    photo; the borders that appear are white, so the background swap fills them too.
    """
    if share < 1:
        chosen = torch.rand(batch.shape[0], generator=generator) < share
        if chosen.any():
            batch[chosen] = random_warp(batch[chosen], generator)
        return batch
    count, _, height, width = batch.shape
    angle = _uniform(count, -math.radians(12), math.radians(12), generator)
    scale = 1.0 / _uniform(count, 0.7, 1.3, generator)
    shift = _uniform((count, 2), -0.1, 0.1, generator)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = functional.affine_grid(theta, [count, 3, height, width], align_corners=False)
    corners = _uniform((count, 2, 2, 2), -0.08, 0.08, generator)  # [n, xy, top/bottom, l/r]
    tilt = functional.interpolate(corners, size=(height, width), mode="bilinear",
                                  align_corners=True).permute(0, 2, 3, 1)
    return functional.grid_sample(batch - 255, grid + tilt, align_corners=False) + 255


def background_fill(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Flat colours, shaded surfaces and fine textures (fabric, wood, gravel): what photos are
    taken on. About a third of each kind, each with some grain."""
    tint = torch.rand(count, 3, 1, 1, generator=generator) * 255
    coarse_side = int(torch.randint(2, 12, (1,), generator=generator))
    shade = torch.rand(count, 1, coarse_side, coarse_side, generator=generator) - 0.5
    shade = functional.interpolate(shade, size=(size, size), mode="bicubic", align_corners=False)
    fine_side = int(torch.randint(size // 4, size // 2 + 1, (1,), generator=generator))
    texture = torch.rand(count, 3, fine_side, fine_side, generator=generator) - 0.5
    texture = functional.interpolate(texture, size=(size, size), mode="bilinear",
                                     align_corners=False)
    kind = torch.rand(count, 1, 1, 1, generator=generator)
    depth = _uniform((count, 1, 1, 1), 40, 200, generator)
    pattern = torch.where(kind < 0.65, shade.expand(-1, 3, -1, -1), texture) * depth
    fill = tint + torch.where(kind < 0.3, torch.zeros_like(pattern), pattern)
    per_channel = torch.rand(count, 1, 1, 1, generator=generator) < 0.5
    grain = torch.randn(count, 3, size, size, generator=generator)
    grain = torch.where(per_channel, grain, grain[:, :1].expand(-1, 3, -1, -1))
    return fill + grain * _uniform((count, 1, 1, 1), 0, 25, generator)


def swap_background(batch: torch.Tensor, generator: torch.Generator,
                    probability: float) -> torch.Tensor:
    """Replace the near-white studio background by a random surface in a share of the images."""
    count, _, size, _ = batch.shape
    background = batch.amin(dim=1, keepdim=True) > 235
    chosen = torch.rand(count, 1, 1, 1, generator=generator) < probability
    return torch.where(background & chosen, background_fill(count, size, generator), batch)


def random_lighting(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    count = batch.shape[0]
    brightness = _uniform((count, 1, 1, 1), 0.8, 1.2, generator)
    contrast = _uniform((count, 1, 1, 1), 0.8, 1.2, generator)
    mean = batch.mean(dim=(1, 2, 3), keepdim=True)
    return ((batch - mean) * contrast + mean) * brightness


def random_blur(batch: torch.Tensor, generator: torch.Generator,
                probability: float) -> torch.Tensor:
    """A 3x3 box blur (an out-of-focus or upscaled photo) on a share of the images."""
    chosen = torch.rand(batch.shape[0], generator=generator) < probability
    if chosen.any():
        blurred = functional.avg_pool2d(functional.pad(batch[chosen], (1, 1, 1, 1),
                                                       mode="replicate"), 3, stride=1)
        batch[chosen] = blurred
    return batch
