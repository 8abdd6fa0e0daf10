"""Known catalog labels as distributions: each product's own label, one-hot in a head's class
order, set against the distribution the model predicts for a query (`colour.source: catalog`,
`label_match`; README "Known labels steer the ranking")."""

from __future__ import annotations

import numpy as np
import pandas as pd

from vectorizer.labels import encode_labels


def catalog_distributions(items: pd.DataFrame, column: str, classes: list[str]) -> np.ndarray:
    """[len(items), len(classes)]: 1 at each product's class (a rare label at the head's
    "(other)" class, as in training); a row of NaN where the label is missing or has no class."""
    index = encode_labels(items, {column: list(classes)})[:, 0]
    values = np.zeros((len(index), len(classes)), np.float32)
    known = index >= 0
    values[np.flatnonzero(known), index[known]] = 1.0
    values[~known] = np.nan
    return values
