"""Latent points on a plane for a figure: principal components, with the share of variance kept."""

from __future__ import annotations

import numpy as np


def two_columns(xy: np.ndarray) -> np.ndarray:
    """[N, 2]: a single column padded with zeros."""
    return xy if xy.shape[1] >= 2 else np.column_stack([xy, np.zeros(len(xy))])


def pca_plane(reference: np.ndarray, others: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray | None, list[float]]:
    """(reference [N, 2], others [M, 2] or None, explained variance ratios): the PCA of
    `reference` (scikit-learn, seeded) and `others` projected with it."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=min(2, reference.shape[1], len(reference)), random_state=0).fit(reference)
    projected = None if others is None else two_columns(pca.transform(others))
    return two_columns(pca.transform(reference)), projected, [float(v) for v in pca.explained_variance_ratio_]


def principal_plane(latent: np.ndarray) -> tuple[np.ndarray, list[float] | None]:
    """([N, 2], explained variance ratios of the two components or None): the latent itself when
    it has 2 dimensions (1: padded with 0), else its first two principal components, each
    oriented so that its largest coordinate is positive (deterministic across runs)."""
    if latent.shape[1] == 1:
        return np.column_stack([latent[:, 0], np.zeros(len(latent))]), None
    if latent.shape[1] == 2:
        return latent.copy(), None
    centred = latent - latent.mean(0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    signs = np.sign(coords[np.abs(coords).argmax(0), range(2)])
    coords = coords * np.where(signs == 0, 1, signs)
    power = singular ** 2
    explained = [float(v) for v in (power / power.sum())[:2]] if power.sum() > 0 else [0.0, 0.0]
    return coords, explained
