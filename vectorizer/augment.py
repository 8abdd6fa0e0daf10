"""Training augmentations for product shots, applied to whole uint8 batches at once."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as functional


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip, small affine jitter, background swaps and lighting; hue is kept (colour is a label).

    Input uint8 [n, 3, s, s]; output float in 0..255, as the model expects.
    """
    batch = images.float()
    batch = swap_background(batch, generator, probability=0.3)
    batch = random_flip(batch, generator)
    batch = random_affine(batch, generator)
    return random_lighting(batch, generator).clamp_(0, 255)


def _uniform(count: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def swap_background(batch: torch.Tensor, generator: torch.Generator,
                    probability: float) -> torch.Tensor:
    """Replace the near-white studio background by a random flat colour, as pasted photos have."""
    count = batch.shape[0]
    background = batch.amin(dim=1, keepdim=True) > 235
    chosen = (torch.rand(count, 1, 1, 1, generator=generator) < probability)
    colours = torch.rand(count, 3, 1, 1, generator=generator) * 255
    return torch.where(background & chosen, colours.expand_as(batch), batch)


def random_flip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(batch.shape[0], generator=generator) < 0.5
    batch[flip] = batch[flip].flip(-1)
    return batch


def random_affine(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Zoom 0.85-1.15, shift up to 8 %, rotate up to 8 degrees; new borders are white."""
    count = batch.shape[0]
    angle = _uniform(count, -math.radians(8), math.radians(8), generator)
    scale = 1.0 / _uniform(count, 0.85, 1.15, generator)
    shift = _uniform(2 * count, -0.08, 0.08, generator).view(count, 2)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = functional.affine_grid(theta, list(batch.shape), align_corners=False)
    return functional.grid_sample(batch - 255, grid, align_corners=False) + 255


def random_lighting(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    count = batch.shape[0]
    brightness = _uniform(count, 0.85, 1.15, generator).view(count, 1, 1, 1)
    contrast = _uniform(count, 0.85, 1.15, generator).view(count, 1, 1, 1)
    mean = batch.mean(dim=(1, 2, 3), keepdim=True)
    return ((batch - mean) * contrast + mean) * brightness
