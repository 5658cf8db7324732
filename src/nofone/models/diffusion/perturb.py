"""`perturb`: GEMDiff's tumour-to-normal shift per gene, its rule, and a calibrated alternative.

Each tumour is bridged to its closest normal (`bridge.py`); per gene, d_g = mean over tumours of
|y - y_hat| in the model's space (GEMDiff's score), with the mean log2 fold change of the
tumour over its bridged normal, log2((x + 1) / (mu + 1)), beside it.

- GEMDiff's rule, within each gene set: perturbed when d_g > mean(d) + k SD(d) over the set
  (k = 1 in the paper). It ranks genes within a set; it says nothing about whether a set's top
  genes move more than the same genes of normal samples do.
- The calibrated alternative: the bridge applied to held-out normals at training gives every
  gene's null distribution of |y - y_hat| (`module.null_deviation`); a one-sided Mann-Whitney
  test per gene asks whether the tumours' deviations are larger, Benjamini-Hochberg over the
  scored genes gives q-values, and a gene is perturbed when q < alpha.
- Core genes across sets: GEMDiff's (d_g > mean + core_k SD over every scored gene; 2 in the
  paper) and the calibrated ones (q < alpha), with the sets each gene belongs to.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy.stats import mannwhitneyu

from nofone.enrichment.gene_sets import match_gene_sets
from nofone.errors import InputError
from nofone.models.diffusion.bridge import BridgeOptions, bridge_points, decode
from nofone.models.diffusion.module import DiffusionModule
from nofone.stats.multiple_testing import bh_adjust

log = logging.getLogger(__name__)
ALL_GENES = "ALL_GENES"


@dataclass(frozen=True)
class PerturbOptions:
    k: float = 1.0  # GEMDiff's rule within a set
    core_k: float = 2.0  # GEMDiff's core genes over every scored gene
    alpha: float = 0.05  # the calibrated rule: q < alpha
    min_set_size: int = 3  # sets with fewer model genes are skipped
    bridge: BridgeOptions = field(default_factory=BridgeOptions)


@torch.no_grad()
def gene_shifts(module: DiffusionModule, counts: np.ndarray, measured: np.ndarray | None = None,
                options: BridgeOptions | None = None, chunk_size: int = 256) -> dict[str, np.ndarray]:
    """Per-sample shifts of tumours to their closest normals: `deviation` |y - y_hat| and
    `log2_fold_change` [N, G] (NaN where not measured), bridged `chunk_size` samples at a time."""
    device = module.log_r.device
    counts = np.asarray(counts)
    out = {"deviation": np.empty(counts.shape), "log2_fold_change": np.empty(counts.shape)}
    for start in range(0, counts.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        x = torch.as_tensor(counts[rows], dtype=torch.float64, device=device)
        m = None if measured is None else torch.as_tensor(np.asarray(measured)[rows], dtype=torch.bool,
                                                          device=device)
        sf = module.space.size_factors(x, m)
        y = module.space(x, sf, m)
        point, _ = bridge_points(module, y, options)
        mean = decode(module, point)[0] * sf.unsqueeze(-1)
        deviation = (y - point).abs().double()
        lfc = torch.log2((x + 1) / (mean + 1))
        if m is not None:
            deviation = deviation.masked_fill(~m, float("nan"))
            lfc = lfc.masked_fill(~m, float("nan"))
        out["deviation"][rows] = deviation.cpu().numpy()
        out["log2_fold_change"][rows] = lfc.cpu().numpy()
    return out


def calibrated_p_values(deviation: np.ndarray, null: np.ndarray) -> np.ndarray:
    """[G] one-sided Mann-Whitney p-values: are the tumours' deviations [N, G] larger than the
    held-out normals' [n0, G]? NaN for genes without values on either side."""
    out = np.full(deviation.shape[1], np.nan)
    if null.shape[0] == 0:
        return out
    ok = np.isfinite(deviation).any(0) & (null.shape[0] > 0)
    if ok.any():
        out[ok] = mannwhitneyu(deviation[:, ok], null[:, ok], alternative="greater", axis=0,
                               nan_policy="omit").pvalue
    return out


def resolve_sets(gene_sets: dict[str, Sequence[str]] | None, gene_ids: Sequence[str], gene_names: Sequence[str],
                 min_size: int) -> dict[str, np.ndarray]:
    """{set: model gene indices} (`match_gene_sets`); None: one set of every gene."""
    if gene_sets is None:
        return {ALL_GENES: np.arange(len(gene_ids))}
    return match_gene_sets(gene_sets, gene_ids, gene_names, min_size)


def rule_flags(d: np.ndarray, k: float) -> np.ndarray:
    """GEMDiff's rule: d > mean(d) + k SD(d) (population SD, as numpy's default)."""
    return d > np.nanmean(d) + k * np.nanstd(d)


def perturb(module: DiffusionModule, counts: np.ndarray, measured: np.ndarray | None, gene_ids: Sequence[str],
            gene_names: Sequence[str], gene_sets: dict[str, Sequence[str]] | None = None,
            options: PerturbOptions | None = None) -> dict[str, pd.DataFrame]:
    """Tables `genes` (one row per set x gene), `sets` (one row per set) and `core` (one row
    per scored gene) for the tumours `counts` [N, G]."""
    options = options or PerturbOptions()
    if np.asarray(counts).shape[0] == 0:
        raise InputError("perturb needs at least one tumour sample")
    sets = resolve_sets(gene_sets, gene_ids, gene_names, options.min_set_size)
    shifts = gene_shifts(module, counts, measured, options.bridge)
    d = np.nanmean(shifts["deviation"], 0)
    lfc = np.nanmean(shifts["log2_fold_change"], 0)
    abs_lfc = np.nanmean(np.abs(shifts["log2_fold_change"]), 0)
    null = module.null_deviation.cpu().numpy().astype(np.float64)
    if null.shape[0] == 0:
        log.warning("the model has no held-out bridge deviations: no calibrated p-values")
    scored = np.unique(np.concatenate(list(sets.values())))
    p = calibrated_p_values(shifts["deviation"][:, scored], null[:, scored] if null.shape[0] else null)
    p_all = np.full(len(gene_ids), np.nan)
    q_all = np.full(len(gene_ids), np.nan)
    p_all[scored] = p
    finite = np.isfinite(p)
    if finite.any():
        q_all[scored[finite]] = bh_adjust(p[finite])
    ids, names = np.asarray(gene_ids, dtype=object), np.asarray(gene_names, dtype=object)
    rows, summary = [], []
    for name, index in sets.items():
        flags = rule_flags(d[index], options.k)
        calibrated = q_all[index] < options.alpha
        rows.append(pd.DataFrame({
            "gene_set": name, "gene_id": ids[index], "gene_name": names[index], "d_model": d[index],
            "mean_log2_fold_change": lfc[index], "mean_abs_log2_fold_change": abs_lfc[index],
            "rule_perturbed": flags, "p_value": p_all[index], "q_value": q_all[index],
            "calibrated_perturbed": calibrated}))
        n_members = len(gene_sets[name]) if gene_sets is not None else len(index)
        summary.append({"gene_set": name, "n_genes": n_members, "n_scored": len(index),
                        "mean_d": float(np.nanmean(d[index])), "sd_d": float(np.nanstd(d[index])),
                        "n_rule_perturbed": int(flags.sum()), "n_calibrated_perturbed": int(calibrated.sum())})
    genes = pd.concat(rows, ignore_index=True)
    membership = genes.groupby("gene_id", sort=False)["gene_set"].agg(lambda s: ",".join(s))
    core = pd.DataFrame({"gene_id": ids[scored], "gene_name": names[scored], "d_model": d[scored],
                         "mean_log2_fold_change": lfc[scored], "p_value": p_all[scored], "q_value": q_all[scored]})
    core["n_sets"] = core["gene_id"].map(genes["gene_id"].value_counts()).astype(int)
    core["gene_sets"] = core["gene_id"].map(membership)
    core["rule_core"] = rule_flags(core["d_model"].to_numpy(), options.core_k)
    core["calibrated_core"] = core["q_value"].to_numpy() < options.alpha
    core = core.sort_values("d_model", ascending=False, kind="stable").reset_index(drop=True)
    return {"genes": genes, "sets": pd.DataFrame(summary), "core": core}
