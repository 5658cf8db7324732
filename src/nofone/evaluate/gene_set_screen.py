"""`screen-gene-sets`: does a gene set separate normal from tumour samples better than chance?

GEMDiff's screen: for each gene set, embed the samples by that set's genes in 2-D (UMAP,
n_neighbors 90, min_dist 0.3) and take the silhouette of the normal/tumour labels there. A
silhouette alone is hard to read: random sets cluster better the larger they are (GEMDiff's own
Table 2: 0.15 at 8 random genes, 0.49 at 256). So each set is compared with `n_random` random
sets of the same size drawn from all genes: z-score against their silhouettes and an empirical
one-sided p-value (1 + #random >= observed) / (1 + n_random). The same in the first two
principal components, which need no tuning and no random seed of their own.

Values are log(1 + count / size factor) standardised per gene over the samples given
(`expression_matrix`), or any [samples x genes] matrix the caller prepared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from nofone.errors import InputError
from nofone.models.size_factors import SizeFactorReference

EMBEDDINGS = ("umap", "pca")


@dataclass(frozen=True)
class ScreenOptions:
    n_random: int = 100
    n_neighbors: int = 90
    min_dist: float = 0.3
    embeddings: tuple[str, ...] = EMBEDDINGS
    min_size: int = 3
    seed: int = 0


def expression_matrix(counts: np.ndarray, measured: np.ndarray | None = None) -> np.ndarray:
    """log(1 + x / s) (median-of-ratios s over these samples) standardised per gene; genes that
    do not vary are 0."""
    counts = np.asarray(counts)
    sf = SizeFactorReference.fit(counts, measured)(counts, measured, check=True)
    v = np.log1p(counts / sf[:, None])
    sd = v.std(0)
    return np.where(sd > 0, (v - v.mean(0)) / np.where(sd > 0, sd, 1.0), 0.0)


def embed(values: np.ndarray, method: str, options: ScreenOptions, seed: int) -> np.ndarray:
    """[N, 2] embedding of the samples (rows) of `values`."""
    if method == "pca":
        return PCA(2, random_state=seed).fit_transform(values) if values.shape[1] >= 2 else np.c_[values, values]
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_neighbors=min(options.n_neighbors, len(values) - 1), min_dist=options.min_dist,
                            n_components=2, random_state=seed)
        return reducer.fit_transform(values)
    raise ValueError(f"unknown embedding {method!r}; use one of {EMBEDDINGS}")


def silhouette(values: np.ndarray, labels: np.ndarray, method: str, options: ScreenOptions, seed: int) -> float:
    return float(silhouette_score(embed(values, method, options, seed), labels))


def screen_gene_sets(values: np.ndarray, labels: np.ndarray, gene_sets: dict[str, np.ndarray],
                     options: ScreenOptions | None = None) -> tuple[pd.DataFrame, dict[tuple[str, int], np.ndarray]]:
    """(one row per set: size, silhouette, random mean / sd, z and empirical p per embedding;
    the random silhouettes by (embedding, size)). `gene_sets`: {name: column indices}."""
    options = options or ScreenOptions()
    labels = np.asarray(labels)
    if len(np.unique(labels)) != 2:
        raise InputError(f"screen-gene-sets needs exactly two sample groups, got {sorted(set(labels))}")
    values = np.asarray(values, dtype=np.float64)
    sets = {k: np.asarray(v, dtype=np.int64) for k, v in gene_sets.items() if len(v) >= options.min_size}
    if not sets:
        raise InputError(f"no gene set has {options.min_size} or more genes in the data")
    rng = np.random.default_rng(options.seed)
    random: dict[tuple[str, int], np.ndarray] = {}
    rows = []
    for name, index in sets.items():
        row: dict = {"gene_set": name, "size": len(index)}
        for method in options.embeddings:
            key = (method, len(index))
            if key not in random:  # random sets of this size, shared by every set of this size
                draws = [rng.choice(values.shape[1], len(index), replace=False) for _ in range(options.n_random)]
                random[key] = np.array([silhouette(values[:, d], labels, method, options, options.seed + i)
                                        for i, d in enumerate(draws)])
            observed = silhouette(values[:, index], labels, method, options, options.seed)
            null = random[key]
            sd = float(null.std(ddof=1)) if len(null) > 1 else float("nan")
            row |= {f"silhouette_{method}": observed, f"random_mean_{method}": float(null.mean()),
                    f"random_sd_{method}": sd, f"z_{method}": (observed - null.mean()) / sd if sd > 0 else np.nan,
                    f"p_{method}": (1 + int((null >= observed).sum())) / (1 + len(null))}
        rows.append(row)
    return pd.DataFrame(rows), random


def plot_screen(table: pd.DataFrame, path: Path, embeddings: tuple[str, ...] = EMBEDDINGS) -> None:
    """Each set's silhouette against the mean +- 2 SD of random sets of its size, per embedding."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in embeddings if f"silhouette_{m}" in table]
    fig, axes = plt.subplots(1, len(methods), figsize=(5.5 * len(methods), 0.25 * len(table) + 2), squeeze=False)
    for ax, method in zip(axes[0], methods):
        order = table.sort_values(f"silhouette_{method}").reset_index(drop=True)
        ypos = np.arange(len(order))
        mean, sd = order[f"random_mean_{method}"], order[f"random_sd_{method}"].fillna(0)
        ax.errorbar(mean, ypos, xerr=2 * sd, fmt="|", color="0.6", label="random sets (mean +- 2 SD)")
        ax.scatter(order[f"silhouette_{method}"], ypos, color="C3", zorder=3, s=14, label="gene set")
        ax.set_yticks(ypos, order["gene_set"], fontsize=7)
        ax.set_xlabel(f"silhouette, normal vs tumour ({method.upper()})")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
