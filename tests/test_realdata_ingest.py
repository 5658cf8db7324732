"""Real public datasets from ../shared/data: every one ingests; filterByExpr agrees with R.

Skipped with a reason when ../shared/data is absent (a user's fresh clone).
"""

from __future__ import annotations

import csv
import gzip

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, requires_shared_data, write

from nofone.io.dataset import Dataset
from nofone.io.ingest import IngestOptions, ingest
from nofone.stats.filter_by_expr import filter_by_expr

pytestmark = [pytest.mark.realdata, requires_shared_data]
ANNOTATION = SHARED_DATA / "annotation" / "ensembl_grch38_gene_symbol_biotype_unique.tsv.gz"


def airway_sheet(tmp):
    meta = pd.read_csv(SHARED_DATA / "airway" / "airway_metadata.csv")
    rows = [f"{r.id},{SHARED_DATA / 'airway' / 'airway_rawcounts.csv'},{r.dex},{r.celltype}"
            for r in meta.itertuples()]
    return write(tmp / "airway.csv", "sample,counts,dex,celltype\n" + "\n".join(rows) + "\n")


def gse60450_sheet(tmp):
    matrix = SHARED_DATA / "gse60450" / "GSE60450_LactationGenewiseCounts.txt"
    header = matrix.open().readline().rstrip("\n").split("\t")
    info = csv.DictReader((SHARED_DATA / "gse60450" / "SampleInfo_Corrected.txt").open(), delimiter="\t")
    rows = []
    for r in info:
        sample = r["SampleName"].replace(".", "-")
        column = next(h for h in header if h.startswith(sample + "_"))
        rows.append(f"{sample},{matrix},{column},{r['CellType']},{r['Status']}")
    return write(tmp / "gse.csv", "sample,counts,column,CellType,Status\n" + "\n".join(rows) + "\n")


def atlas_sheet(tmp):
    rows = []
    for path in sorted((SHARED_DATA / "normal_atlas").glob("*-rsem-count-*.txt.gz")):
        tissue, _, _, source = path.name.split(".")[0].split("-", 3)
        condition = "tumour" if source == "tcga-t" else "normal"
        with gzip.open(path, "rt") as handle:
            samples = handle.readline().rstrip("\n").split("\t")[2:]
        rows += [f"{s},{path},{condition},{tissue},{source}" for s in samples]
    return write(tmp / "atlas.csv", "sample,counts,condition,tissue,source\n" + "\n".join(rows) + "\n")


@pytest.mark.parametrize(("name", "make_sheet", "group", "reference"), [
    ("airway", airway_sheet, ["dex"], "airway_filterByExpr_R.tsv.gz"),
    ("gse60450", gse60450_sheet, ["CellType", "Status"], "gse60450_filterByExpr_R.tsv.gz"),
])
def test_filter_by_expr_parity_with_r(tmp_path, name, make_sheet, group, reference):
    ingest(make_sheet(tmp_path), tmp_path / "data")
    data = Dataset(tmp_path / "data")
    labels = data.samples[group].astype(str).agg(":".join, axis=1).to_numpy()
    ours = pd.Series(filter_by_expr(data.read().counts, labels), index=data.gene_ids)
    r_mask = pd.read_csv(SHARED_DATA / "reference" / reference, sep="\t", dtype={"gene_id": str})
    r_mask = r_mask.set_index("gene_id")["keep"].astype(bool)
    assert set(r_mask.index) == set(ours.index)
    agreement = float((ours[r_mask.index] == r_mask).mean())
    print(f"{name}: filterByExpr agreement with R {agreement:.5f}, kept {ours.sum()} (R {r_mask.sum()})")
    assert agreement >= 0.999


def test_gse60450_raw_counts_exact(tmp_path):
    ingest(gse60450_sheet(tmp_path), tmp_path / "data")
    data = Dataset(tmp_path / "data")
    raw = pd.read_csv(SHARED_DATA / "gse60450" / "GSE60450_LactationGenewiseCounts.txt", sep="\t")
    assert data.gene_ids == raw["EntrezGeneID"].astype(str).tolist()
    np.testing.assert_array_equal(data.read().counts.T, raw.iloc[:, 2:].to_numpy())


@pytest.mark.slow
def test_whole_normal_atlas_into_one_cohort(tmp_path):
    report = ingest(atlas_sheet(tmp_path), tmp_path / "atlas",
                    IngestOptions(round_counts=True, annotation=ANNOTATION))
    data = Dataset(tmp_path / "atlas")
    assert len(report["files"]) == 23
    assert data.n_samples == 470
    assert (data.samples["condition"] == "tumour").sum() == 87
    assert data.n_genes > 17_000 and data.genes["gene_id"].str.startswith("ENSG").all()
    assert (data.genes["biotype"] == "protein_coding").mean() > 0.98
    assert all(f["id_type"] == "symbol" and f["dropped"]["unmapped"] > 0 for f in report["files"])
    assert all(s["values_rounded"] > 0 for s in report["samples"])
    bladder = pd.read_csv(SHARED_DATA / "normal_atlas" / "bladder-rsem-count-gtex.txt.gz", sep="\t")
    column = bladder.columns[2]
    row = bladder.set_index("Hugo_Symbol").loc["GAPDH", column]
    chunk = data.read([column])
    gapdh = data.gene_ids.index("ENSG00000111640")
    assert chunk.counts[0, gapdh] == round(row)


def test_bulkdgd_samples_by_genes_csv_with_its_gene_list(tmp_path):
    path = SHARED_DATA / "bulkdgd" / "gtex_5_samples_v1.csv"
    labels = pd.read_csv(path, usecols=[0]).iloc[:, 0].astype(str).tolist()
    rows = [f"gtex{label},{path},{label}" for label in labels]
    sheet = write(tmp_path / "s.csv", "sample,counts,column\n" + "\n".join(rows) + "\n")
    report = ingest(sheet, tmp_path / "d", IngestOptions(genes=SHARED_DATA / "bulkdgd" / "genes_v1.txt"))
    data = Dataset(tmp_path / "d")
    assert data.n_genes == 16_883 and report["genes"]["n_missing_from_input"] == 0
    assert report["files"][0]["format"] == "samples-by-genes"
    raw = pd.read_csv(path, index_col=0)
    np.testing.assert_array_equal(data.read().counts, raw.drop(columns="tissue").to_numpy())


def test_airway_against_the_bulkdgd_gene_list_records_missing_genes(tmp_path):
    report = ingest(airway_sheet(tmp_path), tmp_path / "d",
                    IngestOptions(genes=SHARED_DATA / "bulkdgd" / "genes_v1.txt"))
    data = Dataset(tmp_path / "d")
    assert data.n_genes == 16_883
    n_missing = report["genes"]["n_missing_from_input"]
    chunk = data.read()
    assert (~chunk.measured_mask()).sum(axis=1).tolist() == [n_missing] * 8
