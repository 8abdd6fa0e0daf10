"""Colour distributions of the indexed products, computed at build time and stored beside them.

One row per indexed product (the same rows as the vectors): the class probabilities of the
model's colour head, so that re-ranking by colour never runs the model over candidates at query
time. The file is written with the index version and checked (rows, finite values) when loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLOURS_FILE = "colours.npy"


@dataclass(frozen=True)
class ItemDistributions:
    """Per-product probability distributions over one label column's classes."""

    column: str           # the label column (task) whose head produced them
    values: np.ndarray    # [n_items, classes] float32, each row sums to 1

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float32)
        if values.ndim != 2 or not np.isfinite(values).all():
            raise ValueError(f"{self.column} distributions must be a finite [n, classes] "
                             f"matrix, got shape {values.shape}")
        object.__setattr__(self, "values", values)

    def manifest_entry(self) -> dict:
        return {"column": self.column, "file": COLOURS_FILE, "classes": int(self.values.shape[1])}

    def save(self, folder: Path) -> None:
        np.save(Path(folder) / COLOURS_FILE, self.values, allow_pickle=False)

    @classmethod
    def load(cls, folder: Path, entry: dict | None, n_items: int) -> ItemDistributions | None:
        """The stored distributions (None when the version has none); ValueError when the file
        does not match the manifest."""
        if not entry:
            return None
        values = np.load(Path(folder) / COLOURS_FILE, allow_pickle=False)
        if values.shape != (n_items, entry.get("classes")):
            raise ValueError(f"{COLOURS_FILE} is {values.shape}, the manifest says "
                             f"{n_items} x {entry.get('classes')}")
        return cls(str(entry["column"]), values)
