"""The catalog map: a deterministic 2-D PCA projection of the vectors, and its bounded sample."""

from __future__ import annotations

import numpy as np
import pandas as pd

_PCA_CHUNK_ROWS = 16384


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D map coordinates [n, 2] and the projection [3, dim] (mean, axis 1, axis 2).

    PCA by SVD of the dim x dim covariance (accumulated in float64 chunks, so memory stays small
    for large catalogs); each axis' sign is fixed (largest loading positive) so rebuilding the
    same vectors gives the same map.
    """
    matrix = np.asarray(vectors, dtype=np.float32)
    dim = matrix.shape[1]
    mean = matrix.mean(axis=0, dtype=np.float64)
    covariance = np.zeros((dim, dim))
    for start in range(0, matrix.shape[0], _PCA_CHUNK_ROWS):
        centered = matrix[start:start + _PCA_CHUNK_ROWS].astype(np.float64) - mean
        covariance += centered.T @ centered
    _, _, vt = np.linalg.svd(covariance)
    axes = np.zeros((2, dim))
    axes[: min(2, dim)] = vt[:2]
    signs = np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])
    axes *= np.where(signs == 0, 1.0, signs)[:, None]
    projection = np.vstack([mean, axes]).astype(np.float32)
    return project(matrix, projection), projection


def project(vectors: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """Map coordinates [n, 2] of vectors under a projection from `pca_2d`."""
    matrix = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    return ((matrix - projection[0]) @ projection[1:].T).astype(np.float32)


def map_sample(items: pd.DataFrame, map_xy: pd.DataFrame, max_points: int) -> pd.DataFrame:
    """Items joined with their map coordinates, a seeded sample when there are too many."""
    table = items.drop(columns=["map_x", "map_y"], errors="ignore")
    frame = table.merge(map_xy[["id", "map_x", "map_y"]], on="id", how="inner")
    if len(frame) > max_points:
        frame = frame.sample(max_points, random_state=0).sort_index()
    return frame.reset_index(drop=True)
