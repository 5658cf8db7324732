"""`nofone deseq2 contrast` against Bioconductor DESeq2 1.38.3 on real data (../shared/data/reference).

The R tables come from ../shared/reference-scripts/deseq2_reference.R with R's defaults: airway
`~ celltype + dex`, treated vs control; GSE60450 `~ CellType + Status`, lactate vs virgin. The
datasets are built with `nofone ingest` from the same files the R script reads. Skipped with a
reason when ../shared/data is absent. Each comparison runs pydeseq2 on 27-64k genes: minutes.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, requires_shared_data
from test_realdata_ingest import airway_sheet, gse60450_sheet

from nofone.io.ingest import ingest
from nofone.steps.deseq2 import REPORT_FILE, RESULTS_FILE, contrast

pytestmark = [pytest.mark.realdata, pytest.mark.slow, requires_shared_data]
REFERENCE = SHARED_DATA / "reference"


@pytest.mark.parametrize(("name", "make_sheet", "design", "comparison", "reference"), [
    ("airway", airway_sheet, "~ celltype + dex", "dex,treated,control", "airway_deseq2_R.tsv.gz"),
    ("gse60450", gse60450_sheet, "~ CellType + Status", "Status,lactate,virgin",
     "gse60450_lactate_vs_virgin_deseq2_R.tsv.gz"),
])
def test_deseq2_parity_with_r(tmp_path, name, make_sheet, design, comparison, reference):
    ingest(make_sheet(tmp_path), tmp_path / "data")
    report = contrast(tmp_path / "data", tmp_path / "out", design, comparison, alpha=0.05)
    ours = pd.read_csv(tmp_path / "out" / RESULTS_FILE, sep="\t", dtype={"gene_id": str}).set_index("gene_id")
    r = pd.read_csv(REFERENCE / reference, sep="\t", dtype={"gene_id": str}).set_index("gene_id")
    assert set(ours.index) == set(r.index)
    ours = ours.loc[r.index]
    finite = np.isfinite(ours["log2FoldChange"]) & np.isfinite(r["log2FoldChange"])
    pearson = float(np.corrcoef(ours.loc[finite, "log2FoldChange"], r.loc[finite, "log2FoldChange"])[0, 1])
    called, called_r = set(ours.index[ours["padj"] < 0.05]), set(r.index[r["padj"] < 0.05])
    jaccard = len(called & called_r) / len(called | called_r)
    na_agree = {c: float((ours[c].isna() == r[c].isna()).mean()) for c in ("log2FoldChange", "pvalue", "padj")}
    print(f"{name}: log2FC Pearson {pearson:.5f} over {int(finite.sum())} genes; padj < 0.05 Jaccard {jaccard:.4f} "
          f"(ours {len(called)}, R {len(called_r)}, both {len(called & called_r)}); NA agreement {na_agree}; "
          f"pydeseq2 {report['pydeseq2_version']}, {report['seconds']} s")
    assert report["n_significant"] == len(called)
    assert na_agree["log2FoldChange"] == 1.0 and na_agree["pvalue"] >= 0.999
    assert pearson >= 0.99
    assert jaccard >= 0.9
    if name == "airway":
        sizes = json.loads((tmp_path / "out" / REPORT_FILE).read_text())["size_factors"]
        r_sizes = pd.read_csv(REFERENCE / "airway_size_factors_R.tsv", sep="\t").set_index("sample")["size_factor"]
        rel = max(abs(sizes[s] / v - 1) for s, v in r_sizes.items())
        print(f"airway: size factors max relative difference from R {rel:.2e}")
        assert set(sizes) == set(r_sizes.index) and rel < 1e-3
