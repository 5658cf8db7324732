"""`nofone run` with regulator features: a regulator model trained on the run's normals, every
tested sample explained after DE (RUN/explain), and the report's regulators section from it.

The simulated atlas (3 tissues x 25 normals, 400 genes, 3 cases with a quarter of their genes
planted DE) gets a regulator table in which PLANTED_UP binds case001's planted up genes,
PLANTED_DOWN its planted down genes, and 9 more TFs bind at random. The run explains case001's
profile with the planted pair on top, significant and in their direction (~35 s).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report import _html, _section

from nofone.cli.app import app
from nofone.regulators.outputs import LONG_FILE, SUMMARY_FILE
from nofone.simulate.config import SimulationConfig
from nofone.simulate.write import simulate

pytestmark = pytest.mark.usefixtures("one_thread")

PLANTED = {"PLANTED_UP": "up", "PLANTED_DOWN": "down"}
CONFIG = {"latent_dim": 4, "hidden": [16, 32], "gmm": {"n_components": 4},
          "training": {"epochs": 8, "batch_size": 16, "eval_every": 2, "checkpoint_every": 100}}


def simulated_run_inputs(root: Path) -> dict:
    """The atlas, an annotation with chromosomes and a TF table keyed by symbol."""
    sim = root / "sim"
    simulate(sim, SimulationConfig(tissues=3, samples_per_tissue=25, genes=400, cases=3, de_fraction=0.25, seed=1))
    rng = np.random.default_rng(0)
    genes = pd.read_csv(sim / "genes.tsv", sep="\t")
    genes["chromosome"] = rng.choice([str(c) for c in range(1, 23)], len(genes))
    genes.to_csv(root / "annotation.tsv", sep="\t", index=False)
    truth = pd.read_csv(sim / "truth.tsv", sep="\t")
    case = truth[truth["sample_id"] == "case001"]
    peaks = {name: np.where(genes["gene_id"].isin(case.loc[np.sign(case["log2_fold_change"]) == sign, "gene_id"]),
                            rng.poisson(4, len(genes)) + 1, 0)
             for name, sign in (("PLANTED_UP", 1), ("PLANTED_DOWN", -1))}
    for j in range(9):
        peaks[f"TF{j + 1}"] = rng.poisson(2, len(genes)) * (rng.random(len(genes)) < 0.3)
    pd.DataFrame({"gene_name": genes["gene_name"], **peaks}).to_csv(root / "tf.tsv", sep="\t", index=False)
    (root / "config.json").write_text(json.dumps(CONFIG))
    return {"sheet": sim / "samplesheet.csv", "annotation": root / "annotation.tsv", "tf": root / "tf.tsv",
            "config": root / "config.json"}


def run_args(inputs: dict, outdir: Path, *extra: str) -> list[str]:
    return ["run", "--samplesheet", str(inputs["sheet"]), "--outdir", str(outdir), "--config", str(inputs["config"]),
            "--annotation", str(inputs["annotation"]), "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    return simulated_run_inputs(tmp_path_factory.mktemp("run_regulators"))


@pytest.fixture(scope="module")
def trained_run(inputs, tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("run") / "run"
    result = CliRunner().invoke(app, run_args(inputs, out, "--regulator-features", str(inputs["tf"]),
                                              "--regulator-seeds", "1"))
    assert result.exit_code == 0, result.output
    return out


def test_run_trains_a_regulator_model_and_explains_every_tested_sample(trained_run, inputs):
    summary = json.loads((trained_run / "run_summary.json").read_text())
    found = summary["regulators"]
    assert found["trained_here"] and Path(found["model"]) == trained_run / "regulators"
    train_report = json.loads((trained_run / "regulators" / "train_report.json").read_text())
    assert train_report["targets"]["kind"] == "tissue-de"
    assert sorted(train_report["targets"]["samples_per_tissue"]) == ["tissue01", "tissue02", "tissue03"]
    tested = pd.read_csv(trained_run / "de" / "summary.tsv", sep="\t")["sample_id"]
    explained = pd.read_csv(trained_run / "explain" / SUMMARY_FILE, sep="\t")
    assert sorted(explained["sample_id"]) == sorted(tested) and found["n_samples"] == len(tested)
    long = pd.read_parquet(trained_run / "explain" / LONG_FILE)
    regulators = long[long["kind"] == "regulator"]
    case = regulators[regulators["sample_id"] == "case001"].set_index("feature")
    assert set(case.nsmallest(2, "rank").index) == set(PLANTED)
    for name, direction in PLANTED.items():
        assert case.loc[name, "q_value"] < 0.05 and case.loc[name, "direction"] == direction, case.loc[name]
    others = regulators[~regulators["feature"].isin(list(PLANTED))]
    assert (others["q_value"] < 0.05).mean() <= 0.1


def test_the_run_report_shows_the_regulators_by_group(trained_run, tmp_path):
    from nofone.report.build import report

    summary = report(trained_run, tmp_path / "report")
    assert summary["sections"]["regulators"]["available"]
    per_sample = pd.read_csv(tmp_path / "report" / "tables" / "regulators_per_sample.tsv", sep="\t")
    assert set(per_sample["group"]) == {"case", "held-out normal", "heldout_normal"}
    assert per_sample["group"].iloc[0] != "case"  # normals first, as in every table of the report
    html = _section(_html(tmp_path / "report"), "regulators")
    assert "<h3>case001 (case)</h3>" in html
    assert html.index("<h3>case00") < html.index("<h3>tissue")  # cases' tables before the normals'


def test_run_with_a_trained_regulator_model(trained_run, inputs, tmp_path, runner):
    out = tmp_path / "again"
    result = runner.invoke(app, run_args(inputs, out, "--model", str(trained_run / "model"), "--regulators",
                                         str(trained_run / "regulators")))
    assert result.exit_code == 0, result.output
    found = json.loads((out / "run_summary.json").read_text())["regulators"]
    assert not found["trained_here"] and not (out / "regulators").exists()
    first = pd.read_parquet(trained_run / "explain" / LONG_FILE)
    again = pd.read_parquet(out / "explain" / LONG_FILE)
    case = ["sample_id", "feature"]
    merged = first.merge(again, on=case, suffixes=("", "_again"))
    assert len(merged) == len(first)
    assert np.allclose(merged["z"], merged["z_again"], atol=1e-6)  # same model, same DE: the same answer


def test_bad_regulator_options_fail_before_the_run(inputs, tmp_path, runner):
    cases = [
        (["--regulators", str(inputs["tf"]), "--regulator-features", str(inputs["tf"])], "exclude each other"),
        (["--regulator-features", str(tmp_path / "none.tsv")], "none.tsv does not exist"),
        (["--regulator-structure", str(inputs["tf"])], "--regulator-structure needs --regulator-features"),
        (["--regulators", str(inputs["sheet"].parent)], "is not a regulator model"),  # the simulation's folder
    ]
    for i, (extra, message) in enumerate(cases):
        out = tmp_path / f"r{i}"
        result = runner.invoke(app, run_args(inputs, out, *extra))
        assert result.exit_code == 2 and message in result.output, (extra, result.output)
        assert "Traceback" not in result.output and not out.exists()
    args = run_args(inputs, tmp_path / "r9", "--regulator-features", str(inputs["tf"]))
    args.remove("--annotation")
    args.remove(str(inputs["annotation"]))
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "needs an annotation with each gene's chromosome" in result.output
