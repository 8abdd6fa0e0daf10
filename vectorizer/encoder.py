"""Load a checkpoint and embed images: L2-normalised vectors plus each task's top predictions."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from config import AppConfig
from contracts import CheckpointMeta
from util.files import file_sha256
from vectorizer.checkpoint import check_config_matches, load_checkpoint
from vectorizer.dataset import iterate_batches
from vectorizer.device import autocast, pick_device, resolve_precision, set_threads
from vectorizer.model import MultiTaskNet, VectorHook, folded_for_inference
from vectorizer.preprocess import TRIM_REVISION, Preprocess

log = logging.getLogger(__name__)

Prediction = dict[str, list[tuple[str, float]]]


@dataclass
class Embedded:
    vectors: np.ndarray          # [n, dim] float32, unit length
    predictions: list[Prediction]
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)  # task → [n, classes]


class PathVectors(NamedTuple):
    vectors: np.ndarray                  # [n, dim] float32, NaN rows where an image failed
    reasons: list[str]                   # '' or why the image was skipped
    task_probabilities: np.ndarray | None = None  # [n, classes] of the asked task, NaN rows too


class Encoder:
    """The model in eval mode with its preprocessing; safe to share between threads."""

    def __init__(self, model: MultiTaskNet, meta: dict, checksum: str, precision: str = "auto",
                 device: torch.device | None = None, fold_batchnorm: bool = False) -> None:
        self.device = device or pick_device()
        self.precision = resolve_precision(precision, self.device)
        self.meta, self.checksum = meta, checksum  # meta: the checkpoint's dict, as stored
        self.checkpoint = CheckpointMeta.model_validate(meta)
        self.preprocess = Preprocess.from_dict(self.checkpoint.preprocess)
        self.classes: dict[str, list[str]] = self.checkpoint.tasks
        if fold_batchnorm and not self.checkpoint.layer_to_get_input.startswith("backbone"):
            model = folded_for_inference(model, self.preprocess.input_size)
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)
        self.hook = VectorHook(self.model, self.checkpoint.layer_to_get_input)
        mean = self.checkpoint.vector_mean
        self.vector_mean = torch.tensor(mean, dtype=torch.float32, device=self.device) \
            if mean else None
        scale = self.checkpoint.vector_scale
        self.vector_scale = torch.tensor(scale, dtype=torch.float32, device=self.device) \
            if scale else None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: AppConfig) -> Encoder:
        path = Path(config.paths.trained_model_path)
        model, meta = load_checkpoint(path)
        check_config_matches(config, meta, path)
        set_threads(config.model.num_threads)
        return cls(model, meta, file_sha256(path), config.model.precision, fold_batchnorm=True)

    @property
    def preprocess_signature(self) -> dict:
        """The stored preprocessing, plus the trimming code's revision when the model trims
        borders: what turns an image file into the model's pixels."""
        trimming = {"trim_revision": TRIM_REVISION} if self.preprocess.trim_border else {}
        return {**self.checkpoint.preprocess, **trimming}

    @property
    def cache_key(self) -> str:
        """What the vectors depend on: the model, the trimming code when the model trims
        borders, and the precision (bf16 moves them)."""
        revision = self.preprocess_signature.get("trim_revision")
        trimming = f"-trim{revision}" if revision else ""
        return self.checksum + trimming + ("" if self.precision == "fp32" else f"-{self.precision}")

    @property
    def dim(self) -> int:
        return int(self.checkpoint.vector_dim or 0)

    def forward(self, images: torch.Tensor) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """uint8 [n, 3, s, s] → (unit vectors [n, d], class probabilities per task)."""
        batch = images.to(self.device).contiguous(memory_format=torch.channels_last)
        with self._lock, torch.inference_mode(), autocast(self.device, self.precision):
            logits = self.model(batch)
            vectors = self.hook.vector.float()
            if self.vector_mean is not None:
                vectors = vectors - self.vector_mean
            if self.vector_scale is not None:  # a two-path neck's halves, weighted for search
                vectors = vectors * self.vector_scale
            vectors = torch.nn.functional.normalize(vectors, dim=1)
        probabilities = {task: torch.softmax(value.float(), dim=1).cpu().numpy()
                         for task, value in logits.items()}
        return vectors.cpu().numpy().astype(np.float32), probabilities

    def embed_images(self, images: list[Image.Image], top: int = 3) -> Embedded:
        batch = torch.stack([self.preprocess(image) for image in images])
        vectors, probabilities = self.forward(batch)
        return Embedded(vectors, self.top_predictions(probabilities, top), probabilities)

    def top_predictions(self, probabilities: dict[str, np.ndarray], top: int) -> list[Prediction]:
        count = len(next(iter(probabilities.values()))) if probabilities else 0
        predictions: list[Prediction] = [{} for _ in range(count)]
        for task, matrix in probabilities.items():
            for row, scores in enumerate(matrix):
                best = np.argsort(-scores)[:top]
                predictions[row][task] = [(self.classes[task][i], float(scores[i])) for i in best]
        return predictions

    def embed_paths(self, paths: list[str], *, batch_size: int, workers: int, max_pixels: int,
                    progress: str | None = None, task: str | None = None) -> PathVectors:
        """Vectors for image files in order (and `task`'s class probabilities when asked); a
        failed image gets NaN rows and its reason."""
        vectors: np.ndarray | None = None
        scores: np.ndarray | None = None
        reasons = [""] * len(paths)
        for images, indices, batch_reasons in iterate_batches(
                paths, self.preprocess, batch_size=batch_size, workers=workers,
                max_pixels=max_pixels, progress=progress, take_turns=self.device.type == "cpu"):
            batch_vectors, probabilities = self.forward(images)
            if vectors is None:
                vectors = _nan_rows(len(paths), batch_vectors.shape[1])
                scores = _nan_rows(len(paths), probabilities[task].shape[1]) if task else None
            good = [(index, position) for position, (index, reason)
                    in enumerate(zip(indices, batch_reasons, strict=True)) if not reason]
            for index, reason in zip(indices, batch_reasons, strict=True):
                reasons[index] = reason
            if good:
                rows, positions = (list(part) for part in zip(*good, strict=True))
                vectors[rows] = batch_vectors[positions]
                if scores is not None:
                    scores[rows] = probabilities[task][positions]
        return PathVectors(vectors if vectors is not None else np.zeros((0, 0), np.float32),
                           reasons, scores)


def _nan_rows(count: int, width: int) -> np.ndarray:
    return np.full((count, width), np.nan, np.float32)
