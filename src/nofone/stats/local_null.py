"""The local null: how far genes of the normals *nearest to a sample* sit off the model.

Why: on the normal atlas the outlier null's one share of off genes for everybody is what keeps a
4-fold change in any gene from being called (the share is an average over normals), yet in
never-trained normals the NB test's false calls are not spread over people: one sample in 58
carried a third of them, a tenth of the samples three quarters, and which samples those are is
told by where they sit (rare tissues, adjacent normals the model covers badly), not by which
genes (1,694 distinct genes among 1,820 calls). So each normal that calibrates the null keeps its
own outlier share, and a sample is tested against the mixture with the mean share of its `k`
nearest calibration normals, nearness measured between closest normals (log CPM, principal
components of the calibration normals). The share is never estimated from the sample's own
genes: a tumour's or a spiked sample's real changes would be taken for healthy variation.

The calibration normals are the held-out normals of cross-fitting (`nofone train --cross-fit K`:
every training normal gets a residual from a model that never saw it); the width `tau` of the
off genes is fitted once on all of them (`nofone.stats.outlier_null.fit_outlier_null`), each
normal's share by EM over its genes at that width. docs/null.md has the figures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from scipy import special

from nofone.errors import InputError
from nofone.io.artifact import verify_checksums
from nofone.stats.lognormal_nb import midp_tails
from nofone.stats.nb_tests import nb_logpmf
from nofone.stats.outlier_null import FitValues, equal_tail_midp_mixture, fit_outlier_null

#: Neighbours whose shares are averaged (k = 3 gave the best frontier on the atlas: docs/null.md).
NEIGHBOURS = 3
#: Principal components of the calibration normals' closest normals that nearness is measured in.
DIMENSIONS = 30
#: Normal scores of the calibration normals are kept clipped to this (gene-set tests use them).
SCORE_CLIP = 6.0
_EM_STEPS, _EM_TOL = 500, 1e-8
_BLOCK = 400_000


def profile(mean: np.ndarray) -> np.ndarray:
    """log1p CPM of closest normals [N, G]: where a sample sits, whatever the model."""
    mean = np.asarray(mean, dtype=np.float64)
    return np.log1p(mean / np.maximum(mean.sum(-1, keepdims=True), 1e-300) * 1e6)


def normal_scores(x: np.ndarray, mean: np.ndarray, r: np.ndarray, clip: float = SCORE_CLIP) -> np.ndarray:
    """Signed normal score of each count under its NB (mid-p upper tail), clipped to +-clip."""
    _, upper = midp_tails(x, mean, r, 0.0)
    with np.errstate(divide="ignore"):
        z = special.ndtri(1.0 - np.clip(upper, 1e-300, 1.0))
    return np.clip(np.nan_to_num(z, nan=0.0), -clip, clip)


@dataclass(frozen=True)
class LocalNull:
    """Calibration normals' outlier shares and where they sit; `tau` their common width."""

    tau: float
    shares: np.ndarray  # [J]
    coords: np.ndarray  # [J, D]
    centre: np.ndarray  # [G]
    basis: np.ndarray  # [G, D]
    k: int = NEIGHBOURS
    global_pi: float = 0.0
    scores: np.ndarray | None = None  # [J, G] the calibration normals' normal scores (gene-set tests)

    @property
    def n_samples(self) -> int:
        return len(self.shares)

    def neighbours(self, mean: np.ndarray, k: int | None = None) -> np.ndarray:
        """[N, k] indices of the calibration normals nearest to each closest normal of `mean`
        (`k`: default the null's own)."""
        coords = (profile(mean) - self.centre) @ self.basis
        d = ((coords[:, None, :] - self.coords[None, :, :]) ** 2).sum(-1)
        k = min(self.k if k is None else k, self.n_samples)
        return np.argsort(d, axis=1, kind="stable")[:, :k]

    def shares_for(self, mean: np.ndarray) -> np.ndarray:
        """[N]: each sample's outlier share, the mean of its neighbours'."""
        return self.shares[self.neighbours(np.atleast_2d(mean))].mean(1)

    def pvalues(self, x: np.ndarray, mean: np.ndarray, r: np.ndarray, share: np.ndarray) -> np.ndarray:
        """Equal-tail mid-p against (1 - share) NB + share NB x lognormal(tau); `share` [N]."""
        pi = np.asarray(share, dtype=np.float64)[:, None]
        if self.tau <= 0 or not (pi > 0).any():
            lower0, upper0 = midp_tails(x, mean, r, 0.0)
            return np.minimum(1.0, 2.0 * np.minimum(lower0, upper0))
        return equal_tail_midp_mixture(x, mean, r, pi, self.tau)

    def describe(self) -> dict:
        q = np.quantile(self.shares, [0.25, 0.5, 0.75, 0.9]) if self.n_samples else [np.nan] * 4
        return {"tau": self.tau, "k": self.k, "n_samples": self.n_samples, "global_pi": self.global_pi,
                "share_quartiles": [float(v) for v in q[:3]], "share_q90": float(q[3])}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"local_null.shares": torch.as_tensor(self.shares, dtype=torch.float64),
                "local_null.coords": torch.as_tensor(self.coords, dtype=torch.float32),
                "local_null.centre": torch.as_tensor(self.centre, dtype=torch.float32),
                "local_null.basis": torch.as_tensor(self.basis, dtype=torch.float32),
                "local_null.params": torch.tensor([self.tau, float(self.k), self.global_pi], dtype=torch.float64),
                **({} if self.scores is None else
                   {"local_null.scores": torch.as_tensor(self.scores, dtype=torch.float16)})}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> LocalNull:
        tau, k, global_pi = (float(v) for v in tensors["local_null.params"])
        arrays = {name: tensors[f"local_null.{name}"].double().numpy() for name in ("shares", "coords", "centre",
                                                                                  "basis")}
        scores = tensors.get("local_null.scores")
        return cls(tau=tau, k=int(k), global_pi=global_pi, scores=None if scores is None else scores.float().numpy(),
                   **arrays)


def fit_local_null(x: np.ndarray, mean: np.ndarray, r: np.ndarray, measured: np.ndarray | None = None,
                   k: int = NEIGHBOURS, dimensions: int = DIMENSIONS, seed: int = 0) -> LocalNull:
    """The local null from calibration normals: counts [J, G], their closest normals' NB means and
    dispersions (each from a model that never trained on them)."""
    x = np.asarray(x, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    r = np.broadcast_to(np.asarray(r, dtype=np.float64), x.shape)
    use = np.isfinite(mean) & (mean > 0) & np.isfinite(r)
    if measured is not None:
        use &= measured
    common = fit_outlier_null(x, mean, r, use, seed=seed)
    shares = np.zeros(len(x)) if common.tau <= 0 else _sample_shares(x, mean, r, use, common.tau)
    centre, basis, coords = placement(mean, dimensions)
    return LocalNull(tau=common.tau, shares=shares, coords=coords, centre=centre, basis=basis, k=k,
                     global_pi=common.pi, scores=normal_scores(x, mean, r).astype(np.float16))


def placement(mean: np.ndarray, dimensions: int = DIMENSIONS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where calibration normals sit: the centre [G] and principal axes [G, D] of their closest
    normals' profiles, and their coordinates [J, D] on those axes."""
    prof = profile(mean)
    centre = prof.mean(0)
    d = max(1, min(dimensions, len(prof) - 1))
    _, _, vt = np.linalg.svd(prof - centre, full_matrices=False)
    basis = vt[:d].T
    return centre, basis, (prof - centre) @ basis


def _sample_shares(x: np.ndarray, mean: np.ndarray, r: np.ndarray, use: np.ndarray, tau: float) -> np.ndarray:
    """Each normal's own share of off genes at width tau (EM over its genes)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        plain = np.where(use, nb_logpmf(np.where(use, x, 0), np.where(use, mean, 1), np.where(use, r, 1)), 0.0)
    wide = np.zeros_like(plain)
    flat = [np.ascontiguousarray(a).ravel() for a in (np.where(use, x, 0.0), np.where(use, mean, 1.0),
                                                    np.where(use, r, 1.0))]
    out = wide.ravel()
    t = torch.tensor(tau, dtype=torch.float64)
    for start in range(0, out.size, _BLOCK):
        values = FitValues(*(torch.as_tensor(a[start:start + _BLOCK]) for a in flat))
        with torch.no_grad():
            out[start:start + _BLOCK] = values.log_lognormal_pmf(t).numpy()
    wide = out.reshape(plain.shape)
    n = np.maximum(use.sum(1), 1)
    pi = np.full(len(x), 0.01)
    for _ in range(_EM_STEPS):
        a = np.log1p(-pi)[:, None] + plain
        b = np.log(pi)[:, None] + wide
        weight = np.where(use, np.exp(b - np.logaddexp(a, b)), 0.0)
        new = np.clip(weight.sum(1) / n, 0.0, 0.5)
        done = np.abs(new - pi).max() < _EM_TOL
        pi = np.maximum(new, 1e-12)
        if done:
            break
    return np.where(pi < 1e-9, 0.0, pi)


#: The local null's file in a model folder (listed in its checksums like every file there).
NULL_FILE = "null.safetensors"


def save_local_null(null: LocalNull, folder: Path, source: str) -> None:
    """Write `null` into a model folder being staged; `source` says which normals calibrate it
    ("heldout": the early-stopping normals; "cross-fit-K": every normal, by K fold models)."""
    save_file({k: v.contiguous() for k, v in null.tensors().items()}, str(Path(folder) / NULL_FILE),
              metadata={"format": "nofone", "source": source})


def load_local_null(model_dir: str | os.PathLike[str]) -> LocalNull | None:
    """The local null stored with a model (checksums verified), None when it has none."""
    folder = Path(model_dir)
    path = folder / NULL_FILE
    if not path.is_file():
        return None
    verify_checksums(folder)
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (not a dict)
        return LocalNull.from_tensors(tensors)
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise InputError(f"model {folder}: {NULL_FILE} cannot be read ({exc})") from exc


def local_null_source(model_dir: str | os.PathLike[str]) -> str | None:
    """Which normals calibrate the stored local null (see `save_local_null`), None without one."""
    path = Path(model_dir) / NULL_FILE
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as handle:
        return (handle.metadata() or {}).get("source")
