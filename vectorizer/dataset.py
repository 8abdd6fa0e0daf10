"""Decode catalog image files into uint8 tensors in parallel, with a status per image."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vectorizer.images import ImageError, open_image
from vectorizer.preprocess import Preprocess

log = logging.getLogger(__name__)


class ImageFiles(Dataset):
    """Item i is (uint8 CHW tensor, i, reason); an unreadable file gives zeros and its reason."""

    def __init__(self, paths: list[str], preprocess: Preprocess, max_pixels: int) -> None:
        self.paths, self.preprocess, self.max_pixels = paths, preprocess, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        size = self.preprocess.input_size
        try:
            image = open_image(self.paths[index], self.max_pixels)
        except ImageError as error:
            return torch.zeros(3, size, size, dtype=torch.uint8), index, str(error)
        return self.preprocess(image), index, ""


def iterate_batches(paths: list[str], preprocess: Preprocess, *, batch_size: int, workers: int,
                    max_pixels: int, progress: str | None = None
                    ) -> Iterator[tuple[torch.Tensor, list[int], list[str]]]:
    """Batches of (images, indices, reasons) in catalog order."""
    loader = DataLoader(ImageFiles(paths, preprocess, max_pixels), batch_size=batch_size,
                        num_workers=workers, shuffle=False, persistent_workers=False)
    with tqdm(total=len(paths), desc=progress, unit="img", disable=progress is None) as bar:
        for images, indices, reasons in loader:
            bar.update(len(indices))
            yield images, indices.tolist(), list(reasons)


def load_all(paths: list[str], preprocess: Preprocess, *, batch_size: int, workers: int,
             max_pixels: int, progress: str | None = None) -> tuple[torch.Tensor, list[str]]:
    """Every image as one uint8 tensor [n, 3, s, s] plus a reason per image ('' when fine)."""
    size = preprocess.input_size
    tensor = torch.zeros(len(paths), 3, size, size, dtype=torch.uint8)
    reasons = [""] * len(paths)
    for images, indices, batch_reasons in iterate_batches(
            paths, preprocess, batch_size=batch_size, workers=workers, max_pixels=max_pixels,
            progress=progress):
        tensor[indices] = images
        for index, reason in zip(indices, batch_reasons, strict=True):
            reasons[index] = reason
    return tensor, reasons
