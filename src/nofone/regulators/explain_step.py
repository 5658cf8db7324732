"""`nofone explain`: the regulators behind every sample of a `nofone de` output.

Outputs in `outdir` (written atomically, all or nothing):
- `regulators/<sample>.tsv`: one row per feature, best first: mean attribution, direction, z,
  p and q (BH over the sample's features), and the in-silico knockout (targets, mean predicted
  change, the targets most lowered and raised);
- `knockouts/<sample>.tsv`: per target gene, the predicted change when each of the sample's
  top regulators is knocked out;
- `summary.tsv`: one row per sample (how much of the profile the regulators explain on
  held-out chromosomes, the number of significant regulators, the top ones, the checks);
- `cohort.tsv`: one row per feature over the samples (how often significant, in which
  direction, median z and rank); `regulators.parquet`: every sample's table in one;
- `explain_report.json`: the settings, the agreement between samples and the per-sample figures.
"""

from __future__ import annotations

import time
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from nofone import __version__
from nofone.errors import InputError
from nofone.io import tsv
from nofone.io.atomic import staged_outdir, write_json_atomic
from nofone.progress import progress
from nofone.regulators.explain import ExplainContext, ExplainOptions, explain_profile
from nofone.regulators.features import REGULATOR
from nofone.regulators.model import RegulatorModel
from nofone.regulators.outputs import (
    COHORT_FILE,
    KNOCKOUTS_DIR,
    LONG_FILE,
    REGULATORS_DIR,
    REPORT_FILE,
    SUMMARY_FILE,
)
from nofone.regulators.profiles import LFC, iter_profiles, profile_weights, sample_ids


def explain(model_dir: Path, de: Path, outdir: Path, options: ExplainOptions | None = None,
            samples: list[str] | None = None) -> dict:
    """Explain every (or the named) sample of `de`; returns the report (explain_report.json)."""
    options = options or ExplainOptions()
    started = time.perf_counter()
    context = ExplainContext(RegulatorModel.load(model_dir), options)
    summaries, tables = [], []
    total = len(samples) if samples else len(sample_ids(de))
    with staged_outdir(outdir) as stage, progress("explaining samples", total) as advance:
        (stage / REGULATORS_DIR).mkdir()
        (stage / KNOCKOUTS_DIR).mkdir()
        for profile in iter_profiles(de, samples):
            weights, notes = profile_weights(profile.genes)
            result = explain_profile(context, profile.genes, profile.genes[LFC].to_numpy(), weights,
                                     f"{de}: sample {profile.sample_id}")
            tsv.write_tsv(result["regulators"], stage / REGULATORS_DIR / f"{profile.sample_id}.tsv")
            tsv.write_tsv(result["knockouts"], stage / KNOCKOUTS_DIR / f"{profile.sample_id}.tsv")
            summaries.append({"sample_id": profile.sample_id, **result["summary"],
                              "mean_weight_can_call_down": notes["mean_weight_can_call_down"],
                              "mean_weight_cannot_call_down": notes["mean_weight_cannot_call_down"]})
            tables.append(result["regulators"].assign(sample_id=profile.sample_id))
            advance()
        if not summaries:
            raise InputError(f"--de {de}: no sample to explain")
        summary = pd.DataFrame(summaries)
        long = pd.concat(tables, ignore_index=True)
        long = long[["sample_id", *[c for c in long.columns if c != "sample_id"]]]
        cohort = cohort_table(long, options.q_threshold)
        tsv.write_tsv(summary, stage / SUMMARY_FILE)
        tsv.write_tsv(cohort, stage / COHORT_FILE)
        long.to_parquet(stage / LONG_FILE, index=False)
        report = {
            "nofone_version": __version__, "regulators": str(Path(model_dir).resolve()), "de": str(Path(de).resolve()),
            "options": options.__dict__, "n_samples": len(summary),
            "agreement_between_samples": sample_agreement(long),
            "samples": summary.to_dict(orient="records"), "seconds": round(time.perf_counter() - started, 1),
        }
        write_json_atomic(stage / REPORT_FILE, report)
    return report


def cohort_table(long: pd.DataFrame, q_threshold: float) -> pd.DataFrame:
    """Per feature over the samples: how often significant and in which direction."""
    significant = long["q_value"] < q_threshold
    grouped = long.assign(up=significant & (long["direction"] == "up"),
                          down=significant & (long["direction"] == "down")).groupby("feature", sort=False)
    table = pd.DataFrame({
        "kind": grouped["kind"].first(), "source": grouped["source"].first(), "n_samples": grouped.size(),
        "n_significant_up": grouped["up"].sum(), "n_significant_down": grouped["down"].sum(),
        "median_z": grouped["z"].median(), "mean_attribution": grouped["mean_attribution"].mean(),
        "median_rank": grouped["rank"].median(),
    }).reset_index()
    table["n_significant"] = table["n_significant_up"] + table["n_significant_down"]
    return table.sort_values(["n_significant", "median_rank"], ascending=[False, True]).reset_index(drop=True)


def sample_agreement(long: pd.DataFrame, top: int = 10) -> dict:
    """How alike the samples' regulator rankings are: mean pairwise Spearman of z over the
    regulators, and the mean overlap (Jaccard) of their top-`top` regulators."""
    regulators = long[long["kind"] == REGULATOR]
    z = regulators.pivot(index="feature", columns="sample_id", values="z")
    if z.shape[1] < 2:
        return {"n_samples": int(z.shape[1])}
    top_sets = {s: set(regulators[regulators["sample_id"] == s].nsmallest(top, "rank")["feature"]) for s in z.columns}
    pairs = list(combinations(z.columns, 2))
    if len(pairs) > 5000:
        keep = np.random.default_rng(0).choice(len(pairs), 5000, replace=False)
        pairs = [pairs[i] for i in keep]
    rho = [spearmanr(z[a], z[b]).statistic for a, b in pairs]
    jaccard = [len(top_sets[a] & top_sets[b]) / len(top_sets[a] | top_sets[b]) for a, b in pairs]
    return {"n_samples": int(z.shape[1]), "mean_spearman_z": float(np.nanmean(rho)),
            f"mean_jaccard_top{top}": float(np.mean(jaccard))}
