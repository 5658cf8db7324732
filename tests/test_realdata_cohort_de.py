"""`nofone cohort-de` on GSE60450 (mouse mammary gland), lactate vs virgin within cell type,
against Bioconductor DESeq2 1.38.3 (`~ CellType + Status`, ../shared/data/reference).

The seed study (an NB-VAE with a 2-d latent and fixed dispersion, trained with the wrong sample
labels) reported a Pearson correlation of about 0.66 with DESeq2's log2 fold changes. Labels
here are SampleInfo_Corrected.txt's. Skipped with a reason when ../shared/data is absent; takes
a few minutes (the NB-VAE, pydeseq2 on 27,179 genes, GSEA preranked of two rankings).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHARED_DATA, requires_shared_data
from test_realdata_ingest import gse60450_sheet

from nofone.evaluate.agreement import compare_with_deseq2
from nofone.io.ingest import ingest
from nofone.steps.cohort_de import RESULTS_FILE, CohortDEOptions, cohort_de

pytestmark = [pytest.mark.realdata, pytest.mark.slow, requires_shared_data]
ANNOTATION = SHARED_DATA / "annotation"
R_TABLE = SHARED_DATA / "reference" / "gse60450_lactate_vs_virgin_deseq2_R.tsv.gz"


@pytest.fixture(scope="module")
def gse60450(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a 12-sample model: one thread is fastest (see tests/test_nbvae.py)
    root = tmp_path_factory.mktemp("gse60450")
    ingest(gse60450_sheet(root), root / "data")
    options = CohortDEOptions(group="Status", level="lactate", reference="virgin", covariates=["CellType"],
                              gene_sets=ANNOTATION / "h.all.v7.0.symbols.gmt",
                              symbol_maps=[ANNOTATION / "annotables_grcm38.tsv.gz"], uppercase_symbols=True,
                              device="cpu")
    report = cohort_de(root / "data", root / "out", options)
    torch.set_num_threads(before)
    return root / "out", report


def test_generative_lfc_agrees_with_r_deseq2(gse60450):
    out, report = gse60450
    table = pd.read_csv(out / RESULTS_FILE, sep="\t", dtype={"gene_id": str})
    r = pd.read_csv(R_TABLE, sep="\t", dtype={"gene_id": str}).set_index("gene_id")
    for column in ("log2FoldChange", "pvalue", "padj"):
        table[f"deseq2_{column}"] = r[column].reindex(table["gene_id"]).to_numpy()
    ours = compare_with_deseq2(table)
    pydeseq2 = report["deseq2"]
    print("GSE60450 lactate vs virgin (~ CellType + Status), NB-VAE vs R DESeq2:",
          json.dumps({k: ours[k] for k in ("n_both_finite", "pearson", "spearman", "pearson_padj_not_na",
                                           "top_overlap", "deseq2_na")}))
    print("vs pydeseq2 (in the report):", json.dumps({k: pydeseq2[k] for k in ("pearson", "spearman", "top_overlap")}))
    assert report["genes"]["n_modelled"] == 18418  # >= 10 counts in total, as in the seed study
    assert ours["pearson"] >= 0.8 and ours["spearman"] >= 0.8  # the seed study: ~0.66
    assert pydeseq2["pearson"] >= 0.8
    assert ours["top_overlap"]["500"]["by_abs_lfc"] >= 0.4
    assert ours["sign_agreement_deseq2_significant"] >= 0.97
    # every gene R leaves without an adjusted p-value gets a finite estimate and interval here
    na = ours["deseq2_na"]
    assert na["padj_na"] > 500 and na["padj_na_with_finite_estimate_and_interval"] == na["padj_na"]
    assert np.isfinite(table[["log2_fold_change", "ci_low", "ci_high"]].to_numpy()).all()


def test_latent_and_enrichment(gse60450):
    out, report = gse60450
    latent = pd.read_csv(out / "latent.tsv", sep="\t")
    assert len(latent) == 12 and (out / "latent.png").is_file()
    # the latent separates the two cell types without seeing a label
    basal = latent.loc[latent["CellType"] == "basal", ["plot_x", "plot_y"]].to_numpy()
    luminal = latent.loc[latent["CellType"] == "luminal", ["plot_x", "plot_y"]].to_numpy()
    gap = np.linalg.norm(basal.mean(0) - luminal.mean(0))
    spread = max(np.linalg.norm(basal - basal.mean(0), axis=1).max(), np.linalg.norm(luminal - luminal.mean(0),
                                                                                        axis=1).max())
    assert gap > spread
    enrichment = pd.read_csv(out / "enrichment_prerank.tsv", sep="\t")
    assert set(enrichment["ranking"]) == {"nbvae", "deseq2"}
    assert report["enrichment"]["genes_with_symbol"] > 15_000
    for ranking, rows in enrichment.groupby("ranking"):
        top = rows.nsmallest(5, "fdr_q_value")
        print(ranking, list(zip(top["term"], top["nes"].round(2), top["fdr_q_value"].round(4))))
        assert (rows["fdr_q_value"] < 0.05).any()


def test_report(gse60450):
    """The GSE60450 report (kept in test-artifacts/gse60450_report.html): the latent plane, the
    agreement with DESeq2 and the enrichment of both rankings, from `nofone report --cohort-de`."""
    import re
    import shutil

    from conftest import REPO

    from nofone.report.build import report

    out, cohort = gse60450
    summary = report(None, out.parent / "report", cohort_de=out)
    html = (out.parent / "report" / "report.html").read_text(encoding="utf-8")
    section = re.search(r'<section id="cohort">(.*?)</section>', html, re.S).group(1)
    for heading in ("Latent space", "Agreement with DESeq2", "Top 25 genes", "Pathway enrichment"):
        assert f"<h3>{heading}" in section, heading
    assert f"Pearson r = {cohort['deseq2']['pearson']:.3f}" in section
    assert summary["cohort"]["samples_per_level"] == {"virgin": 4, "pregnant": 4, "lactate": 4}
    assert summary["cohort"]["latent"]["coloured_by"] == ["Status", "CellType"]  # the six groups
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copyfile(out.parent / "report" / "report.html", artifacts / "gse60450_report.html")
