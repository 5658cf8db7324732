"""How far a generative log2 fold change agrees with DESeq2's, on one table of genes.

One definition, used where `nofone cohort-de` writes its report and where `nofone report`
recomputes a figure a report JSON lacks (torch-free, so the report need not import the model).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Sizes of the top-gene lists whose overlap is reported.
TOP_K = (100, 500)


def compare_with_deseq2(table: pd.DataFrame, alpha: float = 0.05, lfc_column: str = "deseq2_log2FoldChange",
                        p_column: str = "deseq2_pvalue", padj_column: str = "deseq2_padj") -> dict:
    """Agreement of `log2_fold_change` with DESeq2's: correlations (all genes, genes with an
    adjusted p-value), sign agreement on DESeq2's calls, overlap of the top genes by |LFC| and by
    significance (|LFC| over its replicate standard error, or the posterior sd, against DESeq2's
    p-value), and what happens to the genes DESeq2 leaves NA. Missing columns count as NA."""
    from scipy import stats

    def column(name: str) -> np.ndarray:
        return table[name].to_numpy(dtype=float) if name in table else np.full(len(table), np.nan)

    ours, theirs = column("log2_fold_change"), column(lfc_column)
    padj, pvalue = column(padj_column), column(p_column)
    both = np.isfinite(ours) & np.isfinite(theirs)
    out: dict = {"n_genes": len(table), "n_both_finite": int(both.sum())}
    if both.sum() >= 3:
        out["pearson"] = float(stats.pearsonr(ours[both], theirs[both])[0])
        out["spearman"] = float(stats.spearmanr(ours[both], theirs[both])[0])
    tested = np.isfinite(padj) & both
    if tested.sum() >= 3:
        out["pearson_padj_not_na"] = float(stats.pearsonr(ours[tested], theirs[tested])[0])
        out["spearman_padj_not_na"] = float(stats.spearmanr(ours[tested], theirs[tested])[0])
    significant = np.isfinite(padj) & (padj < alpha)
    out["deseq2_significant"] = int(significant.sum())
    if significant.any():
        out["sign_agreement_deseq2_significant"] = float(np.mean(np.sign(ours[significant]) ==
                                                                 np.sign(theirs[significant])))
    se = column("se_replicates")
    se = np.where(np.isfinite(se), se, column("lfc_sd"))
    strength = np.abs(ours) / np.maximum(se, 1e-12)
    genes = table["gene_id"].astype(str).to_numpy()
    overlap = {}
    for k in TOP_K:
        if both.sum() < k:
            continue
        by_lfc = (set(genes[both][np.argsort(-np.abs(ours[both]), kind="stable")[:k]])
                  & set(genes[both][np.argsort(-np.abs(theirs[both]), kind="stable")[:k]]))
        ok = both & np.isfinite(pvalue) & np.isfinite(strength)
        by_significance = (set(genes[ok][np.argsort(-strength[ok], kind="stable")[:k]])
                           & set(genes[ok][np.argsort(pvalue[ok], kind="stable")[:k]]))
        overlap[str(k)] = {"by_abs_lfc": len(by_lfc) / k, "by_significance": len(by_significance) / k}
    out["top_overlap"] = overlap
    low, high = column("ci_low"), column("ci_high")
    interval = np.isfinite(low) & np.isfinite(high) & np.isfinite(ours)
    excludes_zero = interval & ((low > 0) | (high < 0))
    na_padj, na_lfc = ~np.isfinite(padj), ~np.isfinite(theirs)
    out["deseq2_na"] = {
        "padj_na": int(na_padj.sum()), "lfc_na": int(na_lfc.sum()),
        "padj_na_with_finite_estimate_and_interval": int((na_padj & interval).sum()),
        "padj_na_interval_excludes_zero": int((na_padj & excludes_zero).sum()),
        "lfc_na_with_finite_estimate_and_interval": int((na_lfc & interval).sum()),
    }
    if "ci_low_replicates" in table and "ci_high_replicates" in table:
        rlow, rhigh = column("ci_low_replicates"), column("ci_high_replicates")
        replicate = np.isfinite(rlow) & np.isfinite(rhigh) & ((rlow > 0) | (rhigh < 0))
        out["deseq2_na"]["padj_na_replicate_interval_excludes_zero"] = int((na_padj & replicate).sum())
        out["replicate_interval_excludes_zero"] = int(replicate.sum())
        if significant.any():
            out["deseq2_significant_replicate_interval_excludes_zero"] = float(replicate[significant].mean())
    return out
