"""`nofone deseq2`: the pydeseq2 baseline on simulated data (fast; no ../shared needed)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from nofone.baselines.deseq2 import RESULT_COLUMNS, group_contrast, n_of_one
from nofone.baselines.r_deseq2 import r_independent_filtering, r_lowess
from nofone.cli.app import app
from nofone.errors import InputError
from nofone.io.dataset import COUNTS_FILE, CountChunk, CountWriter, write_tables
from nofone.io.ingest import ingest
from nofone.simulate.config import SimulationConfig
from nofone.simulate.write import simulate
from nofone.stats.multiple_testing import bh_adjust
from nofone.steps import deseq2 as step
from nofone.steps.de import DE_SCHEMA

N_GENES, N_PLANTED = 200, 20


def planted_counts(seed: int = 0, per_group: int = 5):
    """Two groups (A, B) x two batches; genes 0..N_PLANTED-1 change by +-2 log2 in B; gene N-1 all zero."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(["A", "B"], per_group)
    batches = np.tile(["b1", "b2"], per_group)
    n = len(groups)
    base = np.exp(rng.uniform(np.log(20), np.log(5000), N_GENES))
    lfc = np.zeros(N_GENES)
    lfc[:N_PLANTED] = np.where(np.arange(N_PLANTED) % 2 == 0, 2.0, -2.0)
    batch_effect = np.where(rng.random(N_GENES) < 0.3, rng.normal(0, 0.7, N_GENES), 0.0)
    size_factors = np.exp(rng.normal(0, 0.3, n))
    log2_mean = (np.log2(base)[None, :] + (groups == "B")[:, None] * lfc[None, :]
                 + (batches == "b2")[:, None] * batch_effect[None, :] / np.log(2))
    mean = size_factors[:, None] * 2.0**log2_mean
    alpha = 0.05 + 2.0 / base
    r = 1 / alpha
    counts = rng.poisson(rng.gamma(np.broadcast_to(r, mean.shape), mean / r))
    counts[:, -1] = 0
    ids = [f"s{i:02d}" for i in range(n)]
    metadata = pd.DataFrame({"group": groups, "batch": batches, "lonely": ["x"] + ["y"] * (n - 1)}, index=ids)
    genes = [f"G{g:04d}" for g in range(N_GENES)]
    return pd.DataFrame(counts, index=ids, columns=genes), metadata


@pytest.fixture(scope="module")
def planted():
    return planted_counts()


@pytest.fixture(scope="module")
def planted_dataset(tmp_path_factory, planted):
    counts, metadata = planted
    folder = tmp_path_factory.mktemp("planted") / "data"
    folder.mkdir()
    with CountWriter(folder / COUNTS_FILE, counts.shape[1]) as writer:
        writer.write(CountChunk(list(counts.index), counts.to_numpy(np.int64)))
    genes = pd.DataFrame({"gene_id": counts.columns, "gene_name": [f"name{g}" for g in range(N_GENES)]})
    write_tables(folder, genes, metadata.rename_axis("sample_id").reset_index())
    return folder


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A simulated atlas (2 tissues x 8 normals, 2 held-out normals each, 3 cases) ingested."""
    root = tmp_path_factory.mktemp("sim")
    simulate(root / "sim", SimulationConfig(tissues=2, samples_per_tissue=8, genes=150, cases=3,
                                            heldout_per_tissue=2, seed=4))
    ingest(root / "sim" / "samplesheet.csv", root / "data")
    return root


def test_group_contrast_recovers_planted_differences(planted):
    counts, metadata = planted
    res = group_contrast(counts, metadata, "~ batch + group", ("group", "B", "A"), alpha=0.05, n_cpus=1)
    assert list(res.columns) == list(RESULT_COLUMNS)
    assert list(res.index) == list(counts.columns)
    called = set(res.index[res["padj"] < 0.05])
    planted_genes = set(counts.columns[:N_PLANTED])
    assert len(called & planted_genes) >= 0.9 * N_PLANTED
    assert len(called - planted_genes) <= 4
    lfc = res["log2FoldChange"].iloc[:N_PLANTED].to_numpy()
    expected = np.where(np.arange(N_PLANTED) % 2 == 0, 2.0, -2.0)
    assert np.median(np.abs(lfc - expected)) < 0.3
    zero = res.iloc[-1]
    assert zero["baseMean"] == 0 and zero[list(RESULT_COLUMNS[1:])].isna().all()  # R: NA for all-zero genes
    sf = pd.Series(res.attrs["size_factors"])
    positive = (counts > 0).all(axis=0)
    log_counts = np.log(counts.loc[:, positive].to_numpy())
    median_of_ratios = np.exp(np.median(log_counts - log_counts.mean(axis=0), axis=1))
    np.testing.assert_allclose(sf, median_of_ratios)
    assert list(sf.index) == list(counts.index)
    # the reference level decides the sign, not the order of the levels
    flipped = group_contrast(counts, metadata, "~ batch + group", ("group", "A", "B"), n_cpus=1)
    np.testing.assert_allclose(flipped["log2FoldChange"].iloc[:-1], -res["log2FoldChange"].iloc[:-1], atol=1e-5)


def test_n_of_one_library_expected_counts(planted, capfd):
    counts, _ = planted
    case = counts.iloc[5]  # group B
    controls = counts.iloc[:5]  # group A
    capfd.readouterr()
    table = n_of_one(case, controls, alpha=0.05, n_cpus=1)
    assert capfd.readouterr() == ("", "")  # pydeseq2 is kept quiet
    assert list(table.columns) == ["count", "normal_mean", "dispersion", *RESULT_COLUMNS]
    sf = pd.Series(table.attrs["size_factors"])
    normed = controls.to_numpy() / sf.iloc[1:].to_numpy()[:, None]
    np.testing.assert_allclose(table["normal_mean"], normed.mean(axis=0) * sf.iloc[0])
    assert (table["count"] == case).all()
    assert (table["dispersion"].iloc[:-1] > 0).all() and np.isnan(table["dispersion"].iloc[-1])
    top = table["pvalue"].nsmallest(20).index
    assert len(set(top) & set(counts.columns[:N_PLANTED])) >= 15


def test_r_lowess_matches_r_on_cars():
    speed = [4, 4, 7, 7, 8, 9, 10, 10, 10, 11, 11, 12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 16,
             16, 17, 17, 17, 18, 18, 18, 18, 19, 19, 19, 20, 20, 20, 20, 20, 22, 23, 24, 24, 24, 24, 25]
    dist = [2, 10, 4, 22, 16, 10, 18, 26, 34, 17, 28, 14, 20, 24, 28, 26, 34, 34, 46, 26, 36, 60, 80, 20, 26, 54, 32,
            40, 32, 40, 50, 42, 56, 76, 84, 36, 46, 68, 32, 48, 52, 56, 64, 66, 54, 70, 92, 93, 120, 85]
    fitted = r_lowess(np.array(speed, float), np.array(dist, float))
    r_values = [4.965459, 13.124495, 15.858633, 18.579691, 21.280313, 24.129277, 27.119549, 30.027276, 32.962506,
                36.757728, 40.435075, 43.463492, 46.885479, 50.793152, 56.491224, 67.585824, 73.079695, 78.643164,
                84.328698]  # R: unique(lowess(cars)$y)
    np.testing.assert_allclose(np.unique(np.round(fitted, 6)), r_values, atol=1e-6)


def test_bh_and_independent_filtering():
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.5])
    r_p_adjust = [0.04, 0.04 * 4 / 3, np.nan, 0.04 * 4 / 3, 0.5]
    np.testing.assert_allclose(bh_adjust(p), r_p_adjust, equal_nan=True)
    rng = np.random.default_rng(1)
    mean = np.concatenate([np.zeros(100), rng.uniform(0.1, 1000, 900)])
    pvalue = np.where(mean > 0, rng.uniform(size=1000), np.nan)
    pvalue[mean > 500] /= 1000  # signal only in well-expressed genes: filtering should help
    padj = r_independent_filtering(mean, pvalue, 0.05)
    assert np.isnan(padj[mean == 0]).all()
    assert np.nanmin(mean[~np.isnan(padj)]) > 0


def test_contrast_step_writes_results_and_report(tmp_path, planted_dataset):
    report = step.contrast(planted_dataset, tmp_path / "out", "~ batch + group", "group,B,A", n_cpus=1)
    table = pd.read_csv(tmp_path / "out" / step.RESULTS_FILE, sep="\t")
    assert list(table.columns) == ["gene_id", "gene_name", *RESULT_COLUMNS]
    assert table["gene_name"].iloc[3] == "name3"
    assert table.iloc[-1][list(RESULT_COLUMNS[1:])].isna().all()
    saved = json.loads((tmp_path / "out" / step.REPORT_FILE).read_text())
    assert saved == report
    assert report["n_samples_per_level"] == {"A": 5, "B": 5}
    assert report["n_significant"] == int((table["padj"] < 0.05).sum()) >= 0.9 * N_PLANTED
    assert report["n_all_zero"] == 1 and set(report["size_factors"]) == {f"s{i:02d}" for i in range(10)}
    assert report["pydeseq2_version"] and report["design"] == "~ batch + group"


@pytest.mark.parametrize(("design", "contrast", "message"), [
    ("~ nosuch + group", "group,B,A", "unknown column(s) ['nosuch']"),
    ("~ group", "group,C,A", "contrast level 'C' is absent"),
    ("~ batch + lonely", "lonely,x,y", "has 1 sample(s); DESeq2 needs at least 2"),
    ("~ batch", "group,B,A", "contrast factor 'group' is not in the design"),
    ("~ group", "group,B", "give factor,level,reference"),
])
def test_contrast_bad_input(tmp_path, planted_dataset, design, contrast, message):
    with pytest.raises(InputError) as error:
        step.contrast(planted_dataset, tmp_path / "out", design, contrast, n_cpus=1)
    assert message in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_n_of_one_step_de_layout(tmp_path, simulated):
    data = simulated / "data"
    options = step.NOfOneOptions(cases_condition="case", controls_condition="normal", same_tissue=True,
                                 q_threshold=0.01, lfc_threshold=1.0, n_cpus=1)
    summary = step.n_of_one(data, tmp_path / "out", options)
    out = tmp_path / "out"
    table = pq.read_table(out / step.NOF1_FILE).to_pandas()
    assert list(table.columns) == [*DE_SCHEMA.names, "repeat", "n_controls"]
    assert sorted(table["sample_id"].unique()) == ["case001", "case002", "case003"]
    assert (table["n_controls"] == 8).all() and (table["repeat"] == 0).all() and table["can_call_down"].all()
    assert (table["dispersion"].dropna() > 0).all()
    summary_file = pd.read_csv(out / "summary.tsv", sep="\t")
    assert list(summary_file.columns[:7]) == ["sample_id", "repeat", "n_controls", "n_tested", "n_up", "n_down", "n_de"]
    pd.testing.assert_frame_equal(summary_file, summary, check_dtype=False)
    controls = pd.read_csv(out / step.CONTROLS_FILE, sep="\t")
    samples = pd.read_parquet(data / "samples.parquet").set_index("sample_id")
    for case, group in controls.groupby("sample_id"):
        assert (samples.loc[group["control_id"], "tissue"] == samples.loc[case, "tissue"]).all()
        assert (samples.loc[group["control_id"], "condition"] == "normal").all()
    # planted DE is found: most planted genes with a large effect are called
    truth = pd.read_csv(simulated / "sim" / "truth.tsv", sep="\t")
    merged = truth.merge(table, on=["sample_id", "gene_id"], suffixes=("_true", ""))
    strong = merged[(merged["log2_fold_change_true"].abs() >= 2) & (merged["base_mean"] >= 50)]
    assert len(strong) >= 5
    assert (strong["q_value"] < 0.05).mean() >= 0.7
    assert (np.sign(strong["log2_fold_change"]) == np.sign(strong["log2_fold_change_true"])).mean() >= 0.9
    # the expected count DESeq2 gives a null gene tracks the observed count
    null = table[~table.set_index(["sample_id", "gene_id"]).index.isin(truth.set_index(["sample_id", "gene_id"]).index)]
    null = null[null["normal_mean"] > 20]
    assert 0.8 < np.median(null["count"] / null["normal_mean"]) < 1.25


def test_random_controls_are_seeded_and_reproducible(tmp_path, simulated):
    data = simulated / "data"
    kwargs = dict(cases=["case001"], controls_condition="normal", n_controls=3, seed=7, n_cpus=1)
    step.n_of_one(data, tmp_path / "a", step.NOfOneOptions(repeats=2, **kwargs))
    step.n_of_one(data, tmp_path / "b", step.NOfOneOptions(repeats=1, **kwargs))  # the same first repeat again
    a, b = (pd.read_csv(tmp_path / x / step.CONTROLS_FILE, sep="\t") for x in "ab")
    pd.testing.assert_frame_equal(a[a["repeat"] == 0], b)
    table_a = pq.read_table(tmp_path / "a" / step.NOF1_FILE).to_pandas()
    pd.testing.assert_frame_equal(table_a[table_a["repeat"] == 0].reset_index(drop=True),
                                  pq.read_table(tmp_path / "b" / step.NOF1_FILE).to_pandas())
    assert a.groupby("repeat").size().tolist() == [3, 3]
    summary = pd.read_csv(tmp_path / "a" / "summary.tsv", sep="\t")
    assert summary[["sample_id", "repeat", "n_controls"]].values.tolist() == [["case001", 0, 3], ["case001", 1, 3]]
    # the draw is a function of (seed, case, repeat) only: not of the other cases or the run
    normals = [f"n{i}" for i in range(16)]
    for repeat in (0, 1):
        drawn = a.loc[a["repeat"] == repeat, "control_id"].tolist()
        eligible = pd.read_parquet(data / "samples.parquet").query("condition == 'normal'")["sample_id"].tolist()
        assert step.draw_controls(eligible, 3, "case001", repeat, 7) == drawn
    draws = {tuple(step.draw_controls(normals, 3, case, repeat, seed))
             for case in ("case001", "case002") for repeat in range(3) for seed in (7, 8)}
    assert len(draws) >= 10
    assert step.draw_controls(normals, None, "case001", 0, 7) == normals


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(cases=["nope"], controls_condition="normal"), "unknown sample id(s) ['nope']"),
    (dict(cases_condition="case", controls=["nope"]), "unknown sample id(s) ['nope']"),
    (dict(cases_condition="case", controls_condition="nosuch"), "no controls selected"),
    (dict(cases_condition="nosuch", controls_condition="normal"), "no cases selected"),
    (dict(controls_condition="normal"), "no cases named"),
    (dict(cases_condition="case"), "no controls named"),
    (dict(cases_condition="case", controls_condition="normal", n_controls=100), "is larger than the 16 controls"),
    (dict(cases_condition="case", controls_condition="normal", same_tissue=True, n_controls=9),
     "is larger than the 8 controls of tissue"),
    (dict(cases=["case001"], controls=["tissue01_N0001"]), "has 1 control; DESeq2 needs at least 2"),
    (dict(cases_condition="case", controls_condition="normal", repeats=3), "--repeats above 1 needs --n-controls"),
    (dict(cases_condition="case", controls_condition="normal", n_controls=1), "--n-controls must be at least 2"),
])
def test_n_of_one_bad_input(tmp_path, simulated, kwargs, message):
    with pytest.raises(InputError) as error:
        step.n_of_one(simulated / "data", tmp_path / "out", step.NOfOneOptions(n_cpus=1, **kwargs))
    assert message in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_no_same_tissue_controls(tmp_path, simulated):
    samples = pd.read_parquet(simulated / "data" / "samples.parquet")
    case = samples.loc[samples["condition"] == "case"].iloc[0]
    others = samples.loc[(samples["condition"] == "normal") & (samples["tissue"] != case["tissue"]), "sample_id"]
    with pytest.raises(InputError, match="no controls of tissue"):
        step.n_of_one(simulated / "data", tmp_path / "out",
                      step.NOfOneOptions(cases=[case["sample_id"]], controls=list(others[:3]), same_tissue=True,
                                         n_cpus=1))
    assert not (tmp_path / "out").exists()


def test_cli(tmp_path, runner, planted_dataset, simulated):
    result = runner.invoke(app, ["--threads", "1", "deseq2", "contrast", "--input", str(planted_dataset),
                                 "--outdir", str(tmp_path / "c"), "--design", "~ batch + group",
                                 "--contrast", "group,B,A"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c" / step.RESULTS_FILE).is_file() and (tmp_path / "c" / step.REPORT_FILE).is_file()
    result = runner.invoke(app, ["--threads", "1", "deseq2", "n-of-one", "--input", str(simulated / "data"),
                                 "--outdir", str(tmp_path / "n"), "--case", "case002", "--controls-condition",
                                 "normal", "--same-tissue", "--n-controls", "4", "--repeats", "2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "n" / "summary.tsv", sep="\t")) == 2
    result = runner.invoke(app, ["deseq2", "contrast", "--input", str(planted_dataset), "--outdir",
                                 str(tmp_path / "bad"), "--design", "~ nosuch", "--contrast", "group,B,A"])
    assert result.exit_code == 2 and "unknown column" in result.output
    assert not (tmp_path / "bad").exists()
    result = runner.invoke(app, ["deseq2", "n-of-one", "--input", str(simulated / "data"), "--outdir",
                                 str(tmp_path / "bad"), "--case", "nope", "--controls-condition", "normal"])
    assert result.exit_code == 2 and "nope" in result.output
    assert not (tmp_path / "bad").exists()


def _training_model(folder, trained: list[str], held: list[str]):
    """A model folder as far as --controls-trained-by reads it: training_representations.parquet."""
    folder.mkdir()
    table = pd.DataFrame({"sample_id": trained + held, "split": ["train"] * len(trained) + ["test"] * len(held)})
    table.to_parquet(folder / step.TRAIN_REPRESENTATIONS)
    return folder


def test_n_of_one_every_non_normal_against_the_training_normals(tmp_path, simulated, runner):
    """The pipeline's NOFONE_DESEQ2: cases are every sample neither normal nor held-out normal;
    controls the normals the model trained on (not those it held out)."""
    data = simulated / "data"
    samples = pd.read_parquet(data / "samples.parquet")
    normals = samples.loc[samples["condition"] == "normal", "sample_id"].tolist()
    trained, held = normals[::2], normals[1::2]
    model = _training_model(tmp_path / "model", [*trained, "not_in_this_dataset"], held)
    result = runner.invoke(app, ["--threads", "1", "deseq2", "n-of-one", "--input", str(data), "--outdir",
                                 str(tmp_path / "out"), "--cases-except-condition", "normal",
                                 "--cases-except-condition", "heldout_normal", "--controls-condition", "normal",
                                 "--controls-trained-by", str(model)])
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "out" / "summary.tsv", sep="\t")
    assert sorted(summary["sample_id"]) == ["case001", "case002", "case003"]
    controls = pd.read_csv(tmp_path / "out" / step.CONTROLS_FILE, sep="\t")
    for _, group in controls.groupby("sample_id"):
        assert sorted(group["control_id"]) == sorted(trained)
    report = json.loads((tmp_path / "out" / step.REPORT_FILE).read_text())
    assert report["cases_except_conditions"] == ["normal", "heldout_normal"]
    assert report["controls_trained_by"] == str(model)
    # --controls-trained-by alone: the controls are the samples the model trained on
    step.n_of_one(data, tmp_path / "alone", step.NOfOneOptions(cases=["case001"], controls_trained_by=model, n_cpus=1))
    drawn = pd.read_csv(tmp_path / "alone" / step.CONTROLS_FILE, sep="\t")
    assert sorted(drawn["control_id"]) == sorted(trained)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(cases_except_conditions=("normal", "heldout_normal", "case"), controls_condition="normal"),
     "no cases selected (every sample's condition is one of ['case', 'heldout_normal', 'normal']"),
    (dict(cases_condition="case", controls_trained_by="nomodel"),
     "--controls-trained-by {tmp}/nomodel: no training_representations.parquet"),
    (dict(cases_condition="case", controls_condition="normal", controls_trained_by="elsewhere"),
     "none of the samples that {tmp}/elsewhere trained on is among them (--controls-trained-by)"),
    (dict(cases_condition="case"), "or --controls-trained-by"),
])
def test_n_of_one_selection_errors(tmp_path, simulated, kwargs, message):
    (tmp_path / "nomodel").mkdir()
    _training_model(tmp_path / "elsewhere", ["other1", "other2"], [])
    if "controls_trained_by" in kwargs:
        kwargs["controls_trained_by"] = tmp_path / kwargs["controls_trained_by"]
    with pytest.raises(InputError) as error:
        step.n_of_one(simulated / "data", tmp_path / "out", step.NOfOneOptions(n_cpus=1, **kwargs))
    assert message.format(tmp=tmp_path) in str(error.value)
    assert not (tmp_path / "out").exists()
