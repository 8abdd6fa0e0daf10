"""Many image files to the model's uint8 pixels at once: the pixels open_image + Preprocess give.

Bulk vectorizing spends most of its decoding time in per-image Python and numpy calls, not in
the pixels (a 60x80 catalog shot: ~0.5 ms single-threaded, ~0.1 of it libjpeg). Here a plain
JPEG's frame is read without Pillow and its pixels decoded by torchvision's libjpeg-turbo
binding (3x less time than Pillow, the same pixels, EXIF orientation applied alike),
same-sized images share one border search, and squares that are enlarged (a catalog shot to
96 px) share one call of torch's antialiased bilinear kernel, which gives Pillow's pixels.
Anything else takes the one-image path; tests hold the two paths to identical pixels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.nn import functional
from torchvision.io import ImageReadMode, decode_jpeg

from vectorizer.images import ImageError, Source, open_image, read_source
from vectorizer.preprocess import BORDER_WORK_SIDE, Preprocess, uniform_borders

GROUP = 128  # images per stacked border search or resize


def decode(source: Source, max_pixels: int) -> torch.Tensor | Image.Image:
    """A plain JPEG as uint8 [3, h, w]; any other image as open_image gives it (an RGB
    image); an ImageError with the reason when it is not a usable image."""
    [(_, image)] = decode_all([source], max_pixels)
    if isinstance(image, ImageError):
        raise image
    return image


def decode_all(sources: list[Source], max_pixels: int
               ) -> Iterator[tuple[int, torch.Tensor | Image.Image | ImageError]]:
    """(position, what `decode` gives) for each source, the error in place of the image for an
    unusable one; not in order.

    Small plain JPEGs (a catalog shot) go to libjpeg together at the end, in one call: its
    Python wrapper costs as much per call as decoding a 60x80 shot. Every other image is
    decoded as it is reached, so that a batch of phone photos is never in memory at once."""
    small: list[tuple[int, bytes]] = []
    for position, source in enumerate(sources):
        try:
            data = read_source(source)
        except ImageError as error:
            yield position, error
            continue
        frame = jpeg_frame(data)
        if frame is None or not frame.plain or frame.pixels > pixel_limit(max_pixels):
            yield position, _opened(data, max_pixels)
        elif max(frame.width, frame.height) <= BORDER_WORK_SIDE:
            small.append((position, data))
        else:
            yield from _jpegs([(position, data)], max_pixels)
    yield from _jpegs(small, max_pixels)


def _jpegs(jpegs: list[tuple[int, bytes]], max_pixels: int
           ) -> Iterator[tuple[int, torch.Tensor | Image.Image | ImageError]]:
    """(position, pixels) from one libjpeg call; a file libjpeg refuses takes open_image's path."""
    decoded = libjpeg([data for _, data in jpegs])
    for (position, data), pixels in zip(jpegs, decoded, strict=True):
        yield position, pixels if pixels is not None else _opened(data, max_pixels)


def _opened(data: bytes, max_pixels: int) -> Image.Image | ImageError:
    """open_image's image, or its error (it names the reason: truncated, not an image, ...)."""
    try:
        return open_image(data, max_pixels)
    except ImageError as error:
        return error


def libjpeg(blobs: list[bytes]) -> list[torch.Tensor | None]:
    """Each JPEG as uint8 [3, h, w] (EXIF orientation applied), None for one libjpeg refuses."""
    if not blobs:
        return []
    tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in blobs]
    try:
        return decode_jpeg(tensors, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError:  # one is truncated or corrupt: find which
        if len(blobs) == 1:
            return [None]
        return [libjpeg([data])[0] for data in blobs]


def pixel_limit(max_pixels: int) -> int:
    """Above this open_image refuses an image (ours, or Pillow's own decompression-bomb limit)."""
    return min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)


class JpegFrame(NamedTuple):
    marker: int      # 0xC0 baseline, 0xC1 extended, 0xC2 progressive, ...
    precision: int   # bits per sample
    width: int
    height: int
    components: int  # 1 greyscale, 3 YCbCr (or RGB), 4 CMYK or YCCK

    @property
    def plain(self) -> bool:
        """Huffman-coded 8-bit greyscale or colour: Pillow reads it as L or RGB, and
        libjpeg's RGB output equals Pillow's conversion."""
        return (self.marker in PLAIN_FRAMES and self.precision == 8
                and self.components in (1, 3) and self.width > 0 and self.height > 0)

    @property
    def pixels(self) -> int:
        return self.width * self.height


PLAIN_FRAMES = (0xC0, 0xC1, 0xC2)
FRAME_MARKERS = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}  # start of frame (not DHT/JPG/DAC)
STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn: no length field follows


def jpeg_frame(data: bytes) -> JpegFrame | None:
    """The frame header of a JPEG (read before any pixel is decoded: Pillow's Image.open
    costs 30 us per file here), None when `data` is not a JPEG this walk can read."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in STANDALONE_MARKERS:
            position += 2
            continue
        if marker in FRAME_MARKERS:
            header = data[position + 4:position + 10]
            if len(header) < 6:
                return None
            return JpegFrame(marker, header[0], int.from_bytes(header[3:5], "big"),
                             int.from_bytes(header[1:3], "big"), header[5])
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
    return None


def files_to_pixels(paths: list[str], preprocess: Preprocess, max_pixels: int
                    ) -> tuple[torch.Tensor, list[str]]:
    """uint8 [n, 3, s, s] for n files, and a reason per file ('' when fine; zeros then)."""
    size = preprocess.input_size
    pixels = torch.zeros(len(paths), 3, size, size, dtype=torch.uint8)
    reasons = [""] * len(paths)
    plain: dict[int, np.ndarray] = {}  # row -> decoded [h, w, 3] that the batch path frames
    for row, image in decode_all(paths, max_pixels):
        if isinstance(image, ImageError):
            reasons[row] = str(image)
            continue
        if isinstance(image, torch.Tensor) and batch_framable(image):
            plain[row] = image.permute(1, 2, 0).numpy()  # libjpeg's own layout: no copy
        else:
            pixels[row] = preprocess(image if isinstance(image, Image.Image) else to_pil(image))
    squares = {row: padded_square(plain[row], found, preprocess.pad_value)
               for row, found in borders(plain, preprocess.trim_border).items()}
    for rows, resized in resized_squares(squares, preprocess):
        pixels[rows] = resized
    return pixels, reasons


def batch_framable(image: torch.Tensor) -> bool:
    """Small enough that the border search needs no reduced copy (as uniform_border)."""
    return max(image.shape[1:]) <= BORDER_WORK_SIDE


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).numpy())


Found = tuple[tuple[int, int, int, int], tuple[int, int, int]] | None


def borders(images: dict[int, np.ndarray], trim: bool) -> dict[int, Found]:
    """Each [h, w, 3] image's uniform border (box, colour) or None; one search per size."""
    if not trim:
        return dict.fromkeys(images)
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for row, image in images.items():
        by_shape[image.shape].append(row)
    found: dict[int, Found] = {}
    for rows, planes in grouped(images, by_shape):
        found.update(zip(rows, uniform_borders(planes.transpose(0, 3, 1, 2).copy()),
                         strict=True))
    return found


def grouped(images: dict[int, np.ndarray], groups: dict) -> Iterator[tuple[list[int], np.ndarray]]:
    """(rows, their images stacked [m, h, w, 3]) for each group of same-sized images, at most
    GROUP at a time (larger stacks leave the CPU's caches: 2x slower per image)."""
    for rows in groups.values():
        for start in range(0, len(rows), GROUP):
            part = rows[start:start + GROUP]
            yield part, np.stack([images[row] for row in part])


def padded_square(image: np.ndarray, found: Found, pad_value: int) -> np.ndarray:
    """Preprocess's framing of a decoded [h, w, 3]: the border cropped, then padded to a
    centred square with the border's colour (or pad_value)."""
    fill = (pad_value,) * 3
    if found is not None:
        (left, top, right, bottom), fill = found
        image = image[top:bottom, left:right]
    height, width = image.shape[:2]
    side = max(height, width)
    if height == width:
        return image
    square = np.empty((side, side, 3), np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    colour = np.array(fill, np.uint8)  # only the margins are filled: filling the whole
    square[:top], square[top + height:] = colour, colour  # square first took twice as long
    square[top:top + height, :left], square[top:top + height, left + width:] = colour, colour
    square[top:top + height, left:left + width] = image
    return square


def resized_squares(squares: dict[int, np.ndarray], preprocess: Preprocess
                    ) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(rows, uint8 [m, 3, s, s]) for each group of same-sized squares. Enlarged by torch's
    antialiased bilinear kernel, one call per group: Pillow's pixels exactly. Shrunk by
    Pillow itself: torch's kernel rounds a few pixels of a shrunk image 1 off."""
    size = preprocess.input_size
    by_side: dict[int, list[int]] = defaultdict(list)
    for row, square in squares.items():
        by_side[square.shape[0]].append(row)
    for rows, stacked in grouped(squares, by_side):
        if stacked.shape[1] > size:
            yield rows, torch.stack([preprocess.resized(Image.fromarray(square))
                                     for square in stacked])
            continue
        batch = torch.from_numpy(stacked).permute(0, 3, 1, 2)  # channels last, as stored
        if stacked.shape[1] < size:
            batch = functional.interpolate(batch, size=(size, size), mode="bilinear",
                                           antialias=True, align_corners=False)
        yield rows, batch
