"""Task labels and the train/val/test split: rare classes, missing labels, product variants."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd

from config.schema import TaskConfig, TrainingConfig

OTHER = "(other)"


def class_lists(items: pd.DataFrame, tasks: list[TaskConfig]) -> tuple[dict, dict]:
    """Classes per task after rare-class handling, and a report of what was merged or dropped."""
    classes, report = {}, {}
    for task in tasks:
        counts = items[task.column].dropna().astype(str).value_counts()
        kept = sorted(counts[counts >= task.min_count].index)
        rare = counts[counts < task.min_count]
        if task.rare == "merge" and len(rare):
            kept.append(OTHER)
        classes[task.column] = kept
        report[task.column] = {"classes": len(kept), "rare_classes": len(rare),
                               "rare_items": int(rare.sum()), "rare_handling": task.rare,
                               "missing_labels": int(items[task.column].isna().sum())}
    return classes, report


def encode_labels(items: pd.DataFrame, classes: dict[str, list[str]]) -> np.ndarray:
    """Integer targets [n_items, n_tasks]; -1 where the label is missing or dropped."""
    targets = np.full((len(items), len(classes)), -1, dtype=np.int64)
    for column_index, (task, names) in enumerate(classes.items()):
        lookup = {name: index for index, name in enumerate(names)}
        other = lookup.get(OTHER, -1)
        for row, value in enumerate(items[task].tolist()):
            if value is None or (isinstance(value, float) and np.isnan(value)):
                continue
            targets[row, column_index] = lookup.get(str(value), other)
    return targets


def design_keys(items: pd.DataFrame, strip_columns: list[str]) -> list[str]:
    """A key shared by variants of one design: the name without its colour-like label words."""
    keys = []
    for row in items.itertuples(index=False):
        name = str(row.name).lower()
        for column in strip_columns:
            value = getattr(row, column, None)
            if value:
                name = name.replace(str(value).lower(), " ")
        keys.append(re.sub(r"\s+", " ", name).strip() or str(row.id))
    return keys


def split_ids(items: pd.DataFrame, training: TrainingConfig) -> dict[str, list[str]]:
    """Seeded split by design group, so variants of one design never straddle train and test."""
    keys = design_keys(items, training.variant_strip_columns) if training.variant_strip_columns \
        else items["id"].tolist()
    rank = {key: _seeded_rank(key, training.seed) for key in set(keys)}
    ordered = sorted(set(keys), key=rank.__getitem__)
    n_test = round(len(ordered) * training.test_fraction)
    n_val = round(len(ordered) * training.val_fraction)
    part_of = {key: "test" if i < n_test else "val" if i < n_test + n_val else "train"
               for i, key in enumerate(ordered)}
    split = {"train": [], "val": [], "test": []}
    for item_id, key in zip(items["id"], keys, strict=True):
        split[part_of[key]].append(item_id)
    return split


def _seeded_rank(key: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def catalog_checksum(items: pd.DataFrame, columns: list[str]) -> str:
    """Checksum of what training saw: ids, image paths and labels, in catalog order."""
    table = items[["id", "image_path", *columns]].astype(str)
    return hashlib.sha256(table.to_csv(index=False).encode()).hexdigest()
