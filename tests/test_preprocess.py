"""Trimming a uniform border: catalog shots, tiles on wide canvases, and noisy phone photos."""

import io

import numpy as np
import torch
from PIL import Image

from vectorizer.preprocess import Preprocess, uniform_border


def product_on_card(card=(236, 236, 236), size=(120, 90), box=(30, 20, 80, 70),
                    colour=(20, 40, 160), grain: float = 0.0, seed: int = 0) -> Image.Image:
    """A flat rectangle (the product) on a card, with Gaussian grain on every pixel."""
    width, height = size
    pixels = np.empty((height, width, 3), np.float32)
    pixels[:] = card
    left, top, right, bottom = box
    pixels[top:bottom, left:right] = colour
    pixels += np.random.default_rng(seed).normal(0, grain, pixels.shape) if grain else 0
    return Image.fromarray(np.clip(pixels.round(), 0, 255).astype(np.uint8))


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def expected_box(box, size, margin=0.05):
    left, top, right, bottom = box
    pad = round(margin * max(bottom - 1 - top, right - 1 - left))
    return (max(left - pad, 0), max(top - pad, 0), min(right + pad, size[0]),
            min(bottom + pad, size[1]))


def test_trim_border_frames_a_tile_on_a_wide_canvas_like_the_plain_image():
    product = Image.new("RGB", (60, 80), (255, 255, 255))
    product.paste((20, 40, 160), (10, 10, 50, 70))
    canvas = Image.new("RGB", (240, 80), (236, 236, 236))
    canvas.paste(product, (90, 0))
    trimming, plain = Preprocess(32, trim_border=True), Preprocess(32)
    framed, catalog_shot = trimming(canvas).float(), trimming(product).float()
    assert (framed - catalog_shot).abs().mean() < 8    # framed as the catalog shot is
    assert (plain(canvas).float() - catalog_shot).abs().mean() > 30   # untrimmed: another image
    flat = Image.new("RGB", (50, 50), (255, 255, 255))
    assert torch.equal(trimming(flat), plain(flat))    # nothing but border: unchanged
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), np.uint8))
    assert torch.equal(trimming(noisy), plain(noisy))  # no uniform border: unchanged
    assert Preprocess.from_dict(trimming.to_dict()) == trimming
    assert Preprocess.from_dict({**plain.to_dict()} | {"trim_border": None}) == plain


def test_trim_border_pads_with_the_cards_own_colour():
    card = Image.new("RGB", (60, 80), (200, 30, 30))
    card.paste((20, 40, 160), (20, 20, 40, 60))
    framed = Preprocess(32, trim_border=True)(card)
    assert framed[:, 0, 0].tolist() == [200, 30, 30]
    assert framed[:, 16, 16].tolist() == [20, 40, 160]


def test_a_clean_card_gives_the_products_exact_box_and_colour():
    for card, colour in (((255, 255, 255), (20, 40, 160)), ((0, 0, 0), (200, 180, 20)),
                         ((120, 130, 140), (120, 130, 200))):
        image = product_on_card(card, colour=colour)
        assert uniform_border(image) == (expected_box((30, 20, 80, 70), image.size), card)
    greyscale = product_on_card().convert("L")
    assert uniform_border(greyscale)[0] == expected_box((30, 20, 80, 70), greyscale.size)
    palette = product_on_card((255, 255, 255)).convert("P")  # white: no dithering
    assert uniform_border(palette)[0] == expected_box((30, 20, 80, 70), palette.size)


def test_grain_and_jpeg_noise_on_the_card_do_not_hide_or_stretch_the_product():
    """A phone photo on a plain surface: every pixel of the card varies (sensor grain, JPEG).
    A finder that trusts single pixels finds no border (corners differ) or a box stretched
    to the edges by one stray pixel."""
    clean = expected_box((30, 20, 80, 70), (120, 90))
    for seed in range(5):
        photo = jpeg(product_on_card((150, 140, 120), grain=7.0, seed=seed), quality=70)
        found = uniform_border(photo)
        assert found is not None, seed
        assert np.abs(np.subtract(found[0], clean)).max() <= 3, (seed, found[0])  # JPEG rings
        assert np.abs(np.subtract(found[1], (150, 140, 120))).max() <= 4


def test_a_stray_speck_on_the_card_does_not_stretch_the_box():
    image = product_on_card((255, 255, 255))
    image.putpixel((3, 85), (150, 150, 150))   # a dust speck near a corner
    assert uniform_border(image)[0] == expected_box((30, 20, 80, 70), image.size)
    image.paste((150, 150, 150), (3, 80, 7, 84))  # a 4x4 spot is part of the picture
    left, _, _, bottom = uniform_border(image)[0]
    assert left <= 3 and bottom >= 84


def test_no_uniform_border_or_nothing_inside_gives_none():
    two_tone = product_on_card((255, 255, 255))
    two_tone.paste((40, 40, 40), (0, 45, 120, 90))     # the lower corners are another colour
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), np.uint8))
    for image in (two_tone, noise, Image.new("RGB", (50, 40), (250, 250, 250)),
                  Image.new("RGB", (3, 2), (250, 250, 250))):
        assert uniform_border(image) is None


def test_a_large_photo_is_searched_on_a_reduced_copy_with_the_same_box():
    """A 12 MP-class photo: the border is found on a block-averaged copy and the box scaled
    back, within one block of the exact box."""
    size, box = (3000, 2000), (900, 400, 2100, 1700)
    photo = product_on_card((150, 140, 120), size=size, box=box, grain=7.0)
    found = uniform_border(photo)
    block = -(-3000 // 512)
    assert np.abs(np.subtract(found[0], expected_box(box, size))).max() <= block
    assert np.abs(np.subtract(found[1], (150, 140, 120))).max() <= 2


def test_cached_vectors_and_indexes_are_keyed_by_the_trimming_code(demo_env):
    """Another trimming code gives other pixels: a trimming model's cached vectors and index
    must not be reused across it; a model that does not trim is unaffected."""
    from contracts import index_fingerprint
    from vectorizer.checkpoint import load_checkpoint
    from vectorizer.encoder import Encoder
    from vectorizer.preprocess import TRIM_REVISION

    model, meta = load_checkpoint(demo_env.config.paths.trained_model_path)
    trimming_meta = {**meta, "preprocess": {**meta["preprocess"], "trim_border": True}}
    plain, trimming = Encoder(model, meta, "m", "fp32"), Encoder(model, trimming_meta, "m", "fp32")
    assert plain.cache_key == "m" and plain.preprocess_signature == meta["preprocess"]
    assert trimming.cache_key == f"m-trim{TRIM_REVISION}"
    printed = index_fingerprint(demo_env.config, trimming)["preprocess"]
    assert printed == {**trimming_meta["preprocess"], "trim_revision": TRIM_REVISION}


def test_the_neighbourhood_sum_repeats_the_edges():
    from vectorizer.preprocess import neighbourhood_sum

    rng = np.random.default_rng(0)
    for height, width in ((1, 1), (1, 5), (5, 1), (2, 3), (7, 9)):
        planes = rng.integers(0, 256, (3, height, width)).astype(np.uint8)
        padded = np.pad(planes.astype(np.int16), ((0, 0), (1, 1), (1, 1)), mode="edge")
        plain = sum(padded[:, dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3))
        assert np.array_equal(neighbourhood_sum(planes), plain), (height, width)


def test_outside_range_equals_the_plain_distance_test():
    """The wrapping subtraction gives what |value - colour| > tolerance in some channel gives,
    for colours near 0 and 255 too (where the range is clipped)."""
    from vectorizer.preprocess import neighbourhood_sum, outside_range

    rng = np.random.default_rng(1)
    planes = rng.integers(0, 256, (3, 40, 30)).astype(np.uint8)
    sums = neighbourhood_sum(planes)
    for colour in ([0, 0, 0], [255, 255, 255], [10, 128, 250], [24, 231, 25]):
        colour = np.array(colour, np.int16)
        low, high = np.maximum(colour - 24, 0), np.minimum(colour + 24, 255)
        plain = (np.abs(planes.astype(np.int16) - colour[:, None, None]) > 24).any(axis=0)
        assert np.array_equal(outside_range(planes, low, high), plain), colour
        plain_sums = (np.abs(sums - 9 * colour[:, None, None]) > 9 * 24).any(axis=0)
        assert np.array_equal(outside_range(sums, 9 * low, 9 * high), plain_sums), colour
