"""Many files at once give exactly the pixels (and reasons) of one file at a time."""

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_catalog import REAL_DATA
from vectorizer.images import ImageError, open_image
from vectorizer.pixels import decode, decode_all, files_to_pixels, jpeg_frame
from vectorizer.preprocess import Preprocess, uniform_border, uniform_borders

MAX_PIXELS = 10**7


def product_shot(size, card, colour, box, grain, seed) -> Image.Image:
    """A product rectangle on a card with grain, like a catalog shot or a photo on a table."""
    width, height = size
    rng = np.random.default_rng(seed)
    pixels = np.empty((height, width, 3), np.float32)
    pixels[:] = card
    left, top, right, bottom = box
    pixels[top:bottom, left:right] = colour
    pixels += rng.normal(0, grain, pixels.shape)
    return Image.fromarray(np.clip(pixels.round(), 0, 255).astype(np.uint8))


def encoded(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def varied_files(folder) -> list[str]:
    """Catalog-like JPEGs (same sizes, so they share a border search), other sizes up to and
    past the batch path's limits, every JPEG flavour, other formats, and broken files."""
    blobs: dict[str, bytes] = {}
    rng = random.Random(0)
    for index in range(24):  # 60x80 catalog shots: white, grey and coloured cards, no border
        card = [(255, 255, 255), (236, 236, 236), (200, 30, 30)][index % 3]
        left, top = rng.randint(0, 20), rng.randint(0, 25)
        box = (left, top, left + rng.randint(5, 40), top + rng.randint(5, 55))
        shot = product_shot((60, 80), card, (20, 40, 160), box, rng.choice([0, 3, 8]), index)
        blobs[f"shot{index}.jpg"] = encoded(shot, quality=rng.choice([75, 95]))
    blobs["noise.jpg"] = encoded(Image.fromarray(
        np.random.default_rng(1).integers(0, 255, (80, 60, 3), np.uint8)))
    blobs["blank.jpg"] = encoded(Image.new("RGB", (60, 80), (250, 250, 250)))
    for width, height in ((80, 60), (64, 64), (96, 96), (31, 17), (300, 200), (383, 90),
                          (384, 90), (700, 520)):
        shot = product_shot((width, height), (240, 240, 240), (10, 120, 30),
                            (width // 4, height // 4, width // 2, height // 2), 4, width)
        blobs[f"size{width}x{height}.jpg"] = encoded(shot)
    shot = product_shot((60, 80), (255, 255, 255), (200, 150, 20), (10, 10, 50, 70), 2, 7)
    blobs["grey.jpg"] = encoded(shot.convert("L"))
    blobs["cmyk.jpg"] = encoded(shot.convert("CMYK"))
    blobs["progressive.jpg"] = encoded(shot, progressive=True)
    blobs["444.jpg"] = encoded(shot, subsampling=0)
    for orientation in (3, 6, 8):
        exif = shot.getexif()
        exif[0x0112] = orientation
        blobs[f"exif{orientation}.jpg"] = encoded(shot, exif=exif.tobytes())
    blobs["rgba.png"] = encoded(shot.convert("RGBA"), "PNG")
    blobs["palette.png"] = encoded(shot.convert("P"), "PNG")
    blobs["truncated.jpg"] = blobs["shot0.jpg"][:len(blobs["shot0.jpg"]) // 2]
    blobs["page.jpg"] = b"<!doctype html><html><body>not found</body></html>"
    blobs["empty.jpg"] = b""
    paths = []
    for name, blob in blobs.items():
        (folder / name).write_bytes(blob)
        paths.append(str(folder / name))
    return [*paths, str(folder / "missing.jpg")]


def one_at_a_time(paths, preprocess) -> tuple[torch.Tensor, list[str]]:
    size = preprocess.input_size
    pixels, reasons = [], []
    for path in paths:
        try:
            pixels.append(preprocess(open_image(path, MAX_PIXELS)))
            reasons.append("")
        except ImageError as error:
            pixels.append(torch.zeros(3, size, size, dtype=torch.uint8))
            reasons.append(str(error))
    return torch.stack(pixels), reasons


@pytest.mark.parametrize("input_size", [96, 32])  # upscaled and downscaled squares
@pytest.mark.parametrize("trim", [True, False])
def test_many_files_give_the_pixels_and_reasons_of_one_at_a_time(tmp_path, input_size, trim):
    paths = varied_files(tmp_path)
    preprocess = Preprocess(input_size, trim_border=trim)
    expected, expected_reasons = one_at_a_time(paths, preprocess)
    pixels, reasons = files_to_pixels(paths, preprocess, MAX_PIXELS)
    assert reasons == expected_reasons
    assert sum(bool(reason) for reason in reasons) == 4  # truncated, page, empty, missing
    mismatched = [path for path, got, want in zip(paths, pixels, expected, strict=True)
                  if not torch.equal(got, want)]
    assert mismatched == []


def test_plain_jpegs_take_libjpeg_and_the_rest_pillow(tmp_path):
    """The batch path is taken where it is the same, and only there."""
    files = {name: path for path in varied_files(tmp_path)
             for name in [path.rsplit("/", 1)[1]]}
    for name in ("shot0.jpg", "grey.jpg", "progressive.jpg", "exif6.jpg", "size700x520.jpg"):
        assert isinstance(decode(files[name], MAX_PIXELS), torch.Tensor), name
    for name in ("cmyk.jpg", "rgba.png", "palette.png"):
        assert isinstance(decode(files[name], MAX_PIXELS), Image.Image), name
    with pytest.raises(ImageError, match="too large"):  # checked before anything is decoded
        decode(files["size700x520.jpg"], 700 * 520 - 1)


def test_one_broken_jpeg_among_many_costs_only_itself(tmp_path):
    """libjpeg decodes a batch's small plain JPEGs in one call; a corrupt one among them gets
    its reason and the rest their pixels. Larger images are decoded as they are reached, before
    the small ones, so that a batch of phone photos is never in memory at once."""
    files = {name: path for path in varied_files(tmp_path)
             for name in [path.rsplit("/", 1)[1]]}
    names = ["shot0.jpg", "truncated.jpg", "grey.jpg", "missing.jpg", "cmyk.jpg", "exif6.jpg",
             "size700x520.jpg"]
    pairs = list(decode_all([files[name] for name in names], MAX_PIXELS))
    assert [position for position, _ in pairs][:3] == [3, 4, 6]  # missing, Pillow's, large
    decoded = dict(pairs)
    assert [type(decoded[position]).__name__ for position in range(len(names))] == [
        "Tensor", "ImageError", "Tensor", "ImageError", "Image", "Tensor", "Tensor"]
    for position, name in enumerate(names):
        if isinstance(decoded[position], torch.Tensor):
            assert torch.equal(decoded[position], decode(files[name], MAX_PIXELS)), name
    assert "not found" in str(decoded[3])
    with pytest.raises(ImageError):
        decode(files["truncated.jpg"], MAX_PIXELS)


def test_the_jpeg_frame_is_read_from_the_header():
    shot = Image.new("RGB", (61, 83), (10, 20, 30))
    frame = jpeg_frame(encoded(shot))
    assert (frame.width, frame.height, frame.components, frame.precision) == (61, 83, 3, 8)
    assert frame.plain and frame.pixels == 61 * 83
    assert jpeg_frame(encoded(shot, progressive=True)).marker == 0xC2
    assert jpeg_frame(encoded(shot.convert("L"))).components == 1
    cmyk = jpeg_frame(encoded(shot.convert("CMYK")))
    assert cmyk.components == 4 and not cmyk.plain
    with_exif = shot.getexif()
    with_exif[0x0112] = 6  # an APP1 block before the frame is skipped
    assert jpeg_frame(encoded(shot, exif=with_exif.tobytes())).width == 61
    for other in (encoded(shot, "PNG"), b"\xff\xd8\xff\xe0\x00", b"", b"GIF89a"):
        assert jpeg_frame(other) is None


def test_markers_without_a_length_are_stepped_over():
    """TEM and RSTn carry no length field: read as one, a length of 0xFFC0 (a marker's bytes)
    sends the walk past the real frame, which is then missed or misread."""
    shot = encoded(Image.new("RGB", (61, 83), (10, 20, 30)))
    standalone = b"\xff\x01\xff\xd0"  # TEM, RST0
    for inserted in (standalone, b"\xff" + standalone):  # with a fill byte before them
        frame = jpeg_frame(shot[:2] + inserted + shot[2:])
        assert frame is not None and (frame.width, frame.height) == (61, 83)


def test_a_stack_of_same_sized_images_gets_each_ones_own_border():
    rng = np.random.default_rng(3)
    images = [product_shot((60, 80), tuple(int(v) for v in rng.integers(0, 256, 3)),
                           (20, 40, 160), (5 + i, 3 + i, 30 + i, 60), grain, i)
              for i, grain in enumerate([0, 0, 3, 7, 7, 12])]
    images += [Image.new("RGB", (60, 80), (250, 250, 250)),  # nothing inside
               Image.fromarray(rng.integers(0, 255, (80, 60, 3), np.uint8))]  # no border
    planes = np.stack([np.asarray(image).transpose(2, 0, 1) for image in images])
    alone = [uniform_border(image) for image in images]
    assert uniform_borders(planes) == alone
    assert alone[-1] is None and alone[-2] is None and all(alone[:6])


@pytest.mark.skipif(not (REAL_DATA / "images").is_dir(), reason="needs ../shared data")
def test_real_catalog_shots_give_the_same_pixels():
    paths = sorted(str(p) for p in (REAL_DATA / "images").glob("1*.jpg"))[:600]
    preprocess = Preprocess(96, trim_border=True)
    pixels, reasons = files_to_pixels(paths, preprocess, MAX_PIXELS)
    expected, expected_reasons = one_at_a_time(paths, preprocess)
    assert reasons == expected_reasons
    assert torch.equal(pixels, expected)
