"""DeepLIFT attributions (captum) against a no-binding reference, and their checks.

The paper used DeepExplainer (DeepLIFT, rescale rule) against a reference without any binding
site and with the median gene length; here: every regulator feature at 0 and every structure
feature at its training median (`RegulatorModel.reference`).

Two checks travel with every use: completeness (DeepLIFT's attributions of a gene add up to its
prediction minus the reference's) and agreement with Integrated Gradients (a different path
method that satisfies the same axiom; on a ReLU network the two differ per gene but should rank
the regulators alike).

Because DeepLIFT's multipliers through a linear layer are its weights, the attribution to any
linear read-out of the trunk is that read-out applied to the attributions to the trunk's units.
`unit_attribution_means` computes, once per gene set, the mean attribution of every feature to
every trunk unit; the mean attribution of a fitted head is then a matrix product, which is what
makes the permutation null cheap (`nofone.regulators.head`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from nofone.progress import progress

BATCH = 8192
#: captum's rescale rule takes the gradient where the input barely moves from the reference.
RESCALE_EPS = 1e-10


def _captum():
    from captum.attr import DeepLift, IntegratedGradients

    return DeepLift, IntegratedGradients


def _batches(n: int, size: int = BATCH):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def deeplift(model: nn.Module, x: np.ndarray, reference: np.ndarray, target: int | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Per gene and feature attributions [n, F] and each gene's completeness error [n]."""
    DeepLift, _ = _captum()
    explainer = DeepLift(model.eval())
    base = torch.as_tensor(reference, dtype=torch.float32)[None, :]
    parts, deltas = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum announces the hooks it sets on every call
        for rows in _batches(len(x)):
            inputs = torch.as_tensor(x[rows], dtype=torch.float32)
            attributions, delta = explainer.attribute(inputs, baselines=base.expand_as(inputs), target=target,
                                                      return_convergence_delta=True)
            parts.append(attributions.detach().double().numpy())
            deltas.append(delta.detach().double().numpy())
    return np.concatenate(parts), np.concatenate(deltas)


def integrated_gradients(model: nn.Module, x: np.ndarray, reference: np.ndarray, target: int | None = None,
                         steps: int = 32) -> np.ndarray:
    _, IntegratedGradients = _captum()
    explainer = IntegratedGradients(model.eval())
    base = torch.as_tensor(reference, dtype=torch.float32)[None, :]
    parts = []
    for rows in _batches(len(x), max(1, BATCH // steps)):
        inputs = torch.as_tensor(x[rows], dtype=torch.float32)
        parts.append(explainer.attribute(inputs, baselines=base.expand_as(inputs), target=target,
                                         n_steps=steps).detach().double().numpy())
    return np.concatenate(parts)


def unit_attribution_means(trunk: nn.Sequential, x: np.ndarray, reference: np.ndarray, chunk: int = 512
                           ) -> np.ndarray:
    """[units, F]: the mean over the genes `x` of DeepLIFT's attribution (rescale rule) of each
    feature to each output unit of `trunk` (blocks of Linear, ReLU, BatchNorm in eval mode).

    captum needs one backward pass per unit (160 passes over all genes: minutes). Here the
    attribution of feature j of gene g to the units is its deviation from the reference times
    column j of the gene's multiplier Jacobian, d_L * W_L (... d_2 * W_2 (d_1 * W_1[:, j])), with
    d_l block l's ReLU rescale multipliers times its batch-norm scale. Binding features equal the
    reference for most genes (no binding), so only the (gene, feature) pairs that deviate are
    pushed through, all of a chunk in one matrix product per layer. Tests check the result
    against captum's DeepLift unit by unit.
    """
    blocks = _blocks(trunk)
    total = torch.zeros(x.shape[1], blocks[-1][0].out_features, dtype=torch.float64)
    ref = torch.as_tensor(reference, dtype=torch.float32)[None, :]
    with torch.no_grad(), progress("attributions per trunk unit", len(x)) as advance:
        for rows in _batches(len(x), chunk):
            inputs = torch.as_tensor(x[rows], dtype=torch.float32)
            h, h_ref, multipliers = inputs, ref, []
            for linear, norm in blocks:
                z, z_ref = linear(h), linear(h_ref)
                a, a_ref = torch.relu(z), torch.relu(z_ref)
                step = z - z_ref
                rescale = torch.where(step.abs() < RESCALE_EPS, (z > 0).float(), (a - a_ref) / step)
                multipliers.append(rescale * (norm.weight / torch.sqrt(norm.running_var + norm.eps))[None, :])
                h, h_ref = norm(a), norm(a_ref)
            deviation = inputs - ref
            feature, gene = torch.nonzero(deviation.T, as_tuple=True)  # sorted by feature
            v = multipliers[0][gene] * blocks[0][0].weight.T[feature]
            for (linear, _), d in zip(blocks[1:], multipliers[1:]):
                v = d[gene] * (v @ linear.weight.T)
            lengths = torch.bincount(feature, minlength=len(total))
            total += torch.segment_reduce(v * deviation[gene, feature][:, None], "sum", lengths=lengths,
                                          axis=0).double()
            advance(len(inputs))
    return (total.T / len(x)).numpy()


def _blocks(trunk: nn.Sequential) -> list[tuple[nn.Linear, nn.BatchNorm1d]]:
    layers = list(trunk)
    blocks = []
    for i in range(0, len(layers), 3):
        linear, relu, norm = layers[i:i + 3]
        if not (isinstance(linear, nn.Linear) and isinstance(relu, nn.ReLU) and isinstance(norm, nn.BatchNorm1d)):
            raise TypeError("the trunk must be blocks of Linear, ReLU, BatchNorm1d")
        blocks.append((linear, norm))
    if trunk.training:
        raise ValueError("the trunk must be in eval mode (batch norm as an affine map)")
    return blocks


@dataclass
class AttributionCheck:
    """How far DeepLIFT is from completeness, and how well it agrees with Integrated Gradients."""

    completeness_max_abs: float  # max over genes |sum of attributions - (f(x) - f(reference))|
    prediction_range: float  # max - min prediction, the scale of the error above
    ig_spearman: float  # Spearman over features of the mean attributions, DeepLIFT vs IG
    ig_gene_pearson: float  # Pearson over genes x features of the per-gene attributions

    def to_dict(self) -> dict:
        return {k: round(float(v), 6) for k, v in self.__dict__.items()}


def check_attributions(model: nn.Module, x: np.ndarray, reference: np.ndarray, target: int | None = None,
                       max_genes: int = 2000, seed: int = 0) -> tuple[np.ndarray, AttributionCheck]:
    """DeepLIFT on all genes (returned) and the checks, IG on at most `max_genes` genes."""
    attributions, delta = deeplift(model, x, reference, target)
    rows = np.arange(len(x))
    if len(x) > max_genes:
        rows = np.sort(np.random.default_rng(seed).choice(len(x), max_genes, replace=False))
    ig = integrated_gradients(model, x[rows], reference, target)
    with torch.no_grad():
        out = model(torch.as_tensor(x, dtype=torch.float32))
        out = out[:, target] if target is not None and out.ndim > 1 else out.reshape(len(x))
    check = AttributionCheck(
        completeness_max_abs=float(np.abs(delta).max()),
        prediction_range=float(out.max() - out.min()),
        ig_spearman=float(spearmanr(attributions[rows].mean(0), ig.mean(0)).statistic),
        ig_gene_pearson=float(np.corrcoef(attributions[rows].ravel(), ig.ravel())[0, 1]),
    )
    return attributions, check
