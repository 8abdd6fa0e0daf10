"""Training augmentations: photo-like changes that never change the product's colour."""

import torch

from vectorizer.augment import augment, background_fill, swap_background


def red_squares(count: int = 32, size: int = 48) -> torch.Tensor:
    """A red square filling the central 60 % of a white studio background."""
    images = torch.full((count, 3, size, size), 255, dtype=torch.uint8)
    low, high = size // 5, size - size // 5
    images[:, 1:, low:high, low:high] = 0
    return images


def test_output_is_float_in_range_and_seeded():
    images = red_squares()
    first = augment(images, torch.Generator().manual_seed(3))
    again = augment(images, torch.Generator().manual_seed(3))
    other = augment(images, torch.Generator().manual_seed(4))
    assert first.dtype == torch.float32 and first.shape == images.shape
    assert first.min() >= 0 and first.max() <= 255
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_the_product_keeps_its_hue():
    out = augment(red_squares(), torch.Generator().manual_seed(0))
    centre = out[:, :, 20:28, 20:28].mean(dim=(2, 3))  # [n, rgb]
    assert (centre[:, 0] > 120).all()
    assert (centre[:, 0] > 3 * centre[:, 1:].max(dim=1).values + 20).all()


def test_backgrounds_become_varied_surfaces():
    images = red_squares(64).float()
    swapped = swap_background(images.clone(), torch.Generator().manual_seed(1), probability=0.5)
    corners = swapped[:, :, :4, :4].mean(dim=(2, 3))
    changed = (corners < 235).any(dim=1)
    assert 10 < int(changed.sum()) < 54  # about half of them
    assert corners[changed].std(dim=0).min() > 20  # not one colour for all
    assert torch.equal(swapped[:, :, 20:28, 20:28], images[:, :, 20:28, 20:28])
    fill = background_fill(8, 32, torch.Generator().manual_seed(2))
    assert fill.shape == (8, 3, 32, 32) and fill.std(dim=(2, 3)).mean() > 1


def test_only_the_named_augmentations_apply():
    images = red_squares(64)
    kept = augment(images, torch.Generator().manual_seed(5), ["background"])
    product = (slice(None), slice(None), slice(12, 36), slice(12, 36))
    assert torch.equal(kept[product], images[product].float())  # no warp, lighting or blur
    corners = kept[:, :, :4, :4].mean(dim=(2, 3))
    assert 15 < int((corners < 235).any(dim=1).sum()) < 60  # about 60 % of backgrounds swapped
    assert torch.equal(augment(images, torch.Generator().manual_seed(5), []), images.float())
    moved = augment(images, torch.Generator().manual_seed(5), ["warp"])
    assert not torch.equal(moved[product], images[product].float())


def test_the_warp_moves_only_its_share_of_the_images():
    images = red_squares(200)
    product = (slice(None), slice(None), slice(12, 36), slice(12, 36))
    moved = augment(images, torch.Generator().manual_seed(6), ["warp"], warp_share=0.3)
    changed = (moved[product] != images[product].float()).flatten(1).any(dim=1)
    assert 35 < int(changed.sum()) < 85  # about 30 % of 200
    everything = augment(images, torch.Generator().manual_seed(6), ["warp"])
    assert (everything[product] != images[product].float()).flatten(1).any(dim=1).all()
