"""`nofone regulators train` and `nofone explain` end to end on simulated regulators with planted
effects: the planted regulators come out on top with q < 0.05, the unplanted ones stay at the
nominal rate, and the outputs, the model artifact and the targets are what they claim."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nofone.cli.app import app
from nofone.regulators.explain_step import COHORT_FILE, LONG_FILE, REPORT_FILE, SUMMARY_FILE
from nofone.regulators.model import MODEL_TYPE, RegulatorModel
from nofone.regulators.simulate import RegulatorSimulation, simulate_regulators

PLANTED, NULL = 4, 3
SIMULATION = RegulatorSimulation(genes=3000, tfs=40, mirnas=30, planted_samples=PLANTED, null_samples=NULL,
                                 planted_per_sample=3, seed=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train_args(sim: dict, outdir, *extra: str) -> list[str]:
    return ["regulators", "train", "--features", f"{sim['tf']},{sim['mirna']}", "--structure", str(sim["structure"]),
            "--targets", str(sim["targets"]), "--annotation", str(sim["annotation"]), "--outdir", str(outdir),
            "--seeds", "2", "--max-epochs", "40", *extra]


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("regulators")
    sim = simulate_regulators(root / "sim", SIMULATION)
    runner = CliRunner()
    result = runner.invoke(app, train_args(sim, root / "model", "--no-baselines"))
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["explain", "--regulators", str(root / "model"), "--de", str(sim["de"]),
                                 "--outdir", str(root / "explain")])
    assert result.exit_code == 0, result.output
    long = pd.read_parquet(root / "explain" / LONG_FILE)
    truth = sim["truth"]
    long = long.merge(truth, on=["sample_id", "feature"], how="left")
    return {"root": root, "sim": sim, "long": long, "truth": truth}


def test_planted_regulators_come_out_on_top_with_small_q(explained):
    long = explained["long"]
    regulators = long[long["kind"] == "regulator"]
    planted = regulators[regulators["planted"]]
    assert (planted["q_value"] < 0.05).mean() >= 0.8, planted[["sample_id", "feature", "rank", "q_value"]]
    for sample, rows in regulators.groupby("sample_id"):
        n_planted = int(rows["planted"].sum())
        if n_planted:
            top = rows.nsmallest(n_planted, "rank")
            assert top["planted"].sum() >= n_planted - 1, (sample, top[["feature", "planted", "q_value"]])
    # the direction is the planted effect's sign
    significant = planted[planted["q_value"] < 0.05]
    assert (np.sign(significant["mean_attribution"]) == np.sign(significant["effect"])).all()


def test_unplanted_regulators_stay_at_the_nominal_rate(explained):
    """Over about 450 unplanted (sample, regulator) tests, 3 samples of them pure noise."""
    long = explained["long"]
    unplanted = long[(long["kind"] == "regulator") & ~long["planted"].astype(bool)]
    assert len(unplanted) > 400
    rate = (unplanted["p_value"] < 0.05).mean()
    assert rate <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / len(unplanted)), rate
    discoveries = long[(long["kind"] == "regulator") & (long["q_value"] < 0.05)]
    assert (~discoveries["planted"].astype(bool)).mean() <= 0.1  # the false discovery proportion
    null_samples = [f"S{PLANTED + i + 1}" for i in range(NULL)]
    assert (unplanted[unplanted["sample_id"].isin(null_samples)]["q_value"] < 0.05).sum() <= 1


def test_explain_outputs_summary_cohort_and_knockouts(explained):
    out = explained["root"] / "explain"
    summary = pd.read_csv(out / SUMMARY_FILE, sep="\t").set_index("sample_id")
    samples = explained["sim"]["samples"]
    assert summary.index.tolist() == samples
    for sample in samples:
        table = pd.read_csv(out / "regulators" / f"{sample}.tsv", sep="\t")
        assert table["rank"].tolist() == list(range(1, len(table) + 1))
        assert table["p_value"].is_monotonic_increasing
        assert (out / "knockouts" / f"{sample}.tsv").is_file()
    planted_rows, null_rows = summary.iloc[:PLANTED], summary.iloc[PLANTED:]
    assert planted_rows["heldout_spearman"].min() > max(0.05, null_rows["heldout_spearman"].max())
    assert (null_rows["heldout_spearman"].abs() < 0.1).all()
    assert (summary["deeplift_completeness_max_abs"] < 1e-4).all()
    assert (summary["deeplift_vs_linear_max_abs"] < 1e-4).all()
    assert (summary["ig_spearman"] > 0.9).all()
    assert (summary["mean_weight_cannot_call_down"] < summary["mean_weight_can_call_down"]).all()
    cohort = pd.read_csv(out / COHORT_FILE, sep="\t")
    assert len(cohort) == len(RegulatorModel.load(explained["root"] / "model").features)
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["n_samples"] == len(samples) and "mean_spearman_z" in report["agreement_between_samples"]
    # knocking out a regulator that raised its targets lowers their prediction
    long = explained["long"]
    up = long[long["planted"] & (long["effect"] > 0) & (long["q_value"] < 0.05)].iloc[0]
    assert up["knockout_mean_change"] < 0
    genes = pd.read_csv(out / "knockouts" / f"{up['sample_id']}.tsv", sep="\t")
    assert set(genes["feature"]) >= {up["feature"]}
    assert (genes.loc[genes["feature"] == up["feature"], "binding"] > 0).all()


def test_regulator_model_artifact_round_trip(explained):
    folder = explained["root"] / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == MODEL_TYPE and config["n_seeds"] == 2
    model = RegulatorModel.load(folder)
    info = model.genes
    assert set(info["split"]) == {"train", "validation", "test"}
    assert (info.loc[info["split"] == "test", "chromosome"] == "1").all()
    assert not (info.loc[info["split"] != "test", "chromosome"] == "1").any()
    # predictions of the saved model equal what training reported on the test genes
    test = np.flatnonzero(info["split"].to_numpy() == "test")
    targets = pd.read_csv(explained["sim"]["targets"], sep="\t").set_index("gene_id").loc[info["gene_id"].iloc[test]]
    performance = pd.read_csv(folder / "performance.tsv", sep="\t").set_index("target")
    from scipy.stats import spearmanr

    predicted = model.predict(test)
    for t, name in enumerate(model.target_names):
        assert spearmanr(predicted[:, t], targets[name]).statistic == pytest.approx(
            performance.loc[name, "spearman"], abs=1e-5)
    assert (performance["spearman"] > 0.3).all()
    # reference: no binding for regulators, the median for structure
    features = model.features.set_index("feature")
    assert (features.loc[features["kind"] == "regulator", "reference"] == 0).all()
    assert features.loc["tr_length", "reference"] == pytest.approx(
        np.median(pd.read_csv(explained["sim"]["structure"], sep="\t").set_index("gene_id").loc[
            info["gene_id"][info["split"] == "train"], "tr_length"]))
    attribution = pd.read_csv(folder / "attribution.tsv", sep="\t")
    assert len(attribution) == len(model.target_names) * model.n_features
    report = json.loads((folder / "train_report.json").read_text())
    assert report["attribution_checks"]["completeness_max_abs"] < 1e-4
    # a tampered weight file is refused
    weights = folder / "weights.safetensors"
    original = weights.read_bytes()
    try:
        weights.write_bytes(original[:-8] + b"\x00" * 8)
        with pytest.raises(Exception, match="checksum"):
            RegulatorModel.load(folder)
    finally:
        weights.write_bytes(original)


def test_the_tissue_regulators_are_what_the_tissue_model_attributes(explained):
    """The refit on held-out chr1 genes finds the regulators that drive each simulated tissue."""
    attribution = pd.read_csv(explained["root"] / "model" / "attribution.tsv", sep="\t")
    top = attribution[attribution["kind"] == "regulator"].sort_values("p_value").groupby("target").head(3)
    assert (top.groupby("target")["q_value"].min() < 0.05).mean() >= 0.5


def test_baselines_are_fitted_on_the_same_split(tmp_path):
    from nofone.regulators.network import NetworkConfig
    from nofone.regulators.train import TrainOptions, train_regulators

    sim = simulate_regulators(tmp_path / "sim", RegulatorSimulation(genes=1200, tfs=12, mirnas=8, tissues=2, seed=2))
    report = train_regulators(tmp_path / "model", TrainOptions(
        features=[sim["tf"], sim["mirna"]], structure=[sim["structure"]], targets=str(sim["targets"]),
        annotation=sim["annotation"], network=NetworkConfig(seeds=1, max_epochs=15)))
    performance = pd.read_csv(tmp_path / "model" / "performance.tsv", sep="\t")
    assert set(performance["method"]) == {"decode", "ridge", "boosted_trees"}
    assert performance.groupby("method")["n_genes"].nunique().eq(1).all()
    assert (performance["spearman"] > 0.2).all()
    assert set(report["baseline_settings"]) == {"ridge_alpha", "boosted_trees"}


@pytest.mark.slow
def test_false_positive_rate_over_several_simulations(tmp_path):
    """Not one lucky seed: three more simulations, unplanted p < 0.05 at the nominal rate."""
    from nofone.regulators.explain import ExplainContext, ExplainOptions, explain_profile
    from nofone.regulators.network import NetworkConfig
    from nofone.regulators.profiles import LFC, iter_profiles, profile_weights
    from nofone.regulators.train import TrainOptions, train_regulators

    unplanted, planted_q = [], []
    for seed in (11, 12, 13):
        sim = simulate_regulators(tmp_path / f"sim{seed}", RegulatorSimulation(seed=seed, null_samples=2))
        train_regulators(tmp_path / f"m{seed}", TrainOptions(
            features=[sim["tf"], sim["mirna"]], structure=[sim["structure"]], targets=str(sim["targets"]),
            annotation=sim["annotation"], network=NetworkConfig(seeds=1, max_epochs=40), baselines=False))
        context = ExplainContext(RegulatorModel.load(tmp_path / f"m{seed}"), ExplainOptions(checks=False))
        truth = sim["truth"].set_index(["sample_id", "feature"])["planted"]
        for profile in iter_profiles(sim["de"]):
            weights, _ = profile_weights(profile.genes)
            table = explain_profile(context, profile.genes, profile.genes[LFC].to_numpy(), weights,
                                    profile.sample_id)["regulators"]
            table = table[table["kind"] == "regulator"]
            is_planted = truth.loc[profile.sample_id].reindex(table["feature"]).to_numpy()
            unplanted.append(table.loc[~is_planted, "p_value"].to_numpy())
            planted_q.append(table.loc[is_planted, "q_value"].to_numpy())
    p = np.concatenate(unplanted)
    assert (p < 0.05).mean() <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / len(p))
    assert (np.concatenate(planted_q) < 0.05).mean() >= 0.75


def test_rankings_are_stable_over_the_seeds_trunks(explained):
    from nofone.regulators.explain import ExplainContext, ExplainOptions, explain_profile
    from nofone.regulators.profiles import LFC, iter_profiles, profile_weights

    context = ExplainContext(RegulatorModel.load(explained["root"] / "model"),
                             ExplainOptions(stability=True, checks=False, knockout_top=0))
    profile = next(iter_profiles(explained["sim"]["de"], ["S1"]))
    weights, _ = profile_weights(profile.genes)
    summary = explain_profile(context, profile.genes, profile.genes[LFC].to_numpy(), weights, "S1")["summary"]
    assert summary["seed_stability_spearman"] > 0.5
