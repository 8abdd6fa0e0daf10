"""The one place that turns bytes or a file into a clean, fully loaded RGB image (or a reason)."""

from __future__ import annotations

import io
import logging
import os
import re
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

Source = bytes | str | Path

ALPHA_MODES = {"RGBA", "LA", "La", "RGBa", "PA"}
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError)
# warnings.catch_warnings() swaps process-wide state; serialise our (header-only) Image.open calls.
_OPEN_LOCK = threading.Lock()


def _new_lock_after_fork() -> None:  # a forked DataLoader worker must not inherit a held lock
    global _OPEN_LOCK
    _OPEN_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)


class ImageError(Exception):
    """The content is not a usable image; str() is a short human reason.

    `kind` groups the reasons: "missing", "empty", "not_image", "too_large", "corrupt".
    """

    def __init__(self, reason: str, kind: str = "corrupt") -> None:
        super().__init__(reason)
        self.kind = kind



def sniff_text_kind(data: bytes) -> str | None:
    """Name what non-image content looks like ("HTML", "SVG", "PDF", ...), None if unknown."""
    head = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"%pdf"):
        return "PDF"
    if head.startswith(b"<"):
        if b"<svg" in head:
            return "SVG"
        if any(tag in head for tag in (b"<!doctype html", b"<html", b"<head", b"<body", b"<meta")):
            return "HTML"
        return "XML" if head.startswith(b"<?xml") else "HTML"
    if head[:1] in (b"{", b"["):
        return "JSON"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "text"


def read_source(source: Source) -> bytes:
    """The bytes of `source`; a missing, unreadable or empty file is an ImageError."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        if not str(source):
            raise ImageError("no image path", "missing")
        try:
            with open(source, "rb") as file:  # pathlib costs 10 us a file here
                data = file.read()
        except FileNotFoundError:
            raise ImageError("file not found", "missing") from None
        except IsADirectoryError:
            raise ImageError("is a folder, not a file", "missing") from None
        except PermissionError:
            raise ImageError("permission denied", "missing") from None
        except OSError as error:
            raise ImageError(f"cannot read file ({error.strerror or error})", "missing") from None
    if not data:
        raise ImageError("empty file (0 bytes)", "empty")
    return data


def too_large(pixels: int, max_pixels: int) -> ImageError:
    return ImageError(f"image too large: {pixels:,} pixels > limit {max_pixels:,}", "too_large")


def _bomb_error(error: Exception, max_pixels: int) -> ImageError:
    """Pillow's own decompression-bomb check fired (its limit may be below max_pixels)."""
    match = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(error))
    if not match:
        return ImageError("image too large", "too_large")
    pixels, pillow_limit = int(match.group(1)), int(match.group(2))
    return too_large(pixels, max_pixels if pixels > max_pixels else pillow_limit)


def open_header(data: bytes, max_pixels: int) -> Image.Image:
    """Identify the format from the content and check the pixel count; nothing is decoded yet."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _bomb_error(error, max_pixels) from None
    except UnidentifiedImageError:
        kind = sniff_text_kind(data)
        reason = f"looks like {kind}" if kind else "unknown or unsupported format"
        raise ImageError(f"not an image ({reason})", "not_image") from None
    except DECODE_ERRORS:
        raise ImageError("truncated or corrupt image") from None
    width, height = image.size
    if width * height > max_pixels:
        raise too_large(width * height, max_pixels)
    if width < 1 or height < 1:
        raise ImageError("truncated or corrupt image")
    return image


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit integer and float greyscale to L, scaling (Pillow's convert would clip)."""
    values = np.asarray(image)
    if image.mode.startswith("I;16") or (image.mode == "I" and values.max(initial=0) > 255):
        values = np.clip(values.astype(np.int64), 0, 65535) // 257
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L")


def _composite_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB: transparency on white, 16-bit scaled, CMYK/greyscale converted."""
    if image.mode in ALPHA_MODES or (
            image.mode in ("P", "L", "RGB") and "transparency" in image.info):
        return _composite_on_white(image)
    if image.mode.startswith("I") or image.mode == "F":
        image = _scale_to_8bit(image)
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ImageError(f"unsupported colour mode {image.mode}", "not_image") from error


def _exif_upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image) or image
    except DECODE_ERRORS as error:  # a malformed EXIF block: keep the pixels as stored
        log.debug("ignoring unreadable EXIF orientation: %s", error)
        return image


def open_image(source: Source, max_pixels: int) -> Image.Image:
    """A fully decoded RGB image (first frame, EXIF-upright) or an ImageError with the reason."""
    image = open_header(read_source(source), max_pixels)
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _bomb_error(error, max_pixels) from None
    except DECODE_ERRORS:
        raise ImageError("truncated or corrupt image") from None
    return to_rgb(_exif_upright(image))


def check_image(data: bytes, max_pixels: int) -> str:
    """Cheaply prove `data` is a complete image (JPEGs decode at 1/8 scale); returns its format."""
    image = open_header(data, max_pixels)
    fmt = image.format or "image"
    try:
        if fmt == "JPEG":
            image.draft(None, (1, 1))
        image.load()
    except DECODE_ERRORS:
        raise ImageError("truncated or corrupt image") from None
    return fmt
