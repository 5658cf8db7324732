"""The frontier part of `nofone evaluate`: the run's model under every null it has, on the
held-out normals and their spike-ins (`nofone.evaluate.frontier.frontier`), and the tumour
positive control (half the cases as a DESeq2 cohort, the other half scored against it).
`options` is the run's `EvaluateOptions` (lfc_threshold, deseq2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nofone.evaluate.frontier import FRONTIER_QS, de_matrices, frontier, positive_control
from nofone.io.artifact import read_artifact
from nofone.io.dataset import Dataset
from nofone.stats.nulls import available_nulls, resolve_null

TUMOUR_CONTROL_FILE = "tumour_control.tsv"
#: The tumour control's cohort: DE at padj < CONTROL_Q; its strongest genes beyond |LFC| 3.
CONTROL_Q, CONTROL_STRONG_LFC = 0.01, 3.0
MIN_CONTROL_CASES = 6


def run_frontier(model_dir: Path, normals: pd.DataFrame, spiked: pd.DataFrame | None, truth: pd.DataFrame | None,
                 options: Any) -> pd.DataFrame:
    """The run's model under each of its nulls (`nofone.evaluate.frontier`), its default marked."""
    artifact = read_artifact(model_dir)
    info = artifact.config
    default = resolve_null("auto", "equal-tail-midp", info, model_dir).name
    gene_ids = artifact.genes["gene_id"].tolist()
    return frontier(available_nulls(info, model_dir), normals, gene_ids, spiked, truth, FRONTIER_QS,
                    options.lfc_threshold, default)


def tumour_control(model_dir: Path, data: Dataset, de: pd.DataFrame, cases: list[str], train_ids: list[str],
                   options: Any, rng: np.random.Generator) -> pd.DataFrame | None:
    """The positive control of the frontier: half the cases against the training normals by
    DESeq2 (the cohort), the other half scored by every null against it (`positive_control`:
    precision of the calls' directions, recall of the cohort's |LFC| > 3 genes). Meaningful when
    the cases are one kind of sample; needs 6 cases or more and DESeq2."""
    if len(cases) < MIN_CONTROL_CASES or not options.deseq2:
        return None
    from nofone.baselines.deseq2 import group_contrast

    order = rng.permutation(sorted(cases)).tolist()
    cohort, scored = sorted(order[: len(order) // 2]), sorted(order[len(order) // 2:])
    chunk = data.read([s for s in data.sample_ids if s in set(cohort) | set(train_ids)])
    counts = pd.DataFrame(chunk.counts, index=chunk.sample_ids, columns=data.gene_ids)
    metadata = pd.DataFrame({"group": ["case" if s in set(cohort) else "normal" for s in chunk.sample_ids]},
                            index=chunk.sample_ids)
    result = group_contrast(counts, metadata, "~ group", ("group", "case", "normal"))
    artifact = read_artifact(model_dir)
    gene_ids = artifact.genes["gene_id"].tolist()
    lfc = result["log2FoldChange"].reindex(gene_ids).to_numpy()
    padj = result["padj"].reindex(gene_ids).to_numpy()
    with np.errstate(invalid="ignore"):
        called = (padj < CONTROL_Q) & (np.abs(lfc) > options.lfc_threshold)
        sign = np.where(called, np.sign(lfc), 0.0)
        strong = (padj < CONTROL_Q) & (np.abs(lfc) > CONTROL_STRONG_LFC)
    _, tumours = de_matrices(de[de["sample_id"].isin(set(scored))], gene_ids)
    default = resolve_null("auto", "equal-tail-midp", artifact.config, model_dir).name
    table = positive_control(available_nulls(artifact.config, model_dir), tumours, sign, strong, FRONTIER_QS,
                             options.lfc_threshold, default)
    return table.assign(n_cohort=len(cohort), n_scored=len(scored), n_strong=int(strong.sum()))
