"""Decode catalog image files into uint8 tensors in parallel, with a status per image."""

from __future__ import annotations

import logging
import multiprocessing
import signal
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vectorizer.device import one_thread
from vectorizer.pixels import files_to_pixels
from vectorizer.preprocess import Preprocess

log = logging.getLogger(__name__)


class ImageFiles(Dataset):
    """Item b is batch b: (uint8 [m, 3, s, s], its first file's index, a reason per file);
    an unreadable file gives zeros and its reason. Whole batches, because decoding many
    files at once costs half as much per file as one at a time (vectorizer/pixels.py)."""

    def __init__(self, paths: list[str], preprocess: Preprocess, max_pixels: int,
                 batch_size: int) -> None:
        self.paths, self.preprocess, self.max_pixels = paths, preprocess, max_pixels
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)

    def __getitem__(self, batch: int) -> tuple[torch.Tensor, int, list[str]]:
        start = batch * self.batch_size
        pixels, reasons = files_to_pixels(self.paths[start:start + self.batch_size],
                                          self.preprocess, self.max_pixels)
        return pixels, start, reasons


CHUNK = 4096  # images decoded before the model sees them, when the two take turns


def iterate_batches(paths: list[str], preprocess: Preprocess, *, batch_size: int, workers: int,
                    max_pixels: int, progress: str | None = None, take_turns: bool = False,
                    chunk: int = CHUNK) -> Iterator[tuple[torch.Tensor, list[int], list[str]]]:
    """Batches of (images, indices, reasons) in catalog order.

    By default the workers decode ahead while the caller computes (a GPU does the model's
    work). `take_turns`: decode `chunk` images, hand them out, then decode the next, so that
    the workers and a model on the CPU never run at once on the same cores (on 2 cores:
    498 -> 576 img/s end to end, README "Measured figures").
    """
    with tqdm(total=len(paths), desc=progress, unit="img", disable=progress is None) as bar:
        if not take_turns or workers == 0:
            for images, indices, reasons in _decoded(paths, preprocess, batch_size, workers,
                                                     max_pixels):
                bar.update(len(indices))
                yield images, indices, reasons
            return
        for images, start, reasons in _in_turns(paths, preprocess, batch_size=batch_size,
                                                workers=workers, max_pixels=max_pixels,
                                                chunk=chunk):
            bar.update(len(images))
            yield images, list(range(start, start + len(images))), reasons


class _Turn(NamedTuple):
    """What a turn-taking worker holds: every path, and the chunk buffer it decodes into."""
    paths: list[str]
    preprocess: Preprocess
    max_pixels: int
    buffer: torch.Tensor  # uint8 [chunk, 3, s, s] in shared memory


_TURN: _Turn | None = None  # set in each worker when the pool starts (inherited by fork)


def _start_worker(turn: _Turn) -> None:
    global _TURN
    _TURN = turn
    torch.set_num_threads(1)
    # Ctrl-C is the main process's to handle: it stops the run and shuts the pool down
    # (otherwise every worker prints a KeyboardInterrupt traceback of its own).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode_span(span: tuple[int, int, int]) -> list[str]:
    """Decode paths[start:end] into the buffer from `offset`; the reasons come back."""
    start, end, offset = span
    pixels, reasons = files_to_pixels(_TURN.paths[start:end], _TURN.preprocess,
                                      _TURN.max_pixels)
    _TURN.buffer[offset:offset + len(pixels)] = pixels
    return reasons


def _in_turns(paths: list[str], preprocess: Preprocess, *, batch_size: int, workers: int,
              max_pixels: int, chunk: int) -> Iterator[tuple[torch.Tensor, int, list[str]]]:
    """(images, first index, reasons) per batch: the workers decode `chunk` images into one
    shared buffer while the caller waits, then the batches are handed out (as copies) while
    the workers wait. One pool and one buffer for the whole run: a pool per chunk cost
    0.15 s each, and a shared-memory file per batch its allocation, page faults and copies."""
    size = preprocess.input_size
    buffer = torch.zeros(min(chunk, len(paths)), 3, size, size, dtype=torch.uint8)
    turn = _Turn(paths, preprocess, max_pixels, buffer.share_memory_())
    context = multiprocessing.get_context("fork")  # the paths reach the workers unpickled
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(turn,)) as pool:
        for first in range(0, len(paths), chunk):
            last = min(first + chunk, len(paths))
            spans = [(start, min(start + batch_size, last), start - first)
                     for start in range(first, last, batch_size)]
            for (start, end, offset), reasons in zip(spans, list(pool.map(_decode_span, spans)),
                                                     strict=True):
                yield buffer[offset:offset + end - start].clone(), start, reasons


def _decoded(paths: list[str], preprocess: Preprocess, batch_size: int, workers: int,
             max_pixels: int) -> Iterator[tuple[torch.Tensor, list[int], list[str]]]:
    loader = DataLoader(ImageFiles(paths, preprocess, max_pixels, batch_size), batch_size=None,
                        num_workers=workers, shuffle=False, persistent_workers=False)
    for images, start, reasons in loader:
        yield images, list(range(start, start + len(images))), reasons


def load_all(paths: list[str], preprocess: Preprocess, *, batch_size: int, workers: int,
             max_pixels: int, progress: str | None = None) -> tuple[torch.Tensor, list[str]]:
    """Every image as one uint8 tensor [n, 3, s, s] plus a reason per image ('' when fine)."""
    size = preprocess.input_size
    tensor = torch.zeros(len(paths), 3, size, size, dtype=torch.uint8)
    reasons = [""] * len(paths)
    with one_thread():  # the workers decode; the main process only copies
        for images, indices, batch_reasons in iterate_batches(
                paths, preprocess, batch_size=batch_size, workers=workers,
                max_pixels=max_pixels, progress=progress):
            tensor[indices[0]:indices[0] + len(indices)] = images  # in order: no scatter
            for index, reason in zip(indices, batch_reasons, strict=True):
                reasons[index] = reason
    return tensor, reasons
