"""Which regulators explain one DE profile: the head fitted on the frozen trunk of a regulator
model, every feature's mean DeepLIFT attribution with its permutation q-value, how much of the
profile the regulators predict on held-out chromosomes, and in-silico knockouts.

`explain_profile` works on any per-gene profile (a sample's log2 fold changes, a cohort's DESeq2
log fold changes) and returns plain tables; `nofone.regulators.explain_step` runs it over a
`nofone de` output and writes them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from nofone.errors import InputError
from nofone.regulators.attribution import check_attributions, unit_attribution_means
from nofone.regulators.features import REGULATOR, STRUCTURE
from nofone.regulators.head import HeadInputs, ProfileFit, fit_profile
from nofone.regulators.knockout import ProfileModel, knockouts
from nofone.regulators.model import RegulatorModel

#: A profile must share at least this many genes with the model.
MIN_GENES = 100


@dataclass
class ExplainOptions:
    q_threshold: float = 0.05
    knockout_top: int = 10  # regulators with a per-gene knockout table, best first
    use_trunk: bool = True  # False: a features-only linear head ("a small model from scratch")
    stability: bool = False  # refit on every seed's trunk and compare the rankings
    checks: bool = True  # completeness and Integrated Gradients agreement per profile
    seed: int = 0


@dataclass
class ExplainContext:
    """A loaded model and what is cached between profiles (per gene set and seed)."""

    model: RegulatorModel
    options: ExplainOptions = field(default_factory=ExplainOptions)
    _cache: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.row_of = {g: i for i, g in enumerate(self.model.genes["gene_id"])}
        self.reference = self.model.reference()
        self.chromosomes = self.model.genes["chromosome"].to_numpy(dtype=object)

    def inputs(self, rows: np.ndarray, seed_index: int | None = None) -> tuple[HeadInputs, torch.nn.Module]:
        key = (hashlib.sha1(rows.tobytes()).hexdigest(), seed_index)
        if key not in self._cache:
            trunk = self.model.network(seed_index).trunk
            scaled = self.model.scaled(rows)
            if self.options.use_trunk:
                with torch.no_grad():
                    units = trunk(torch.as_tensor(scaled)).double().numpy()
                means = unit_attribution_means(trunk, scaled, self.reference)
            else:
                units, means = np.zeros((len(rows), 0)), np.zeros((0, scaled.shape[1]))
            structure = self.model.features["kind"].to_numpy() == STRUCTURE
            self._cache[key] = (HeadInputs.build(units, scaled, means, self.reference, self.chromosomes[rows],
                                                 structure), trunk)
        return self._cache[key]


def explain_profile(context: ExplainContext, genes: pd.DataFrame, y: np.ndarray, weights: np.ndarray,
                    label: str) -> dict:
    """Explain one profile (`genes`: gene_id[, gene_name]; `y`, `weights` per row).

    Returns {"regulators": table per feature, "knockouts": per-gene table of the top
    regulators, "summary": one row of figures}. Genes the model does not know are dropped.
    """
    model, options = context.model, context.options
    rows_all = np.array([context.row_of.get(g, -1) for g in genes["gene_id"].astype(str)])
    known = rows_all >= 0
    if known.sum() < MIN_GENES:
        raise InputError(f"{label}: only {int(known.sum())} of its {len(genes)} genes are in the regulator model "
                         f"(at least {MIN_GENES} needed; profile genes look like {genes['gene_id'].head(3).tolist()}, "
                         f"model genes like {model.genes['gene_id'].head(3).tolist()})")
    rows, y, weights = rows_all[known], np.asarray(y, float)[known], np.asarray(weights, float)[known]
    order = np.argsort(rows, kind="stable")  # one cache entry per gene set, whatever the row order
    rows, y, weights = rows[order], y[order], weights[order]
    inputs, trunk = context.inputs(rows)
    fit = fit_profile(inputs, y, weights, options.seed)
    plain = fit_profile(inputs.features_only(), y, weights, options.seed) if options.use_trunk else fit
    profile_model = ProfileModel(trunk if options.use_trunk else None, fit)
    summary = {"n_genes": len(rows), "penalty": fit.penalty, "heldout_spearman": fit.heldout_spearman,
               "heldout_spearman_features_only": plain.heldout_spearman, "fitted_spearman": fit.fitted_spearman}
    attribution = fit.attribution
    if options.checks:
        per_gene, check = check_attributions(profile_model, inputs.scaled, context.reference, target=0,
                                             max_genes=500, seed=options.seed)
        summary |= {"deeplift_completeness_max_abs": check.completeness_max_abs,
                    "deeplift_vs_linear_max_abs": float(np.abs(per_gene.mean(0) - attribution).max()),
                    "ig_spearman": check.ig_spearman, "prediction_range": check.prediction_range}
    table = _feature_table(model, fit)
    regulators = np.flatnonzero(table["kind"].to_numpy() == REGULATOR)
    ranked = regulators[np.argsort(fit.p_value[regulators], kind="stable")]
    gene_table = model.genes.iloc[rows].reset_index(drop=True)
    effects, per_gene_ko = knockouts(profile_model, model.raw_features[rows].astype(np.float64), model.scaler,
                                     ranked, model.feature_names, gene_table, options.knockout_top)
    table = table.merge(effects, on="feature", how="left")
    table = table.sort_values(["p_value", "feature"], kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    significant = table[(table["q_value"] < options.q_threshold) & (table["kind"] == REGULATOR)]
    summary |= {"n_significant": len(significant),
                "top_up": ",".join(significant.loc[significant["direction"] == "up", "feature"].head(3)),
                "top_down": ",".join(significant.loc[significant["direction"] == "down", "feature"].head(3))}
    if options.stability and len(model.states) > 1:
        summary["seed_stability_spearman"] = _stability(context, rows, y, weights, fit)
    return {"regulators": table, "knockouts": per_gene_ko, "summary": summary, "fit": fit}


def _feature_table(model: RegulatorModel, fit: ProfileFit) -> pd.DataFrame:
    info = model.features
    return pd.DataFrame({
        "feature": info["feature"].to_numpy(), "kind": info["kind"].to_numpy(), "source": info["source"].to_numpy(),
        "mean_attribution": fit.attribution,
        "direction": np.where(fit.attribution > 0, "up", "down"),
        "z": fit.z, "p_value": fit.p_value, "q_value": fit.q_value, "null_sd": fit.null_sd,
    })


def _stability(context: ExplainContext, rows: np.ndarray, y: np.ndarray, weights: np.ndarray,
               fit: ProfileFit) -> float:
    """Median Spearman, over the other seeds, of their regulators' z against the best seed's."""
    model = context.model
    regulators = model.features["kind"].to_numpy() == REGULATOR
    values = []
    for index in range(len(model.states)):
        if index == model.best:
            continue
        inputs, _ = context.inputs(rows, index)
        other = fit_profile(inputs, y, weights, context.options.seed)
        values.append(float(spearmanr(fit.z[regulators], other.z[regulators]).statistic))
    return float(np.median(values))
