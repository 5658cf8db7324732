"""The report's regulators section, from a real `nofone explain` output: simulated regulators
with planted effects (one TF named with HTML), a regulator model and its explanation (~5 s)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from test_report import _html, _pngs, _section

from nofone.errors import InputError
from nofone.regulators.outputs import COHORT_FILE, LONG_FILE, REGULATORS_DIR, REPORT_FILE, SUMMARY_FILE
from nofone.regulators.simulate import RegulatorSimulation, simulate_regulators
from nofone.report.build import ReportOptions, report
from nofone.report.inputs import resolve_paths

pytestmark = pytest.mark.usefixtures("one_thread")

HTML_TF = "TF<b>1</b>&"
SIMULATION = RegulatorSimulation(genes=1200, tfs=15, mirnas=8, planted_samples=3, null_samples=1,
                                 planted_per_sample=2, seed=3)


@pytest.fixture(scope="module")
def explained(tmp_path_factory) -> dict:
    from nofone.regulators.explain_step import explain
    from nofone.regulators.network import NetworkConfig
    from nofone.regulators.train import TrainOptions, train_regulators

    root = tmp_path_factory.mktemp("report_regulators")
    sim = simulate_regulators(root / "sim", SIMULATION)
    tf = pd.read_csv(sim["tf"], sep="\t").rename(columns={"TF1": HTML_TF})
    tf.to_csv(sim["tf"], sep="\t", index=False)
    train_regulators(root / "model", TrainOptions(
        features=[sim["tf"], sim["mirna"]], targets=str(sim["targets"]), structure=[sim["structure"]],
        annotation=sim["annotation"], network=NetworkConfig(seeds=1, max_epochs=15), baselines=False))
    explain(root / "model", sim["de"], root / "explain")
    return {"root": root, "folder": root / "explain", "truth": sim["truth"].replace("TF1", HTML_TF)}


@pytest.fixture(scope="module")
def built(explained) -> Path:
    out = explained["root"] / "report"
    report(None, out, explain=explained["folder"], options=ReportOptions(title="regulators"))
    return out


def test_the_section_shows_each_sample_and_the_cohort(explained, built):
    folder = explained["folder"]
    summary = json.loads((built / "report_summary.json").read_text())
    assert list(summary["sections"]) == ["regulators"]  # an explain folder alone: no empty run sections
    assert summary["sections"]["regulators"]["available"]
    numbers = summary["regulators"]
    explain_summary = pd.read_csv(folder / SUMMARY_FILE, sep="\t")
    assert numbers["n_samples"] == 4 and numbers["q_threshold"] == 0.05
    assert numbers["median_heldout_spearman"] == pytest.approx(explain_summary["heldout_spearman"].median())
    stored = json.loads((folder / REPORT_FILE).read_text())
    assert numbers["agreement_between_samples"] == stored["agreement_between_samples"]
    per_sample = pd.read_csv(built / "tables" / "regulators_per_sample.tsv", sep="\t")
    merged = per_sample.merge(explain_summary, on="sample_id", suffixes=("", "_explain"))
    assert len(merged) == 4
    shown, stored = merged["heldout_spearman"].to_numpy(), merged["heldout_spearman_explain"].to_numpy()
    assert shown == pytest.approx(stored, rel=1e-5)
    assert per_sample["heldout_spearman"].is_monotonic_decreasing  # one group: best explained first
    # every sample's top 10 regulators (structure covariates left out), in rank order
    long = pd.read_parquet(folder / LONG_FILE)
    top = pd.read_csv(built / "tables" / "regulators_top.tsv", sep="\t")
    for sample, rows in top.groupby("sample_id"):
        expected = long[(long["sample_id"] == sample) & (long["kind"] == "regulator")].nsmallest(10, "rank")
        assert rows["feature"].tolist() == expected["feature"].tolist()
        assert rows["q_value"].to_numpy() == pytest.approx(expected["q_value"].to_numpy(), rel=1e-5)  # %.6g
    cohort = pd.read_csv(built / "tables" / "regulators_cohort.tsv", sep="\t")
    assert set(cohort["kind"]) == {"regulator"}
    assert set(cohort["feature"]) == set(long.loc[long["kind"] == "regulator", "feature"])
    html = _section(_html(built), "regulators")
    assert len(_pngs(html)) == 2  # per sample, the heatmap
    for sample in explain_summary["sample_id"]:
        assert f"<h3>{sample} (tested)</h3>" in html
    assert "not available" not in html


def test_the_planted_regulators_are_the_ones_shown(explained, built):
    """Each planted sample's significant regulators lead its table and are the planted ones."""
    truth = explained["truth"]
    top = pd.read_csv(built / "tables" / "regulators_top.tsv", sep="\t")
    planted = truth[truth["planted"]]
    for sample, rows in planted.groupby("sample_id"):
        shown = top[top["sample_id"] == sample]
        significant = shown[shown["q_value"] < 0.05]
        assert set(significant["feature"]) <= set(rows["feature"]), (sample, significant)
        assert len(significant) >= 1
        effect = rows.set_index("feature")["effect"]
        directions = significant.set_index("feature")["direction"]
        assert all((effect[f] > 0) == (d == "up") for f, d in directions.items())
    null = top[top["sample_id"] == "S4"]
    assert (null["q_value"] >= 0.05).all()


def test_regulator_names_are_escaped(built):
    html = _html(built)
    assert "<b>1</b>" not in html
    assert "TF&lt;b&gt;1&lt;/b&gt;&amp;" in html
    assert HTML_TF in set(pd.read_csv(built / "tables" / "regulators_cohort.tsv", sep="\t")["feature"])


def test_found_in_a_run_folder(explained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(explained["folder"], run / "explain")
    paths = resolve_paths(run=run)
    assert paths.explain == run / "explain"
    summary = report(run, tmp_path / "report")
    assert summary["sections"]["regulators"]["available"]
    assert not summary["sections"]["degs"]["available"]  # the run's own sections are listed too


def test_outputs_in_part(explained, built, tmp_path):
    folder = tmp_path / "explain"
    # the per-sample tables without regulators.parquet: the same top regulators
    shutil.copytree(explained["folder"], folder, ignore=shutil.ignore_patterns(LONG_FILE))
    report(None, tmp_path / "r1", explain=folder)
    full = pd.read_csv(built / "tables" / "regulators_top.tsv", sep="\t")
    part = pd.read_csv(tmp_path / "r1" / "tables" / "regulators_top.tsv", sep="\t")
    pd.testing.assert_frame_equal(part.sort_values(["sample_id", "rank"]).reset_index(drop=True),
                                  full.sort_values(["sample_id", "rank"]).reset_index(drop=True))
    # no per-sample tables, no cohort table: lines saying so, the summary still shown
    shutil.rmtree(folder / REGULATORS_DIR)
    (folder / COHORT_FILE).unlink()
    summary = report(None, tmp_path / "r2", explain=folder)
    html = _section(_html(tmp_path / "r2"), "regulators")
    assert summary["sections"]["regulators"]["available"]
    assert f"not available: {COHORT_FILE} not found" in html
    assert re.search(rf"not available: neither {LONG_FILE} nor {REGULATORS_DIR}/\*.tsv", html)
    # no summary.tsv: one line; a summary lacking its columns: an error naming the file
    (folder / SUMMARY_FILE).rename(folder / "other.tsv")
    summary = report(None, tmp_path / "r3", explain=folder)
    assert not summary["sections"]["regulators"]["available"]
    assert f"not available: {SUMMARY_FILE} not found in" in _html(tmp_path / "r3")
    (folder / SUMMARY_FILE).write_text("sample_id\tspearman\nS1\t0.3\n")
    with pytest.raises(InputError, match=r"summary.tsv: columns \['heldout_spearman', 'n_significant'\] are missing"):
        report(None, tmp_path / "r4", explain=folder)
    assert not (tmp_path / "r4").exists()


def test_volcano_samples_choose_the_tables(explained, tmp_path):
    summary = report(None, tmp_path / "r", explain=explained["folder"], options=ReportOptions(samples=["S2"]))
    html = _section(_html(tmp_path / "r"), "regulators")
    assert "<h3>S2 (tested)</h3>" in html and "<h3>S1 (tested)</h3>" not in html
    assert "chosen with --sample" in html and summary["sections"]["regulators"]["available"]


def test_cli(explained, tmp_path, runner):
    from nofone.cli.app import app

    out = tmp_path / "report"
    result = runner.invoke(app, ["report", "--explain", str(explained["folder"]), "--outdir", str(out)])
    assert result.exit_code == 0, result.output
    assert "regulators" in json.loads((out / "report_summary.json").read_text())["sections"]
    missing = tmp_path / "nope"
    result = runner.invoke(app, ["report", "--explain", str(missing), "--outdir", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "the output folder of `nofone explain`" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "r2").exists()
