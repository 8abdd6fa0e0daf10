"""open_image: every colour mode, orientation and frame count to RGB; bad input to a reason."""


import pytest
from PIL import Image

from tests.fixtures_http import make_test_image, png_header_only, sample_images
from vectorizer.images import ImageError, check_image, open_image, sniff_text_kind

LIMIT = 40_000_000
WHITE = (255, 255, 255)


def close_to(pixel: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 6) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def left_right(image: Image.Image) -> tuple[tuple[int, ...], tuple[int, ...]]:
    width, height = image.size
    return image.getpixel((2, height // 2)), image.getpixel((width - 3, height // 2))


@pytest.mark.parametrize(("name", "size", "left", "right"), [
    ("red.jpg", (60, 80), (255, 0, 0), (255, 0, 0)),
    ("blue.png", (60, 80), (0, 0, 255), (0, 0, 255)),
    ("wrong-type.png", (60, 80), (0, 128, 0), (0, 128, 0)),
    ("palette.png", (40, 30), WHITE, (255, 0, 0)),        # transparent index composited on white
    ("rgba.png", (40, 30), WHITE, (0, 0, 255)),
    ("la.png", (40, 30), WHITE, (0, 0, 0)),
    ("cmyk.jpg", (40, 30), (255, 0, 0), (255, 0, 0)),
    ("gray16.png", (30, 20), (128, 128, 128), (128, 128, 128)),  # scaled, not clipped to 255
    ("gray.png", (30, 20), (128, 128, 128), (128, 128, 128)),
    ("bw.png", (30, 20), (0, 0, 0), WHITE),
    ("exif-rotated.jpg", (80, 60), (0, 0, 255), (255, 0, 0)),  # stored 60x80, shown 90° CW
    ("animated.gif", (30, 20), (255, 0, 0), (255, 0, 0)),  # first frame (red), not the blue one
    ("animated.webp", (30, 20), (255, 0, 0), (255, 0, 0)),
])
def test_every_image_kind_becomes_loaded_rgb(name, size, left, right):
    if name not in sample_images():
        pytest.skip("Pillow built without WebP")
    image = open_image(sample_images()[name], LIMIT)
    assert image.mode == "RGB"
    assert image.size == size
    got_left, got_right = left_right(image)
    assert close_to(got_left, left), got_left
    assert close_to(got_right, right), got_right


def test_reads_files_by_content_not_extension(tmp_path):
    png_named_jpg = tmp_path / "photo.jpg"
    png_named_jpg.write_bytes(make_test_image("blue", fmt="PNG"))
    for source in (png_named_jpg, str(png_named_jpg), png_named_jpg.read_bytes()):
        assert open_image(source, LIMIT).size == (60, 80)
    html_named_jpg = tmp_path / "page.jpg"
    html_named_jpg.write_text("<!DOCTYPE html><html><body>Sorry</body></html>")
    with pytest.raises(ImageError, match=r"^not an image \(looks like HTML\)$"):
        open_image(html_named_jpg, LIMIT)


@pytest.mark.parametrize(("content", "reason", "kind"), [
    (b"", "empty file (0 bytes)", "empty"),
    (b"just some words\n", "not an image (looks like text)", "not_image"),
    (b"%PDF-1.7\n...", "not an image (looks like PDF)", "not_image"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "not an image (looks like SVG)",
     "not_image"),
    (b"\x00\x01\x02\x03\xfe\xff" * 10, "not an image (unknown or unsupported format)",
     "not_image"),
    (sample_images()["truncated.jpg"], "truncated or corrupt image", "corrupt"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, None, "not_image"),
])
def test_bad_content_gives_a_short_reason(content, reason, kind):
    with pytest.raises(ImageError) as caught:
        open_image(content, LIMIT)
    assert caught.value.kind == kind
    if reason:
        assert str(caught.value) == reason


def test_missing_or_unreadable_paths(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    cases = {str(tmp_path / "nope.jpg"): "file not found", tmp_path: "is a folder, not a file",
             empty: "empty file (0 bytes)", "": "no image path"}
    for source, reason in cases.items():
        with pytest.raises(ImageError) as caught:
            open_image(source, LIMIT)
        assert str(caught.value) == reason


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(ImageError) as caught:
        open_image(sample_images()["big.png"], LIMIT)  # header says 7000x7000, no real pixels
    assert str(caught.value) == "image too large: 49,000,000 pixels > limit 40,000,000"
    assert caught.value.kind == "too_large"
    with pytest.raises(ImageError, match=r"^image too large: 4,800 pixels > limit 1,024$"):
        open_image(make_test_image("red"), 1024)


def test_pillows_own_bomb_check_maps_to_image_error():
    # 400M pixels: Pillow raises DecompressionBombError inside Image.open
    with pytest.raises(ImageError, match=r"400,000,000 pixels > limit 40,000,000"):
        open_image(sample_images()["bomb.png"], LIMIT)
    # 100M pixels with a higher configured limit: Pillow's warning becomes the error
    with pytest.raises(ImageError, match=r"100,000,000 pixels > limit 89,478,485"):
        open_image(png_header_only(10_000, 10_000), 500_000_000)


def test_check_image_is_a_cheap_but_complete_check():
    assert check_image(sample_images()["noisy.jpg"], LIMIT) == "JPEG"
    assert check_image(sample_images()["palette.png"], LIMIT) == "PNG"
    for name, kind in (("truncated.jpg", "corrupt"), ("bomb.png", "too_large")):
        with pytest.raises(ImageError) as caught:
            check_image(sample_images()[name], LIMIT)
        assert caught.value.kind == kind


def test_sniff_text_kind():
    assert sniff_text_kind(b"\xef\xbb\xbf  <!doctype HTML><html>") == "HTML"
    assert sniff_text_kind(b'<?xml version="1.0"?><feed/>') == "XML"
    assert sniff_text_kind(b'{"a": 1}') == "JSON"
    assert sniff_text_kind(make_test_image("red")) is None
