"""Evaluation measures and `nofone evaluate` on a small simulated run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import write

from nofone.errors import InputError
from nofone.evaluate.metrics import (
    assignment_accuracy,
    auroc,
    component_tissue,
    count_calls,
    enrichment_scores,
    read_gene_sets,
    summarise_calls,
    thin_spike_ins,
)


def test_count_and_summarise_calls():
    de = pd.DataFrame({
        "sample_id": ["a"] * 4 + ["b"] * 4,
        "q_value": [0.001, 0.02, 0.2, np.nan, 0.001, 0.001, 0.5, 0.001],
        "log2_fold_change": [2.0, -3.0, 5.0, 9.0, -1.5, 0.5, 2.0, 1.2],
    })
    calls = count_calls(de, [0.01, 0.05], 1.0)
    got = calls.set_index(["sample_id", "q_threshold"])[["n_up", "n_down", "n_de"]].to_dict("index")
    assert got[("a", 0.01)] == {"n_up": 1, "n_down": 0, "n_de": 1}
    assert got[("a", 0.05)] == {"n_up": 1, "n_down": 1, "n_de": 2}
    assert got[("b", 0.01)] == {"n_up": 1, "n_down": 1, "n_de": 2}
    summary = summarise_calls(calls.assign(method="m"), ["method", "q_threshold"])
    row = summary[summary["q_threshold"] == 0.01].iloc[0]
    assert row["mean_de"] == 1.5 and row["median_de"] == 1.5 and row["up_down_ratio"] == 2.0 and row["n_samples"] == 2


def test_enrichment_score_is_the_papers_formula():
    genes = [f"G{i}" for i in range(100)]
    de = pd.DataFrame({"sample_id": "s", "gene_id": genes, "gene_name": genes,
                       "q_value": [0.001] * 10 + [0.5] * 90, "log2_fold_change": 2.0})
    markers = {"set": {"G0", "G1", "G2", "G50", "G51"}}
    row = enrichment_scores(de, markers, 0.01, 1.0).iloc[0]
    # 3 of the 10 calls are markers, 5 of the 100 genes are: (3 * 100) / (10 * 5)
    assert row["enrichment_score"] == pytest.approx(6.0)
    assert (row["n_de"], row["n_markers"], row["n_markers_de"]) == (10, 5, 3)


def test_read_gene_sets(tmp_path):
    gmt = write(tmp_path / "h.gmt", "SET_A\turl\tTP53\tEGFR\nSET_B\turl\tMYC\n")
    plain = write(tmp_path / "drivers.txt", "gene_id\nTP53\nKRAS\n")
    sets = read_gene_sets([gmt, plain])
    assert sets == {"SET_A": {"TP53", "EGFR"}, "SET_B": {"MYC"}, "drivers": {"TP53", "KRAS"}}
    # gzipped (the pipeline's --gene_sets may be .gmt.gz): a GMT even with a single gene per set
    gz = write(tmp_path / "c.gmt.gz", "SET_C\turl\tTP53\n", gz=True)
    listed = write(tmp_path / "more.txt.gz", "KRAS\nMYC\n", gz=True)
    assert read_gene_sets([gz, listed]) == {"SET_C": {"TP53"}, "more": {"KRAS", "MYC"}}
    with pytest.raises(InputError, match="not a text file"):
        read_gene_sets([write(tmp_path / "bad.gmt.gz", "SET\turl\tG\n")])  # .gz, but not gzipped
    with pytest.raises(InputError, match="does not exist"):
        read_gene_sets([tmp_path / "nope.gmt"])
    with pytest.raises(InputError, match="line 1: a GMT line"):
        read_gene_sets([write(tmp_path / "bad.gmt", "ONLY\n")])


def test_association_assignment_and_auroc():
    majority = component_tissue(["lung", "lung", "liver", "liver", "liver"], [0, 0, 1, 1, 0])
    assert majority.to_dict() == {0: "lung", 1: "liver"}
    acc = assignment_accuracy(["case"] * 3, ["lung", "liver", "liver"], [0, 1, 0], majority)
    assert acc.loc[acc["tissue"] == "all", "accuracy"].item() == pytest.approx(2 / 3)
    assert auroc([3, 4, 5], [1, 2]) == 1.0 and auroc([1, 2], [3, 4, 5]) == 0.0


def test_thinning_spike_ins_changes_ratios_by_the_asked_fold():
    rng = np.random.default_rng(0)
    counts = np.full((20000, 3), 1000)
    lfc = np.array([0.0, 2.0, -1.0])
    thinned = thin_spike_ins(counts, lfc, rng)
    ratios = thinned.mean(axis=0) / thinned.mean(axis=0)[0]
    np.testing.assert_allclose(np.log2(ratios), lfc, atol=0.02)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from nofone.io.ingest import IngestOptions
    from nofone.models.dgd.config import load_config
    from nofone.simulate.config import SimulationConfig
    from nofone.simulate.write import simulate
    from nofone.steps.run import RunOptions, run

    root = tmp_path_factory.mktemp("run")
    simulate(root / "sim", SimulationConfig(tissues=2, samples_per_tissue=30, genes=500, cases=3, seed=1))
    config = write(root / "c.json", json.dumps({"latent_dim": 4, "hidden": [16, 64], "gmm": {"n_components": 4},
                                                "training": {"epochs": 40, "batch_size": 16}}))
    gmt = write(root / "sets.gmt", "".join(
        f"SET{s}\tna\t" + "\t".join(f"SIM{i}" for i in range(1 + 20 * s, 21 + 20 * s)) + "\n" for s in range(6)))
    options = RunOptions(config=load_config(str(config)), ingest=IngestOptions(annotation=root / "sim" / "genes.tsv"),
                         device="cpu", gene_sets=gmt)
    run(root / "sim" / "samplesheet.csv", root / "out", options)
    return root


def test_run_with_gene_sets_tests_them_per_sample(small_run):
    """`nofone run --gene-sets`: pathways/ after de, against the trained model's local null."""
    out = small_run / "out"
    summary = json.loads((out / "run_summary.json").read_text())["pathways"]
    table = pq.read_table(out / "pathways" / "pathways.parquet").to_pandas()
    tested = pd.read_csv(out / "de" / "summary.tsv", sep="\t")["sample_id"]
    assert set(table["sample_id"]) == set(tested) and summary["n_sets_tested"] == table["gene_set"].nunique() >= 5
    assert table["p_value"].between(0, 1).all()
    assert json.loads((out / "pathways" / "pathways_report.json").read_text())["null"]["n_calibration_normals"] > 0


@pytest.mark.slow
def test_evaluate_writes_every_table(small_run, runner):
    from nofone.cli.app import app

    out = small_run / "evaluation"
    gene_set = write(small_run / "set.txt", "\n".join(f"SIM{i}" for i in range(1, 60)))
    result = runner.invoke(app, ["evaluate", "--run", str(small_run / "out"), "--outdir", str(out),
                                 "--negative-condition", "heldout_normal", "--n-random-controls", "2",
                                 "--repeats", "2", "--max-negative", "3", "--spike-lfc", "2",
                                 "--gene-set", str(gene_set), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"negative_control_summary.tsv", "spike_ins_summary.tsv", "enrichment_summary.tsv", "assignment.tsv",
            "nll_auroc.tsv", "association.tsv", "evaluation.json"} <= names
    nc = pd.read_csv(out / "negative_control_summary.tsv", sep="\t")
    assert set(nc["controls"]) == {"model", "all same-tissue", "2 random"}
    assert set(nc["method"]) == {"dgd", "deseq2"} and (nc["n_samples"] > 0).all()
    spikes = pd.read_csv(out / "spike_ins_summary.tsv", sep="\t")
    assert set(spikes["method"]) == {"dgd", "deseq2"}
    dgd = spikes[spikes["method"] == "dgd"].set_index("nominal_q")
    # this deliberately short training leaves the model off in 1.6% of held-out genes, and the
    # outlier null (the default) then wants more than a 4-fold change at q < 0.01: recall grows
    # with the threshold, the calls stay right
    assert dgd["recall"].is_monotonic_increasing and dgd.loc[0.1, "recall"] > 0.2, dgd
    assert (dgd["precision"].dropna() >= 0.8).all(), dgd
    auc = pd.read_csv(out / "nll_auroc.tsv", sep="\t")
    assert {"case", "training"} <= set(auc["group"])
    # spike-ins are tested with the null the run's de used
    assert json.loads((out / "evaluation.json").read_text())["options"]["null"] == "auto"
    # the frontier: every null of the model at every q; the NB calls at least what any mixture
    # calls (its tails are the thinnest), recall grows with q, the default is marked
    curve = pd.read_csv(out / "frontier.tsv", sep="\t")
    assert set(curve["null"]) == {"nb", "model-error", "outlier", "local"}
    assert set(curve["nominal_q"]) == {0.001, 0.01, 0.05, 0.1} and set(curve["spike_lfc"]) == {2.0}
    assert curve.loc[curve["default"], "null"].unique().tolist() == ["outlier"]
    by = curve.set_index(["null", "nominal_q"])
    for q in (0.001, 0.01, 0.05, 0.1):
        for null in ("outlier", "local"):
            assert by.loc[("nb", q), "recall"] >= by.loc[(null, q), "recall"]
            assert by.loc[("nb", q), "false_calls_per_normal"] >= by.loc[(null, q), "false_calls_per_normal"]
    for null in by.index.levels[0]:
        assert by.loc[null, "recall"].is_monotonic_increasing, null
    spikes_q01 = dgd.loc[0.01, "recall"]
    assert by.loc[("outlier", 0.01), "recall"] == pytest.approx(spikes_q01, abs=0.02)  # same calls, |LFC| > 1


@pytest.mark.parametrize(("report", "null"), [
    ({"null": "outlier", "null_requested": "nb"}, "nb"),
    ({"null": "nb", "null_requested": "auto"}, "auto"),
    ({"model_error": True, "outlier_null": None}, "model-error"),
    ({"model_error": False, "outlier_null": {"pi": 0.02, "tau": 0.8}}, "outlier"),
    ({"model_error": False, "outlier_null": None}, "nb"),
    (None, "auto"),
])
def test_null_of_a_de_folder_is_the_one_it_was_asked_for(tmp_path, report, null):
    """Also for reports of older nofone versions (flags), and none (auto)."""
    from nofone.steps.evaluate import null_of_de

    if report is not None:
        (tmp_path / "de_report.json").write_text(json.dumps(report))
    assert null_of_de(tmp_path) == null
    if report is not None:  # a folder gathered from chunks (Nextflow)
        (tmp_path / "de_report.json").unlink()
        (tmp_path / "gather_report.json").write_text(json.dumps({"reports": {"de_report.json": [report]}}))
        assert null_of_de(tmp_path) == null


@pytest.mark.slow
def test_evaluate_compares_a_second_model(small_run, runner):
    from nofone.cli.app import app

    out = small_run / "evaluation2"
    result = runner.invoke(app, ["evaluate", "--run", str(small_run / "out"), "--outdir", str(out), "--no-deseq2",
                                 "--max-negative", "3", "--spike-lfc", "2", "--device", "cpu",
                                 "--compare-model", f"dgd_again={small_run / 'out' / 'model'}"])
    assert result.exit_code == 0, result.output
    nc = pd.read_csv(out / "negative_control_summary.tsv", sep="\t")
    assert set(nc["method"]) == {"dgd", "dgd_again"}
    mean = nc.set_index(["method", "q_threshold"])["mean_de"]
    # the same model evaluated twice gives the same figures
    assert mean["dgd"].tolist() == mean["dgd_again"].tolist()
    assert set(pd.read_csv(out / "spike_ins_summary.tsv", sep="\t")["method"]) == {"dgd", "dgd_again"}
    result = runner.invoke(app, ["evaluate", "--run", str(small_run / "out"), "--outdir", str(out / "x"),
                                 "--compare-model", "justaname"])
    assert result.exit_code == 2 and "NAME=MODEL_DIR" in result.output


def test_evaluate_on_a_missing_run_is_a_clear_error(tmp_path, runner):
    from nofone.cli.app import app

    result = runner.invoke(app, ["evaluate", "--run", str(tmp_path / "none"), "--outdir", str(tmp_path / "e")])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "e").exists()


def _nextflow_layout(small_run) -> dict[str, str]:
    """The run's parts as the Nextflow pipeline has them: FILTER's data, TRAIN's model and
    GATHER's cohort/ folder holding both representations.parquet and de.parquet."""
    from nofone.steps.evaluate import RunFolder

    run = RunFolder.find(small_run / "out")
    cohort = small_run / "cohort"
    if not cohort.is_dir():
        cohort.mkdir()
        shutil.copy(run.representations / "representations.parquet", cohort)
        shutil.copy(run.de / "de.parquet", cohort)
    return {"--data": str(run.data), "--model": str(run.model), "--representations": str(cohort),
            "--de": str(cohort)}


SMALL = ["--no-deseq2", "--no-spike-ins", "--max-negative", "3", "--negative-condition", "heldout_normal",
         "--device", "cpu"]


def test_evaluate_explicit_folders_replace_the_run(small_run, runner):
    """--data, --model, --representations and --de (the Nextflow layout) give what --run gives;
    one of them alone replaces that part of --run."""
    from nofone.cli.app import app

    parts = _nextflow_layout(small_run)
    outs = {name: small_run / f"eval-{name}" for name in ("run", "explicit", "mixed")}
    explicit = [word for option, path in parts.items() for word in (option, path)]
    for name, args in (("run", ["--run", str(small_run / "out")]), ("explicit", explicit),
                       ("mixed", ["--run", str(small_run / "out"), "--de", parts["--de"]])):
        result = runner.invoke(app, ["evaluate", *args, "--outdir", str(outs[name]), *SMALL])
        assert result.exit_code == 0, (name, result.output)
    for table in ("negative_control_summary.tsv", "nll_auroc.tsv", "assignment.tsv"):
        expected = pd.read_csv(outs["run"] / table, sep="\t")
        for name in ("explicit", "mixed"):
            pd.testing.assert_frame_equal(pd.read_csv(outs[name] / table, sep="\t"), expected, obj=f"{name}: {table}")
    summary = json.loads((outs["explicit"] / "evaluation.json").read_text())
    assert summary["run"] is None
    assert summary["inputs"] == {"root": None, "data": parts["--data"], "model": parts["--model"],
                                 "representations": parts["--representations"], "de": parts["--de"]}
    mixed = json.loads((outs["mixed"] / "evaluation.json").read_text())
    assert mixed["run"] == str(small_run / "out") and mixed["inputs"]["de"] == parts["--de"]
    assert mixed["inputs"]["model"] == str(small_run / "out" / "model")


@pytest.mark.parametrize(("change", "message"), [
    ({"--model": "nowhere"}, "--model {tmp}/nowhere does not exist (expected a model folder from `nofone train`)"),
    ({"--data": "empty"}, "--data {tmp}/empty has no counts.parquet"),
    ({"--de": "empty"}, "--de {tmp}/empty has no de.parquet"),
    ({"--representations": "empty"}, "--representations {tmp}/empty has no representations.parquet"),
    ({"--model": "empty"}, "--model {tmp}/empty has no training_representations.parquet"),
    ({"--representations": None, "--de": None}, "missing: --representations, --de"),
])
def test_evaluate_explicit_folder_errors_name_the_option(small_run, runner, tmp_path, change, message):
    from nofone.cli.app import app

    (tmp_path / "empty").mkdir()
    parts = _nextflow_layout(small_run)
    for option, value in change.items():
        parts[option] = str(tmp_path / value) if value else None
    args = [word for option, path in parts.items() if path for word in (option, path)]
    result = runner.invoke(app, ["evaluate", *args, "--outdir", str(tmp_path / "e"), *SMALL])
    assert result.exit_code == 2, result.output
    assert message.format(tmp=tmp_path) in " ".join(result.output.split()), result.output
    assert not (tmp_path / "e").exists()


def test_evaluate_needs_the_training_samples_for_deseq2(small_run, runner, tmp_path):
    """Data without the samples the model trained on (e.g. another cohort): DESeq2 has no
    controls, and the error says so (and that --no-deseq2 goes without them)."""
    from nofone.cli.app import app
    from nofone.io.dataset import Dataset, copy_subset

    parts = _nextflow_layout(small_run)
    tested = set(pd.read_parquet(Path(parts["--de"]) / "de.parquet", columns=["sample_id"])["sample_id"])
    (tmp_path / "tested").mkdir()
    copy_subset(Dataset(parts["--data"]), tmp_path / "tested", sample_ids=sorted(tested))
    parts["--data"] = str(tmp_path / "tested")
    args = [word for option, path in parts.items() for word in (option, path)]
    result = runner.invoke(app, ["evaluate", *args, "--outdir", str(tmp_path / "e"), "--device", "cpu",
                                 "--max-negative", "2", "--no-spike-ins"])
    assert result.exit_code == 2 and "DESeq2 needs them as controls" in " ".join(result.output.split())
    assert not (tmp_path / "e").exists()
