"""`nofone demo` end to end: planted DE recovered, held-out normals quiet, tissues recovered.

The recall threshold is set against an oracle: the same exact test and BH, but with the
simulator's true NB means and dispersions. No method can beat the oracle; planted genes with a
small mean or a 2-fold change in an over-dispersed gene are undetectable at q < 0.01 even by it.
We require at least 80% of the oracle's recall, and an observed FDR within the 5% the issue asks
(the nominal level of the calls is 1%; model error in the closest normal costs a few points).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from nofone.io.dataset import Dataset
from nofone.simulate.atlas import build_gene_model, log_means
from nofone.simulate.config import SimulationConfig
from nofone.stats.multiple_testing import bh_adjust
from nofone.stats.nb_tests import equal_tail_midp

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from typer.testing import CliRunner

    from nofone.cli.app import app

    out = tmp_path_factory.mktemp("demo") / "demo"
    result = CliRunner().invoke(app, ["demo", "--outdir", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return out


def oracle_scores(out) -> dict:
    """Recall and FDR of the exact test given the true means and dispersions of the cases."""
    sim = out / "simulation"
    parameters = json.loads((sim / "simulation.json").read_text())["parameters"]
    config = SimulationConfig(**{k: v for k, v in parameters.items() if k in SimulationConfig.__dataclass_fields__})
    model = build_gene_model(config)
    latent = pd.read_csv(sim / "latent.tsv", sep="\t").set_index("sample_id")
    truth = pd.read_csv(sim / "truth.tsv", sep="\t")
    cases = sorted(truth["sample_id"].unique())
    data = Dataset(out / "data")
    chunk = data.read(cases)
    z = latent.loc[cases, [c for c in latent.columns if c.startswith("z")]].to_numpy()
    mean = np.exp(log_means(model, z, np.log(latent.loc[cases, "size_factor"].to_numpy())))
    order = [model.gene_ids.index(g) for g in data.gene_ids]
    mean, r = mean[:, order], model.nb_size[order]
    q = bh_adjust(equal_tail_midp(chunk.counts, mean, r), axis=1)
    lfc = np.log2((chunk.counts + 1) / (mean + 1))
    called = (q < 0.01) & (np.abs(lfc) > 1)
    planted = np.zeros_like(called)
    index = {g: i for i, g in enumerate(data.gene_ids)}
    for row in truth.itertuples():
        planted[cases.index(row.sample_id), index[row.gene_id]] = True
    return {"recall": (called & planted).sum() / planted.sum(), "fdr": (called & ~planted).sum() / called.sum()}


def test_demo_recovers_planted_genes(demo):
    report = json.loads((demo / "demo_report.json").read_text())
    ours = report["cases"]
    oracle = oracle_scores(demo)
    print(f"recall {ours['recall_abs_lfc_ge_1']:.3f} (oracle {oracle['recall']:.3f}), "
          f"observed FDR {ours['observed_fdr']:.3f} (oracle {oracle['fdr']:.3f})")
    assert ours["recall_abs_lfc_ge_1"] >= 0.8 * oracle["recall"]
    assert ours["observed_fdr"] <= 0.05
    assert ours["direction_correct"] >= 0.99


def test_demo_held_out_normals_are_quiet(demo):
    report = json.loads((demo / "demo_report.json").read_text())
    for group, values in report["negative_controls"].items():
        assert values["mean_de_genes"] <= 1.0, (group, values)
    summary = pd.read_csv(demo / "de" / "summary.tsv", sep="\t")
    assert len(summary) == 16 + 8 + 40  # cases, simulated held-out normals, the model's own held-out normals


def test_held_out_normals_and_cases_land_in_their_tissue_component(demo):
    training = pq.read_table(demo / "model" / "training_representations.parquet").to_pandas()
    train = training[training["split"] == "train"]
    majority = train.groupby("component")["tissue"].agg(lambda s: s.value_counts().index[0])
    purity_train = (train["component"].map(majority) == train["tissue"]).mean()
    reps = pq.read_table(demo / "representations" / "representations.parquet").to_pandas()
    tissue = Dataset(demo / "data").samples.set_index("sample_id")["tissue"]
    assigned = reps["component"].map(majority)
    accuracy = (assigned.to_numpy() == tissue.loc[reps["sample_id"]].to_numpy()).mean()
    print(f"tissue purity of components: training {purity_train:.3f}, new samples {accuracy:.3f}")
    assert purity_train >= 0.95
    assert accuracy >= 0.9


def test_demo_ends_with_the_report(demo):
    """The demo's report: every section, the DGD's and DESeq2's negative controls side by side."""
    summary = json.loads((demo / "report" / "report_summary.json").read_text())
    assert all(s["available"] for s in summary["sections"].values()), summary["sections"]
    negative = pd.read_csv(demo / "evaluation" / "negative_control_summary.tsv", sep="\t")
    assert {"dgd", "deseq2"} <= set(negative["method"])
    html = (demo / "report" / "report.html").read_text(encoding="utf-8")
    assert '<section id="evaluation">' in html and "negative_control_summary.tsv" in html
