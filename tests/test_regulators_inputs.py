"""Inputs of `nofone regulators train` and `nofone explain`: feature tables keyed by symbol or
Ensembl id, targets (tissue DE from a dataset, the DE prior, a table), and every bad input as
one clear line, exit 2, and nothing written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHARED_DATA, requires_shared_data, write

from nofone.cli.app import app
from nofone.errors import InputError
from nofone.io.dataset import COUNTS_FILE, CountChunk, CountWriter, write_tables
from nofone.regulators.features import REGULATOR, STRUCTURE, informative_features, join_tables, read_feature_table
from nofone.regulators.genes import GeneAnnotation
from nofone.regulators.simulate import RegulatorSimulation, simulate_regulators
from nofone.regulators.targets import DE_PRIOR_TARGET, MEDIAN_EXPRESSION, de_prior, tissue_de

ANNOTATION = ("ensgene\tsymbol\tbiotype\tchr\n"
              "ENSG00000000001\tA1\tprotein_coding\t1\nENSG00000000002\tB2\tprotein_coding\t2\n"
              "ENSG00000000003\tC3\tprotein_coding\tchr3\nENSG00000000004\tD4\tprotein_coding\tX\n")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def annotation(tmp_path):
    return GeneAnnotation.read(write(tmp_path / "ann.tsv", ANNOTATION))


def test_symbols_map_through_the_annotation_and_identical_duplicates_merge(tmp_path, annotation):
    table = write(tmp_path / "tf.tsv.gz", "gene_name\tT1\tT2\nA1\t3\t0\nB2\t0\t1\nB2\t0\t1\nRF00019\t9\t9\n", gz=True)
    features = read_feature_table(table, REGULATOR, annotation)
    assert features.gene_ids.tolist() == ["ENSG00000000001", "ENSG00000000002"]
    assert features.gene_names.tolist() == ["A1", "B2"]
    assert features.notes["unmapped_rows"] == 1 and features.notes["identical_duplicate_rows"] == 1
    assert annotation.chromosomes_of(["ENSG00000000003", "ENSG00000000004", "nope"]).tolist() == ["3", "X", ""]


def test_tables_join_with_no_binding_for_absent_genes_and_structure_left_for_the_median(tmp_path, annotation):
    tf = read_feature_table(write(tmp_path / "tf.tsv", "gene_name\tT1\nA1\t3\n"), REGULATOR, annotation)
    mirna = read_feature_table(write(tmp_path / "mi.txt", "gene_id\tm1\nENSG00000000002.4\t0.5\n"),
                               REGULATOR, annotation)
    frame = pd.DataFrame({"gene_id": ["ENSG00000000001", "ENSG00000000003"], "len": [100.0, 300.0]})
    frame.to_parquet(tmp_path / "s.parquet")
    structure = read_feature_table(tmp_path / "s.parquet", STRUCTURE, annotation)
    matrix = join_tables([tf, mirna, structure])
    values = pd.DataFrame(matrix.values, index=matrix.gene_ids, columns=matrix.names)
    assert values.loc["ENSG00000000002", "T1"] == 0 and values.loc["ENSG00000000001", "m1"] == 0
    assert values.loc["ENSG00000000002", "m1"] == 0.5  # the version was stripped
    assert np.isnan(values.loc["ENSG00000000002", "len"])
    assert matrix.kinds == [REGULATOR, REGULATOR, STRUCTURE] and matrix.sources == ["tf", "mi", "s"]
    keep, dropped = informative_features(matrix, min_genes=1)
    assert keep.all() and not any(dropped.values())
    with pytest.raises(InputError, match="no regulator binds at least 5"):
        informative_features(matrix, min_genes=5)


def make_dataset(folder, counts: np.ndarray, tissues: list[str], conditions: list[str] | None = None,
                 gene_ids: list[str] | None = None):
    n_samples, n_genes = counts.shape
    gene_ids = gene_ids or [f"ENSG{i + 1:011d}" for i in range(n_genes)]
    samples = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n_samples)], "tissue": tissues})
    if conditions is not None:
        samples["condition"] = conditions
    folder.mkdir(parents=True, exist_ok=True)
    with CountWriter(folder / COUNTS_FILE, n_genes) as writer:
        writer.write(CountChunk(samples["sample_id"].tolist(), counts.astype(np.int64)))
    write_tables(folder, pd.DataFrame({"gene_id": gene_ids, "gene_name": ""}), samples)
    return folder


def test_tissue_de_is_each_tissue_against_the_median_over_tissues(tmp_path, annotation):
    counts = np.array([[100, 300, 600, 0], [300, 300, 400, 0],  # tissue a
                       [500, 100, 400, 0], [500, 100, 400, 0],  # tissue b
                       [100, 100, 800, 0],  # tissue c
                       [9000, 0, 1000, 0]])  # a tumour: left out
    data = make_dataset(tmp_path / "d", counts, ["a", "a", "b", "b", "c", "a"], ["normal"] * 5 + ["tumour"])
    targets = tissue_de(data, annotation, min_cpm=1.0)
    assert targets.names == ["a", "b", "c", MEDIAN_EXPRESSION]
    assert targets.gene_ids.tolist() == ["ENSG00000000001", "ENSG00000000002", "ENSG00000000003"]  # gene 4 silent
    cpm = counts[:5, :3] / counts[:5].sum(1, keepdims=True) * 1e6
    log = np.log2(np.stack([cpm[:2].mean(0), cpm[2:4].mean(0), cpm[4]]) + 0.25).T
    median = np.median(log, 1)
    np.testing.assert_allclose(targets.values[:, :3], log - median[:, None])
    np.testing.assert_allclose(targets.values[:, 3], median)
    assert targets.notes["samples_per_tissue"] == {"a": 2, "b": 2, "c": 1}


def test_de_prior_is_its_logit_with_the_paper_caps(tmp_path, annotation):
    table = write(tmp_path / "prior.tsv", "Gene_Order\tGene_EntrezID\tN_HitLists\tDE_Prior_Rank\tGene_Name\n"
                  "1\t11\t9\t1\tA1\n2\t12\t5\t0.5\tB2\n3\t13\t1\t0.0\tC3\n4\t14\t1\t0.95\tNOSUCH\n")
    targets = de_prior(table, annotation)
    assert targets.names == [DE_PRIOR_TARGET]
    np.testing.assert_allclose(targets.values[:, 0], [10.0, 0.0, -10.0])
    assert targets.positive_threshold[DE_PRIOR_TARGET] == pytest.approx(np.log(9.0))
    assert targets.notes["unmapped_rows"] == 1


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate_regulators(tmp_path_factory.mktemp("sim") / "sim",
                               RegulatorSimulation(genes=600, tfs=6, mirnas=4, tissues=2, planted_samples=1,
                                                   null_samples=0, seed=3))


def run_train(runner, sim, outdir, features=None, structure=None, targets=None, extra=()):
    argv = ["regulators", "train", "--annotation", str(sim["annotation"]), "--outdir", str(outdir),
            "--seeds", "1", "--max-epochs", "3", "--no-baselines", "--min-genes-bound", "5"]
    for path in features or [sim["tf"], sim["mirna"]]:
        argv += ["--features", str(path)]
    for path in structure if structure is not None else [sim["structure"]]:
        argv += ["--structure", str(path)]
    argv += ["--targets", str(targets or sim["targets"]), *extra]
    return runner.invoke(app, argv)


def expect_error(result, outdir, *fragments):
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    for fragment in fragments:
        assert fragment in message, message
    assert "Traceback" not in result.output
    assert not outdir.exists()
    assert not list(outdir.parent.glob(f".{outdir.name}.partial-*"))


@pytest.mark.parametrize(("content", "fragments"), [
    ("gene_name\tT1\tT2\nGENE1\t1\t2\nGENE1\t1\t3\n", ["gene ENSG00000000001", "different values", "lines 2, 3"]),
    ("gene_name\tT1\nGENE1\t1\nGENE2\tlots\n", ["line 3", "column 'T1'", "non-numeric value 'lots'"]),
    ("gene_name\tT1\nGENE1\t1\nGENE2\t\n", ["line 3", "missing value"]),
    ("gene_name\tT1\nGENE1\t-2\n", ["negative binding -2", "--structure"]),
    ("gene_name\tT1\nGENE1\tinf\n", ["line 2", "infinite value"]),
    ("gene_name\tT1\tT1\nGENE1\t1\t1\n", ["duplicate column names"]),
    ("gene_name,T1\nGENE1,1\n", ["is it tab-separated"]),
    ("symbol\tT1\nNOTAGENE\t1\nNEITHER\t2\n", ["none of its 2 gene keys could be placed"]),
])
def test_bad_feature_tables(tmp_path, runner, sim, content, fragments):
    bad = write(tmp_path / "bad.tsv", content)
    expect_error(run_train(runner, sim, tmp_path / "out", features=[sim["tf"], bad]), tmp_path / "out",
                 "bad.tsv", *fragments)


def test_a_feature_table_sharing_no_gene_with_the_targets(tmp_path, runner, sim):
    other = write(tmp_path / "other.tsv", "gene_id\tT9\nENSG99999999999\t1\nENSG99999999998\t3\n")
    expect_error(run_train(runner, sim, tmp_path / "out", features=[sim["tf"], other]), tmp_path / "out",
                 "other.tsv shares no gene with the targets")


def test_bad_targets(tmp_path, runner, sim):
    out = tmp_path / "out"
    expect_error(run_train(runner, sim, out, targets="tissue-de"), out, "--targets tissue-de needs --input")
    expect_error(run_train(runner, sim, out, targets="tissue_de"), out, "--targets tissue_de: no such table",
                 "tissue-de, de-prior")
    table = write(tmp_path / "t.tsv", "gene_id\tx\nENSG00000000001\t1\nENSG00000000001\t2\n")
    expect_error(run_train(runner, sim, out, targets=table), out, "t.tsv", "gene ENSG00000000001", "different values")
    table = write(tmp_path / "t2.tsv", "gene_id\tx\nENSG00000000001\tup\n")
    expect_error(run_train(runner, sim, out, targets=table), out, "t2.tsv, line 2, column 'x'", "non-numeric")
    data = make_dataset(tmp_path / "d", np.ones((2, 3)), ["a", "b"])
    pd.DataFrame({"sample_id": ["s0", "s1"]}).to_parquet(data / "samples.parquet")
    expect_error(run_train(runner, sim, out, targets="tissue-de", extra=["--input", str(data)]), out,
                 "no tissue column")
    data = make_dataset(tmp_path / "d1", np.ones((2, 3)), ["a", "a"])
    expect_error(run_train(runner, sim, out, targets="tissue-de", extra=["--input", str(data)]), out,
                 "at least 2 tissues")


def test_train_needs_an_annotation_for_the_chromosome_split(tmp_path, runner, sim):
    result = runner.invoke(app, ["regulators", "train", "--features", str(sim["tf"]), "--targets", str(sim["targets"]),
                                 "--outdir", str(tmp_path / "out")])
    expect_error(result, tmp_path / "out", "--annotation is needed")


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, sim):
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("model") / "model"
    result = run_train(CliRunner(), sim, out)
    assert result.exit_code == 0, result.output
    return out


def test_bad_de_outputs(tmp_path, runner, sim, small_model):
    out = tmp_path / "x"

    def explain(de, model=small_model):
        return runner.invoke(app, ["explain", "--regulators", str(model), "--de", str(de), "--outdir", str(out)])

    table = pd.read_parquet(sim["de"] / "de.parquet")
    (tmp_path / "nolfc").mkdir()
    table.drop(columns="log2_fold_change").to_parquet(tmp_path / "nolfc" / "de.parquet")
    expect_error(explain(tmp_path / "nolfc"), out, "no log2_fold_change column", "nofone de")
    (tmp_path / "empty").mkdir()
    expect_error(explain(tmp_path / "empty"), out, "no de.parquet")
    other = table.assign(gene_id="ENSG7" + table["gene_id"].str[5:])
    (tmp_path / "other").mkdir()
    other.to_parquet(tmp_path / "other" / "de.parquet")
    expect_error(explain(tmp_path / "other"), out, "sample S1: only 0 of its 600 genes are in the regulator model")
    split = pd.concat([table.iloc[:10], table.assign(sample_id="S2").iloc[:10], table.iloc[10:]])
    (tmp_path / "split").mkdir()
    split.to_parquet(tmp_path / "split" / "de.parquet")
    expect_error(explain(tmp_path / "split"), out, "rows of sample S1 are not contiguous")
    bad_id = table.assign(sample_id="../evil")
    (tmp_path / "badid").mkdir()
    bad_id.to_parquet(tmp_path / "badid" / "de.parquet")
    expect_error(explain(tmp_path / "badid"), out, "sample id '../evil' is not allowed")
    expect_error(explain(sim["de"], model=tmp_path / "nomodel"), out, "does not exist")
    (tmp_path / "dgd").mkdir()
    from nofone.io.artifact import write_artifact

    write_artifact(tmp_path / "dgd", {"model_type": "dgd"}, {"w": torch.zeros(1)},
                   pd.DataFrame({"gene_id": ["g"], "gene_name": [""]}))
    expect_error(explain(sim["de"], model=tmp_path / "dgd"), out, "is not a regulator model")


def test_one_sample_tsv_of_de_is_explained(tmp_path, runner, sim, small_model):
    table = pd.read_parquet(sim["de"] / "de.parquet").drop(columns="sample_id")
    table.to_csv(tmp_path / "P1.tsv", sep="\t", index=False)
    result = runner.invoke(app, ["explain", "--regulators", str(small_model), "--de", str(tmp_path / "P1.tsv"),
                                 "--outdir", str(tmp_path / "x"), "--no-checks", "--features-only"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x" / "regulators" / "P1.tsv").is_file()
    assert pd.read_csv(tmp_path / "x" / "summary.tsv", sep="\t")["sample_id"].tolist() == ["P1"]


@requires_shared_data
@pytest.mark.realdata
def test_the_shared_regulator_tables_are_read_and_mapped():
    regulators = SHARED_DATA / "regulators"
    annotation = GeneAnnotation.read(SHARED_DATA / "annotation" / "ensembl_grch38_gene_symbol_biotype_unique.tsv.gz")
    tf = read_feature_table(regulators / "tf_chipseq_gtrd_by_gene.tsv.gz", REGULATOR, annotation)
    assert len(tf.names) == 321 and len(tf.gene_ids) > 19000
    assert tf.notes["identical_duplicate_rows"] > 0  # the table lists some genes twice, identically
    mirna = read_feature_table(regulators / "mirna_targetscan_by_gene.tsv.gz", REGULATOR, annotation)
    assert len(mirna.names) == 217 and mirna.notes["unmapped_rows"] == 0
    prior = de_prior(regulators / "de_prior_crow2019.tsv", annotation)
    assert len(prior.gene_ids) > 15000
