"""`nofone filter` (edgeR filterByExpr semantics) and `nofone split`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import write

from nofone.errors import InputError
from nofone.io.dataset import Dataset
from nofone.io.ingest import ingest
from nofone.io.split import stratified_split
from nofone.stats.filter_by_expr import FilterParams, filter_by_expr, min_sample_size


def make_dataset(tmp, counts: np.ndarray, meta: dict[str, list[str]], biotypes=None):
    """Ingest a [samples, genes] matrix with sample metadata; returns the dataset folder."""
    n, g = counts.shape
    lines = ["gene_id\t" + "\t".join(f"S{i}" for i in range(n))]
    lines += [f"ENSG{j:011d}\t" + "\t".join(str(v) for v in counts[:, j]) for j in range(g)]
    write(tmp / "m.tsv", "\n".join(lines) + "\n")
    cols = list(meta)
    sheet = ["sample,counts," + ",".join(cols)]
    sheet += [f"S{i},m.tsv," + ",".join(meta[c][i] for c in cols) for i in range(n)]
    write(tmp / "sheet.csv", "\n".join(sheet) + "\n")
    annotation = None
    if biotypes is not None:
        annotation = write(tmp / "ann.tsv", "ensgene\tbiotype\n" + "".join(
            f"ENSG{j:011d}\t{b}\n" for j, b in enumerate(biotypes)))
    from nofone.io.ingest import IngestOptions

    ingest(tmp / "sheet.csv", tmp / "data", IngestOptions(annotation=annotation))
    return tmp / "data"


def test_min_sample_size_matches_edger():
    params = FilterParams()
    assert min_sample_size(None, 7, params) == 7
    assert min_sample_size(["a"] * 3 + ["b"] * 12, 15, params) == 3
    # above large.n: 10 + (30 - 10) * 0.7
    assert min_sample_size(["a"] * 30 + ["b"] * 40, 70, params) == pytest.approx(24.0)


def test_filter_by_expr_hand_computed():
    # library sizes 1e6 each -> CPM cutoff 10; two groups of 2 -> need 2 samples
    base = np.full((4, 4), 0)
    base[:, 0] = [10, 10, 0, 0]  # CPM 10 in two samples, total 20 -> keep
    base[:, 1] = [9, 9, 9, 9]  # below CPM cutoff everywhere -> drop
    base[:, 2] = [10, 0, 0, 0]  # one sample only -> drop
    base[:, 3] = [1_000_000 - c for c in base[:, :3].sum(axis=1)]
    keep = filter_by_expr(base, ["a", "a", "b", "b"])
    assert keep.tolist() == [True, False, False, True]


def test_streamed_equals_in_memory(tmp_path, runner):
    from nofone.cli.app import app

    rng = np.random.default_rng(3)
    counts = rng.negative_binomial(1, rng.uniform(0.001, 0.9, size=200), size=(23, 200))
    groups = ["x"] * 9 + ["y"] * 14
    data = make_dataset(tmp_path, counts, {"grp": groups})
    expected = filter_by_expr(counts, groups)
    result = runner.invoke(app, ["filter", "--input", str(data), "--outdir", str(tmp_path / "f"),
                                 "--group", "grp", "--chunk-size", "4"])
    assert result.exit_code == 0, result.output
    kept = Dataset(tmp_path / "f")
    assert kept.gene_ids == [g for g, k in zip(Dataset(data).gene_ids, expected) if k]
    np.testing.assert_array_equal(kept.read().counts, counts[:, expected])
    table = pd.read_csv(tmp_path / "f" / "gene_filter.tsv", sep="\t")
    assert table["keep"].tolist() == expected.tolist()
    report = json.loads((tmp_path / "f" / "filter_report.json").read_text())
    assert report["n_genes_kept"] == int(expected.sum()) and report["min_sample_size"] == 9


def test_protein_coding_and_bad_group(tmp_path, runner):
    from nofone.cli.app import app

    counts = np.full((3, 4), 500)
    data = make_dataset(tmp_path, counts, {"tissue": ["a", "a", "b"]},
                        biotypes=["protein_coding", "lncRNA", "protein_coding", "miRNA"])
    result = runner.invoke(app, ["filter", "-i", str(data), "-o", str(tmp_path / "f"), "--protein-coding"])
    assert result.exit_code == 0, result.output
    assert Dataset(tmp_path / "f").gene_ids == ["ENSG00000000000", "ENSG00000000002"]
    result = runner.invoke(app, ["filter", "-i", str(data), "-o", str(tmp_path / "g"), "--group", "nope"])
    assert result.exit_code == 2 and "group column(s) ['nope']" in result.output
    assert not (tmp_path / "g").exists()


def test_split_is_seeded_stratified_and_excludes_cases():
    samples = pd.DataFrame({
        "sample_id": [f"s{i}" for i in range(60)],
        "condition": ["normal"] * 50 + ["case"] * 10,
        "tissue": ["lung"] * 30 + ["liver"] * 19 + ["gut"] + ["lung"] * 10,
    })
    a = stratified_split(samples, 0.2, seed=4)
    b = stratified_split(samples, 0.2, seed=4)
    c = stratified_split(samples, 0.2, seed=5)
    pd.testing.assert_frame_equal(a, b)
    assert not a["split"].equals(c["split"])
    test = a[a["split"] == "test"]
    assert test["stratum"].value_counts().to_dict() == {"lung": 6, "liver": 4}  # gut: 1 sample stays in train
    assert (a.loc[50:, "split"] == "excluded").all()
    with pytest.raises(InputError, match="no normal samples"):
        stratified_split(samples.assign(condition="case"), 0.1, 0)
    with pytest.raises(InputError, match="cannot stratify by 'site'"):
        stratified_split(samples, 0.1, 0, stratify="site")


def test_split_cli_writes_train_and_test(tmp_path, runner):
    from nofone.cli.app import app

    counts = np.arange(40 * 3).reshape(40, 3) + 1
    meta = {"condition": ["normal"] * 36 + ["case"] * 4, "tissue": ["a", "b"] * 20}
    data = make_dataset(tmp_path, counts, meta)
    result = runner.invoke(app, ["split", "-i", str(data), "-o", str(tmp_path / "s"),
                                 "--test-fraction", "0.25", "--seed", "1"])
    assert result.exit_code == 0, result.output
    train, test = Dataset(tmp_path / "s" / "train"), Dataset(tmp_path / "s" / "test")
    assert (train.n_samples, test.n_samples) == (28, 8)
    assert set(train.sample_ids).isdisjoint(test.sample_ids)
    assert (test.samples["tissue"].value_counts() == 4).all()
    full = Dataset(data).read()
    rows = [full.sample_ids.index(s) for s in test.sample_ids]
    np.testing.assert_array_equal(test.read().counts, full.counts[rows])
