"""`augment`: synthetic samples per class, as counts, and honest measures of their quality.

Sampling starts from seeded Gaussian noise at step T and runs the DDIM sampler down to 0 under a
class's labels (eta = 1 with `steps` moves: DDPM's ancestral sampler on a respaced grid, as
GEMDiff samples; eta = 0: deterministic DDIM). The point is mapped to each gene's NB mean at a
size factor drawn from the training normals' (log-normal with their mean and sd), and counts are
drawn from the NB with the calibrated dispersions, so that a synthetic sample is a count sample
like any other and goes through every nofone step.

Quality, for each seed, synthetic against held-out real samples of the same classes, both in the
model's space: MMD with a median-heuristic bandwidth and its permutation p-value; the classifier
two-sample AUROC (0.5: indistinguishable); the accuracy and balanced accuracy of a classifier
trained on synthetic samples and tested on the real ones, beside the same classifier trained on
real training samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nofone.evaluate.two_sample import c2st_auroc, classifier_scores, fit_classifier, mmd_test
from nofone.io.dataset import COUNTS_FILE, CountChunk, CountWriter, write_tables
from nofone.models.diffusion.module import NORMAL, TUMOUR, DiffusionModule
from nofone.models.diffusion.schedule import ddim_denoise


@dataclass(frozen=True)
class SampleClass:
    """A class to generate: its name and labels (None: the null label)."""

    name: str
    tissue: str | None = None
    condition: int | None = None


@dataclass(frozen=True)
class SamplerOptions:
    steps: int = 100
    eta: float = 1.0
    guidance: float = 1.0
    seed: int = 0
    batch_size: int = 256


def default_classes(module: DiffusionModule) -> list[SampleClass]:
    """normal/tumour for a model with that label, else one class per tissue, else `normal`."""
    labels = module.config.labels
    if labels.tumour:
        return [SampleClass("normal", condition=NORMAL), SampleClass("tumour", condition=TUMOUR)]
    if labels.tissues:
        return [SampleClass(t, tissue=t) for t in labels.tissues]
    return [SampleClass("normal")]


@torch.no_grad()
def sample_points(module: DiffusionModule, n: int, cls: SampleClass, options: SamplerOptions,
                  seed: int | None = None) -> torch.Tensor:
    """[n, G] points in the model's space sampled under the labels of `cls`."""
    device = module.log_r.device
    g = torch.Generator().manual_seed(options.seed if seed is None else seed)
    out = []
    for start in range(0, n, options.batch_size):
        m = min(options.batch_size, n - start)
        tissue = module.tissue_index([cls.tissue] * m, m)
        condition = module.condition_index(cls.condition, m)
        noise = torch.randn((m, module.n_genes), generator=g).to(device)

        def eps_fn(v, t, tissue=tissue, condition=condition):
            return module.eps(v, t, tissue, condition, options.guidance)

        out.append(ddim_denoise(module.schedule, eps_fn, noise, module.config.timesteps, options.steps,
                                options.eta, g))
    return torch.cat(out).cpu()


@torch.no_grad()
def draw_counts(module: DiffusionModule, points: torch.Tensor, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(counts int64 [n, G], size factors [n]): NB counts at the points' means."""
    rng = np.random.default_rng(seed)
    mu, sd = (float(v) for v in module.space.log_sf_moments)
    sf = np.exp(rng.normal(mu, sd, points.shape[0]))
    mean = module.space.relative_mean(points.to(module.log_r.device)).cpu().numpy() * sf[:, None]
    r = module.dispersion.cpu().numpy()
    counts = rng.poisson(rng.gamma(r, mean / r))
    return counts.astype(np.int64), sf


def synthesize(module: DiffusionModule, classes: Sequence[SampleClass], n_per_class: int,
               options: SamplerOptions, seed: int | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Counts [n_classes x n, G] and their sample table (sample_id, class, tissue, condition,
    synthetic, seed)."""
    seed = options.seed if seed is None else seed
    blocks, rows = [], []
    for c, cls in enumerate(classes):
        points = sample_points(module, n_per_class, cls, options, seed * 1009 + c)
        counts, sf = draw_counts(module, points, seed * 1009 + c + 500)
        blocks.append(counts)
        condition = {NORMAL: "normal", TUMOUR: "tumour"}.get(cls.condition, "normal")
        rows += [{"sample_id": f"synthetic_s{seed}_{cls.name}_{i + 1:05d}", "class": cls.name,
                  "tissue": cls.tissue or "", "condition": condition, "synthetic": True, "seed": seed,
                  "size_factor": float(sf[i])} for i in range(n_per_class)]
    return np.vstack(blocks), pd.DataFrame(rows)


def write_dataset(folder: Path, counts: np.ndarray, samples: pd.DataFrame, genes: pd.DataFrame) -> None:
    """Write synthetic samples as a nofone count dataset into `folder` (the caller stages it
    with `nofone.io.atomic.staged_outdir`, so a failure leaves nothing behind)."""
    folder.mkdir(parents=True, exist_ok=True)
    with CountWriter(folder / COUNTS_FILE, counts.shape[1]) as writer:
        writer.write(CountChunk(samples["sample_id"].tolist(), counts))
    write_tables(folder, genes, samples)


def model_space(module: DiffusionModule, counts: np.ndarray, measured: np.ndarray | None = None) -> np.ndarray:
    """Counts as points of the model's space (the features every quality measure uses)."""
    x = torch.as_tensor(np.asarray(counts), dtype=torch.float64, device=module.log_r.device)
    m = None if measured is None else torch.as_tensor(measured, dtype=torch.bool, device=x.device)
    return module.space(x, module.space.size_factors(x, m), m).cpu().numpy()


def quality(module: DiffusionModule, classes: Sequence[SampleClass], real_test: tuple[np.ndarray, np.ndarray],
            real_train: tuple[np.ndarray, np.ndarray] | None, n_per_class: int, seeds: Sequence[int],
            options: SamplerOptions, permutations: int = 500, classifier: str = "logistic") -> pd.DataFrame:
    """One row per seed: MMD (and p) and C2ST AUROC of synthetic vs `real_test` (counts, class
    names), train-on-synthetic/test-on-real accuracy, and train-on-real (`real_train`) beside it."""
    names = [c.name for c in classes]
    test_x = model_space(module, real_test[0])
    test_labels = np.asarray(real_test[1]).astype(str)
    keep = np.isin(test_labels, names)
    test_x, test_labels = test_x[keep], test_labels[keep]
    baseline = None
    if real_train is not None and len(set(names)) > 1:
        train_labels = np.asarray(real_train[1]).astype(str)
        use = np.isin(train_labels, names)
        model = fit_classifier(model_space(module, real_train[0])[use], train_labels[use], classifier)
        baseline = classifier_scores(model, test_x, test_labels)
    rows = []
    for seed in seeds:
        counts, table = synthesize(module, classes, n_per_class, options, seed)
        synth_x = model_space(module, counts)
        row: dict = {"seed": seed, "n_synthetic": len(table), "n_real": len(test_x)}
        row |= {f"mmd_{k}": v for k, v in mmd_test(synth_x, test_x, permutations=permutations, seed=seed).items()}
        row["c2st_auroc"] = c2st_auroc(test_x, synth_x, seed=seed)
        if len(set(names)) > 1:
            model = fit_classifier(synth_x, table["class"].to_numpy(), classifier, seed)
            row |= {f"tstr_{k}": v for k, v in classifier_scores(model, test_x, test_labels).items()}
            if baseline:
                row |= {f"trtr_{k}": v for k, v in baseline.items()}
        rows.append(row)
    return pd.DataFrame(rows)
