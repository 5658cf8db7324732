"""`nofone pathways` end to end: a model with a local null, de output, a GMT file; its outputs, a
planted set shift found, and one-line errors for bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from test_represent_de import random_model, write_dataset, write_representations

from nofone.cli.app import app
from nofone.models.dgd.model import DGD
from nofone.stats.local_null import fit_local_null, save_local_null
from nofone.steps.common import model_fingerprint
from nofone.steps.de import DEOptions, differential_expression
from nofone.steps.pathways import PATHWAYS_FILE, REPORT_FILE, SUMMARY_FILE

N_GENES, N_CAL = 300, 80
PLANTED = "PLANTED_SET"


def _draw(model: DGD, z: torch.Tensor, scale: np.ndarray, rng, fold: np.ndarray | None = None):
    with torch.no_grad():
        mean = (model.relative_means(z).double() * torch.as_tensor(scale)[:, None]).numpy()
    mean = mean if fold is None else mean * fold
    r = model.dispersion.double().numpy()
    return rng.negative_binomial(r, r / (r + mean)), mean


@pytest.fixture(scope="module")
def made(tmp_path_factory, one_torch_thread):
    """A model whose calibration normals sit off its closest normals as real normals do (their
    true latent point is not the one the model finds), de on 6 samples, sample S0 with a 2-fold
    rise in 30 genes, and a GMT with that set, 8 others and one too small to test."""
    root = tmp_path_factory.mktemp("pathways")
    base = random_model(seed=3, n_genes=N_GENES)
    genes = pd.DataFrame({"gene_id": base.gene_ids, "gene_name": [f"G{i}" for i in range(N_GENES)]})
    model = DGD(base.module, genes)
    rng = np.random.default_rng(1)
    comp = torch.arange(N_CAL + 6) % model.n_components
    found = model.module.gmm.means[comp] + 0.3 * torch.randn(N_CAL + 6, model.config.latent_dim,
                                                               generator=torch.Generator().manual_seed(2))
    true = found + 0.15 * torch.randn(found.shape, generator=torch.Generator().manual_seed(3))
    scale = np.full(N_CAL + 6, 2000.0)
    with torch.no_grad():
        closest = (model.relative_means(found).double() * torch.as_tensor(scale)[:, None]).numpy()
    r = model.dispersion.double().numpy()
    expressed = np.flatnonzero(closest.min(0) > 20)
    planted = np.sort(rng.choice(expressed, 30, replace=False))
    fold = np.ones((N_CAL + 6, N_GENES))
    fold[N_CAL, planted] = 2.0
    x, _ = _draw(model, true, scale, rng, fold)
    null = fit_local_null(x[:N_CAL], closest[:N_CAL], np.broadcast_to(r, closest[:N_CAL].shape))
    folder = root / "model"
    folder.mkdir()
    save_local_null(null, folder, "heldout")
    model.save(folder)
    ids = [f"S{i}" for i in range(6)]
    write_dataset(root / "data", x[N_CAL:], model.gene_ids, ids)
    write_representations(root / "reps", model, ids, found[N_CAL:], scale[N_CAL:], model_fingerprint(folder))
    differential_expression(folder, root / "reps", root / "data", root / "de",
                            DEOptions(null="nb", device="cpu", write_tsv=False))
    others = [rng.choice(N_GENES, 20, replace=False) for _ in range(8)]
    lines = [f"{PLANTED}\thttp://x\t" + "\t".join(f"G{g}" for g in planted)]
    lines += [f"SET_{i}\tna\t" + "\t".join(f"g{g}" for g in genes_) for i, genes_ in enumerate(others)]  # any case
    lines += ["TINY\tna\tG1\tG2\tG3\tNOT_A_GENE"]
    (root / "sets.gmt").write_text("\n".join(lines) + "\n")
    return {"root": root, "model": folder, "planted": planted}


def _args(made, **over):
    args = {"--de": made["root"] / "de", "--gene-sets": made["root"] / "sets.gmt", "--model": made["model"],
            "--outdir": made["root"] / "out"} | over
    return [str(v) for kv in args.items() for v in kv]


def test_pathways_writes_calls_per_sample_and_finds_the_planted_set(made, runner):
    result = runner.invoke(app, ["pathways", *_args(made)])
    assert result.exit_code == 0, result.output
    out = made["root"] / "out"
    table = pq.read_table(out / PATHWAYS_FILE).to_pandas()
    assert sorted(table["sample_id"].unique()) == [f"S{i}" for i in range(6)]
    assert set(table["gene_set"]) == {PLANTED, *(f"SET_{i}" for i in range(8))}
    planted = table[table["gene_set"] == PLANTED].set_index("sample_id")
    assert planted.loc["S0", "called"] and planted.loc["S0", "direction"] == "up"
    assert planted.loc["S0", "q_value"] < 0.01
    assert planted.loc["S0", "mean_log2_fold_change"] > 0.5
    assert planted.loc["S0", "n_genes"] == planted.loc["S0", "n_listed"] == 30
    leading = planted.loc["S0", "leading_genes"].split(",")
    assert 1 <= len(leading) <= 5 and {f"G{g}" for g in made["planted"]} >= set(leading)
    # the other samples: no rise of the set
    assert not table[(table["sample_id"] != "S0")]["called"].any()
    # q: BH within each sample
    from nofone.stats.multiple_testing import bh_adjust

    for _, part in table.groupby("sample_id"):
        np.testing.assert_allclose(part["q_value"], bh_adjust(part["p_value"].to_numpy()))
    per_sample = pd.read_csv(out / "samples" / "S0.tsv", sep="\t")
    assert per_sample.iloc[0]["gene_set"] == PLANTED  # sorted by p
    summary = pd.read_csv(out / SUMMARY_FILE, sep="\t").set_index("sample_id")
    assert summary.loc["S0", "n_called"] >= 1 and summary.loc["S0", "n_up"] >= 1
    assert summary.loc["S0", "top_sets"].split(",")[0] == PLANTED
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["skipped_sets"] == {"TINY": 3} and report["min_genes"] == 10
    assert report["null"] == {"source": "heldout", "n_calibration_normals": N_CAL}
    assert report["model_fingerprint"] == model_fingerprint(made["model"])


def test_the_report_shows_the_called_sets(made, runner):
    out = made["root"] / "out"
    if not (out / PATHWAYS_FILE).is_file():
        assert runner.invoke(app, ["pathways", *_args(made)]).exit_code == 0
    report_dir = made["root"] / "report"
    result = runner.invoke(app, ["report", "--model", str(made["model"]), "--de", str(made["root"] / "de"),
                                 "--pathways", str(out), "--outdir", str(report_dir)])
    assert result.exit_code == 0, result.output
    summary = json.loads((report_dir / "report_summary.json").read_text())
    assert summary["sections"]["pathways"]["available"]
    called = pd.read_csv(report_dir / "tables" / "pathways_called.tsv", sep="\t")
    assert (called["sample_id"] == "S0").any() and PLANTED in set(called["gene_set"])
    assert PLANTED in (report_dir / "report.html").read_text()


def _fails(runner, args, *message):
    result = runner.invoke(app, ["pathways", *args])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "Traceback" not in text and all(m in text for m in message), text
    return text


def test_bad_gene_set_files_are_one_line_errors(made, runner, tmp_path):
    empty = tmp_path / "empty.gmt"
    empty.write_text("")
    _fails(runner, _args(made, **{"--gene-sets": empty, "--outdir": tmp_path / "o1"}), "empty.gmt", "no gene sets")
    bad = tmp_path / "bad.gmt"
    bad.write_text("A\tdesc\tG1\tG2\nB_without_tabs G1 G2\n")
    _fails(runner, _args(made, **{"--gene-sets": bad, "--outdir": tmp_path / "o2"}), "bad.gmt", "line 2")
    small = tmp_path / "small.gmt"
    small.write_text("A\tdesc\tG1\tG2\n")
    _fails(runner, _args(made, **{"--gene-sets": small, "--outdir": tmp_path / "o3"}), "10 or more")
    _fails(runner, _args(made, **{"--gene-sets": tmp_path / "none.gmt", "--outdir": tmp_path / "o4"}), "none.gmt")
    assert not any(p.name.startswith("o") for p in tmp_path.iterdir())  # no half-written output


def test_de_of_another_model_and_a_model_without_a_local_null_are_refused(made, runner, tmp_path):
    other = tmp_path / "other"
    random_model(seed=9, n_genes=N_GENES).save(other)  # no null.safetensors
    _fails(runner, _args(made, **{"--model": other, "--outdir": tmp_path / "o1"}), "no local null")
    save_local_null(fit_local_null(*_calibration(other)), other, "heldout")
    random_model(seed=9, n_genes=N_GENES).save(other)  # the checksums now list the null
    _fails(runner, _args(made, **{"--model": other, "--outdir": tmp_path / "o2"}), "another model")
    _fails(runner, _args(made, **{"--de": tmp_path, "--outdir": tmp_path / "o3"}), "de.parquet is missing")


def _calibration(folder):
    model = DGD.load(folder)
    rng = np.random.default_rng(0)
    z = model.module.gmm.means[torch.arange(20) % model.n_components]
    x, mean = _draw(model, z, np.full(20, 2000.0), rng)
    return x, mean, np.broadcast_to(model.dispersion.double().numpy(), mean.shape)
