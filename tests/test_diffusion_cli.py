"""`nofone perturb`, `nofone augment` and `nofone screen-gene-sets` on simulated data through the
real CLI: their outputs, and clear one-line errors (exit 2, nothing written) on bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import write
from typer.testing import CliRunner

from nofone.cli.app import app
from nofone.io.dataset import COUNTS_FILE, CountChunk, CountWriter, Dataset, write_tables
from nofone.models.training import TrainingData
from nofone.simulate import SimulationConfig
from nofone.simulate.memory import calibration_split, draw_normal_counts

N_GENES = 200


pytestmark = pytest.mark.usefixtures("one_thread")


def _dataset(folder, ids, counts, samples: dict, genes: pd.DataFrame):
    folder.mkdir(parents=True, exist_ok=True)
    with CountWriter(folder / COUNTS_FILE, counts.shape[1]) as writer:
        writer.write(CountChunk(list(ids), counts.astype(np.int64)))
    write_tables(folder, genes, pd.DataFrame({"sample_id": list(ids), **samples}))
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusion_cli")
    sim = draw_normal_counts(SimulationConfig(tissues=2, samples_per_tissue=40, genes=N_GENES, seed=5,
                                              heldout_per_tissue=6))
    genes = pd.DataFrame({"gene_id": [f"ENSG{i:05d}" for i in range(N_GENES)],
                          "gene_name": [f"SIM{i}" for i in range(N_GENES)]})
    keep, split, unseen = calibration_split(sim)
    data = TrainingData([sim.sample_ids[i] for i in keep], sim.counts[keep], split, sim.tissue[keep])
    # trained as a user trains it: `nofone train --model-type diffusion` on a dataset of normals
    _dataset(root / "normals", data.sample_ids, data.counts,
             {"condition": ["normal"] * len(keep), "tissue": list(data.tissue)}, genes)
    config = write(root / "diffusion.json", json.dumps({
        "model_type": "diffusion", "network": {"hidden": 16, "blocks": 1}, "bridge": {"t_star_grid": [300, 700]},
        "training": {"epochs": 10, "eval_every": 5, "test_fraction": 0.15}}))
    trained = CliRunner().invoke(app, ["train", "--model-type", "diffusion", "--config", str(config), "--input",
                                       str(root / "normals"), "--outdir", str(root / "model"), "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    rng = np.random.default_rng(0)
    shifted = rng.choice(np.flatnonzero(sim.mean[unseen].min(0) > 100), 8, replace=False)
    tumours = sim.counts[unseen].astype(np.float64)
    tumours[:, shifted] *= 4
    counts = np.vstack([sim.counts[unseen], np.round(tumours)])
    ids = [f"N{i}" for i in range(len(unseen))] + [f"T{i}" for i in range(len(unseen))]
    condition = ["normal"] * len(unseen) + ["tumour"] * len(unseen)
    tissue = list(sim.tissue[unseen]) * 2
    _dataset(root / "cases", ids, counts, {"condition": condition, "tissue": tissue}, genes)
    gmt = write(root / "sets.gmt", f"SHIFTED\tplanted\t{chr(9).join(f'SIM{g}' for g in shifted)}\tSIM0\tSIM1\n"
                                   f"QUIET\tnone\t{chr(9).join(f'SIM{g}' for g in range(150, 160))}\n")
    real_train = np.flatnonzero(split == "train")[:30]
    _dataset(root / "real_train", [data.sample_ids[i] for i in real_train], data.counts[real_train],
             {"tissue": list(data.tissue[real_train])}, genes)
    return root, shifted, gmt


def test_perturb_command_ranks_the_shifted_genes(setup, runner):
    root, shifted, gmt = setup
    result = runner.invoke(app, ["perturb", "-m", str(root / "model"), "-i", str(root / "cases"), "-o",
                                 str(root / "perturb"), "--gene-sets", str(gmt), "--value", "tumour"])
    assert result.exit_code == 0, result.output
    core = pd.read_csv(root / "perturb" / "core.tsv", sep="\t")
    assert core.head(len(shifted))["gene_name"].isin([f"SIM{g}" for g in shifted]).mean() >= 0.75
    sets = pd.read_csv(root / "perturb" / "sets.tsv", sep="\t").set_index("gene_set")
    # the quiet set: at most one of its 10 genes (13 held-out normals give the null)
    assert sets.loc["SHIFTED", "n_calibrated_perturbed"] >= 4 and sets.loc["QUIET", "n_calibrated_perturbed"] <= 1
    report = json.loads((root / "perturb" / "perturb_report.json").read_text())
    assert report["n_tumours"] == 6 and report["n_sets"] == 2
    genes = pd.read_csv(root / "perturb" / "genes.tsv", sep="\t")
    assert set(genes.columns) >= {"gene_set", "gene_id", "d_model", "mean_log2_fold_change", "rule_perturbed",
                                  "q_value", "calibrated_perturbed"}


def test_augment_command_writes_a_dataset_and_its_quality(setup, runner):
    root, _, _ = setup
    out = root / "synthetic"
    result = runner.invoke(app, ["augment", "-m", str(root / "model"), "-o", str(out), "--n-per-class", "8",
                                 "--real-test", str(root / "cases"), "--real-train", str(root / "real_train"),
                                 "--steps", "20", "--quality-seeds", "2"])
    assert result.exit_code == 0, result.output
    data = Dataset(out)
    assert data.n_samples == 16 and set(data.samples["class"]) == {"tissue01", "tissue02"}
    quality = pd.read_csv(out / "quality.tsv", sep="\t")
    assert len(quality) == 2 and quality["c2st_auroc"].between(0, 1).all()
    assert json.loads((out / "augment_report.json").read_text())["n_per_class"] == 8


def test_screen_command_finds_the_shifted_set(setup, runner):
    root, _, gmt = setup
    out = root / "screen"
    result = runner.invoke(app, ["screen-gene-sets", "-i", str(root / "cases"), "-o", str(out), "--gene-sets",
                                 str(gmt), "--embedding", "pca", "--n-random", "30"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "screen.tsv", sep="\t").set_index("gene_set")
    assert table.loc["SHIFTED", "silhouette_pca"] > table.loc["QUIET", "silhouette_pca"]
    assert table.loc["SHIFTED", "p_pca"] < 0.1
    assert (out / "screen.png").is_file() and (out / "random_sets.tsv").is_file()


@pytest.mark.parametrize("args, message", [
    (["perturb", "-m", "{root}/cases", "-i", "{root}/cases", "--value", "tumour"], "config.json"),
    (["perturb", "-m", "{root}/model", "-i", "{root}/cases", "--column", "stage"], "no 'stage' column"),
    (["perturb", "-m", "{root}/model", "-i", "{root}/cases", "--value", "metastasis"], "no sample has condition"),
    (["perturb", "-m", "{root}/model", "-i", "{root}/cases", "--gene-sets", "{root}/empty.gmt"], "no gene set"),
    (["augment", "-m", "{root}/model", "--class", "liver"], "unknown class"),
    (["augment", "-m", "{root}/model", "--real-test", "{root}/cases", "--class-column", "organ"], "no 'organ'"),
    (["screen-gene-sets", "-i", "{root}/cases", "--gene-sets", "{root}/sets.gmt", "--embedding", "tsne"],
     "--embedding"),
    (["screen-gene-sets", "-i", "{root}/cases", "--gene-sets", "{root}/sets.gmt", "--normal", "healthy"],
     "no sample has condition"),
])
def test_bad_input_is_one_clear_line_and_writes_nothing(setup, runner, args, message):
    root, _, _ = setup
    write(root / "empty.gmt", "NONE\tx\tNOT_A_GENE\tALSO_NOT\tNOR_THIS\n")
    out = root / "bad_out"
    result = runner.invoke(app, [a.format(root=root) for a in args] + ["-o", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()
