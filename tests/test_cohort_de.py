"""`nofone cohort-de`: generative log2 fold changes on a simulated cohort with planted
differences, their intervals, the covariate contrast, the outputs, enrichment, bad inputs and the
Nextflow module's command lines."""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, simulate_two_group_cohort, write

from nofone.errors import InputError
from nofone.models.nbvae.model import NBVAE
from nofone.stats.contrast import contrast_weights, generative_lfc
from nofone.stats.projection import principal_plane
from nofone.steps.cohort_de import LATENT_FILE, REPORT_FILE, RESULTS_FILE, parse_contrast
from nofone.steps.common import load_model

N_GENES = 500
PER_CELL = 6  # samples per (cell type, group)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models train fastest on one thread (see tests/test_nbvae.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def simulate_cohort(folder: Path, seed: int = 0) -> pd.DataFrame:
    """Two cell types x two groups (ctrl, trt), PER_CELL samples each (see conftest)."""
    return simulate_two_group_cohort(folder, N_GENES, PER_CELL, {"A": "A", "B": "B"}, seed=seed)


def _plain(output: str) -> str:
    return re.sub(r"[│╭╮╰╯─\s]+", " ", output)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    truth = simulate_cohort(root / "data")
    # gene sets over the simulated symbols: the planted up genes, the planted down genes, noise
    up = truth.loc[truth["lfc"] > 0, "gene_name"].tolist()
    down = truth.loc[truth["lfc"] < 0, "gene_name"].tolist()
    flat = truth.loc[truth["lfc"] == 0, "gene_name"].tolist()
    gmt = write(root / "sets.gmt", f"PLANTED_UP\tx\t{chr(9).join(up)}\nPLANTED_DOWN\tx\t{chr(9).join(down)}\n"
                                   f"FLAT\tx\t{chr(9).join(flat[:40])}\n")
    return root, truth, gmt


@pytest.fixture(scope="module")
def result(cohort, monkeypatch_module):
    from typer.testing import CliRunner

    from nofone.cli.app import app

    root, _, gmt = cohort
    pytest.importorskip("gseapy")

    def no_network(*args, **kwargs):
        raise AssertionError("nofone must not reach the network")

    monkeypatch_module.setattr(socket.socket, "connect", no_network)
    args = ["cohort-de", "--input", str(root / "data"), "--outdir", str(root / "out"), "--group", "group",
            "--contrast", "trt,ctrl", "--covariate", "celltype", "--samples", "100", "--device", "cpu",
            "--gene-sets", str(gmt), "--permutations", "100", "--color-by", "depth"]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    return root / "out"


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_generative_lfc_recovers_the_planted_differences(cohort, result):
    _, truth, _ = cohort
    table = pd.read_csv(result / RESULTS_FILE, sep="\t").set_index("gene_id")
    lfc = table["log2_fold_change"].reindex(truth["gene_id"]).to_numpy()
    planted = truth["lfc"].to_numpy()
    pearson = np.corrcoef(lfc, planted)[0, 1]
    big = np.abs(planted) >= 1
    print(f"generative LFC vs planted: Pearson {pearson:.3f}; mean |error| {np.mean(np.abs(lfc - planted)):.3f}")
    assert pearson >= 0.95
    assert np.mean(np.sign(lfc[big]) == np.sign(planted[big])) >= 0.98
    assert np.median(np.abs(lfc[~big])) < 0.25


def test_intervals(cohort, result):
    """The replicate interval covers the planted LFC about as often as it says; the posterior
    interval only carries the latent uncertainty, so it is narrow and covers the truth far less
    often (documented, reported here)."""
    _, truth, _ = cohort
    table = pd.read_csv(result / RESULTS_FILE, sep="\t").set_index("gene_id").loc[truth["gene_id"]]
    planted = truth["lfc"].to_numpy()
    lo, hi = table["ci_low"].to_numpy(), table["ci_high"].to_numpy()
    rlo, rhi = table["ci_low_replicates"].to_numpy(), table["ci_high_replicates"].to_numpy()
    assert (lo <= hi).all() and (rlo < rhi).all()
    assert (rlo <= lo + 1e-9).mean() > 0.99 and (rhi >= hi - 1e-9).mean() > 0.99, "replicate interval is wider"
    point = table["log2_fold_change"].to_numpy()
    assert np.mean((lo <= point) & (point <= hi)) >= 0.95
    replicate = np.mean((rlo <= planted) & (planted <= rhi))
    posterior = np.mean((lo <= planted) & (planted <= hi))
    print(f"coverage of the planted LFC: replicate interval {replicate:.3f}, posterior interval {posterior:.3f}; "
          f"median widths {np.median(rhi - rlo):.3f} and {np.median(hi - lo):.4f}")
    assert replicate >= 0.8
    assert posterior < replicate


def test_outputs_report_and_model(cohort, result):
    table = pd.read_csv(result / RESULTS_FILE, sep="\t")
    assert list(table.columns[:5]) == ["gene_id", "gene_name", "log2_fold_change", "ci_low", "ci_high"]
    assert {"deseq2_log2FoldChange", "deseq2_padj", "log2_expression_trt", "log2_expression_ctrl"} <= set(table)
    report = json.loads((result / REPORT_FILE).read_text())
    assert report["contrast"]["level"] == "trt" and report["contrast"]["covariates"] == ["celltype"]
    assert [c["used"] for c in report["contrast"]["cells"]] == [True, True]
    assert report["deseq2"]["pearson"] > 0.9 and report["deseq2"]["spearman"] > 0.8
    assert report["samples"]["n"] == 4 * PER_CELL and report["genes"]["n_modelled"] <= N_GENES
    latent = pd.read_csv(result / LATENT_FILE, sep="\t")
    assert {"sample_id", "group", "celltype", "depth", "plot_x", "plot_y", "z1", "z10"} <= set(latent)
    assert (result / "latent.png").stat().st_size > 5000
    model = load_model(result / "model")
    assert isinstance(model, NBVAE) and len(model.gene_ids) == len(table)
    enrichment = pd.read_csv(result / "enrichment_prerank.tsv", sep="\t")
    nbvae = enrichment[enrichment["ranking"] == "nbvae"].set_index("term")
    assert nbvae.loc["PLANTED_UP", "nes"] > 0 > nbvae.loc["PLANTED_DOWN", "nes"]
    assert nbvae.loc["PLANTED_UP", "fdr_q_value"] < 0.05 and nbvae.loc["PLANTED_DOWN", "fdr_q_value"] < 0.05
    assert set(enrichment["ranking"]) == {"nbvae", "deseq2"}
    assert report["enrichment"]["file"] == "enrichment_prerank.tsv"


def test_contrast_weights_average_the_cells():
    group = ["t", "t", "c", "t", "c", "c", "c", "t"]
    cells = ["x", "x", "x", "y", "y", "y", "z", "z"]  # z has one of each too; w has no reference
    weights, table = contrast_weights([*group, "t"], [*cells, "w"], "t", "c")
    assert [c["cell"] for c in table if c["used"]] == ["x", "y", "z"] and not table[-1]["used"]
    np.testing.assert_allclose(weights, [1 / 6, 1 / 6, -1 / 3, 1 / 3, -1 / 6, -1 / 6, -1 / 3, 1 / 3, 0])
    y = np.arange(9.0)
    expected = np.mean([(0 + 1) / 2 - 2, 3 - (4 + 5) / 2, 7 - 6])
    assert weights @ y == pytest.approx(expected)
    assert parse_contrast(" trt , ctrl ") == ("trt", "ctrl")
    for bad in ("trt", "trt,ctrl,x", "trt,trt", ","):
        with pytest.raises(InputError):
            parse_contrast(bad)


def test_posterior_draws_are_seeded_and_the_latent_plot_coordinates(result):
    model = NBVAE.load(result / "model")
    mean, log_var = np.zeros((4, 10)), np.full((4, 10), -2.0)
    mean[2:] = 1.0
    weights = np.array([-0.5, -0.5, 0.5, 0.5])
    p1, d1 = generative_lfc(model, mean, log_var, weights, 20, seed=3)
    _, d2 = generative_lfc(model, mean, log_var, weights, 20, seed=3)
    np.testing.assert_array_equal(d1, d2)
    assert d1.shape == (20, len(model.gene_ids)) and not np.array_equal(d1[0], d1[1])
    with torch.no_grad():
        y = model.log2_relative_means(torch.as_tensor(mean, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(p1, weights @ y, rtol=1e-6, atol=1e-9)
    two = np.random.default_rng(0).normal(size=(5, 2))
    np.testing.assert_array_equal(principal_plane(two)[0], two)
    many = np.random.default_rng(0).normal(size=(6, 5))
    coords, _ = principal_plane(many)
    assert coords.shape == (6, 2) and coords[:, 0].var() >= coords[:, 1].var()


@pytest.mark.parametrize(("args", "message"), [
    (["--group", "status"], "no sample column 'status'"),
    (["--contrast", "trt,placebo"], "level 'placebo' is absent from column 'group'"),
    (["--contrast", "trt"], "give LEVEL,REFERENCE"),
    (["--covariate", "tissue"], "no sample column 'tissue'"),
    (["--covariate", "group"], "is both the group and a covariate"),
    (["--symbol-map", "map.tsv"], "only used with --gene-sets"),
    (["--gene-sets", "missing.gmt"], "does not exist"),
    (["--color-by", "colour"], "--color-by 'colour'"),
    (["--enrichment-method", "gsva"], "use one of prerank, ora"),
    (["--samples", "3"], "--samples"),
])
def test_bad_inputs_exit_2_and_write_nothing(cohort, tmp_path, runner, args, message):
    from nofone.cli.app import app

    root, _, _ = cohort
    base = {"--group": "group", "--contrast": "trt,ctrl"}
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value
    argv = ["cohort-de", "--input", str(root / "data"), "--outdir", str(tmp_path / "o"), "--epochs", "1",
            "--no-deseq2"]
    for key, value in base.items():
        argv += [key, value]
    run = runner.invoke(app, argv)
    assert run.exit_code == 2, run.output
    assert message in _plain(run.output), run.output
    assert not (tmp_path / "o").exists()


def test_a_cell_with_one_group_only_is_skipped_and_none_is_an_error(tmp_path):
    from nofone.steps.cohort_de import CohortDEOptions, cohort_de

    simulate_cohort(tmp_path / "d", seed=1)
    samples = pd.read_parquet(tmp_path / "d" / "samples.parquet")
    samples["site"] = np.where(samples["group"] == "trt", "s1", "s2")  # confounded with the group
    samples.to_parquet(tmp_path / "d" / "samples.parquet")
    options = CohortDEOptions(group="group", level="trt", reference="ctrl", covariates=["site"], deseq2=False,
                              epochs=1, samples=10, device="cpu")
    with pytest.raises(InputError, match="no cell of covariate levels"):
        cohort_de(tmp_path / "d", tmp_path / "o", options)
    samples["site"] = np.where(samples["celltype"] == "A", "s1", "s2")
    samples.loc[samples["sample_id"].isin(["B_trt_0", "B_trt_1"]), "site"] = "s3"  # s3: trt only
    samples.to_parquet(tmp_path / "d" / "samples.parquet")
    report = cohort_de(tmp_path / "d", tmp_path / "o", options)
    used = {c["cell"]: c["used"] for c in report["contrast"]["cells"]}
    assert used == {"s1": True, "s2": True, "s3": False}


# -- the Nextflow module --------------------------------------------------------------------------


def _nfgroovy():
    spec = importlib.util.spec_from_file_location("nfgroovy", REPO / "tests" / "nextflow" / "nfgroovy.py")
    module = sys.modules.setdefault("nfgroovy", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("stub", [pytest.param(False, marks=pytest.mark.slow), True])
def test_nextflow_module_script_and_stub_run_against_the_cli(cohort, tmp_path, stub):
    nfg = _nfgroovy()
    root, _, gmt = cohort
    (process,) = nfg.parse_processes(REPO / "modules" / "local" / "cohort_de" / "main.nf")
    assert process.name == "NOFONE_COHORT_DE"
    task = tmp_path / "task"
    (task / "gene_sets").mkdir(parents=True)
    (task / "dataset").symlink_to(root / "data")
    (task / "gene_sets" / "sets.gmt").symlink_to(gmt)
    scope = {
        "params": {"container": "x"}, "moduleDir": str(process.path.parent),
        "task": {"process": "NOFONE:NOFONE_COHORT_DE", "cpus": 1,
                 "ext": {"args": "--group group --contrast trt,ctrl --covariate celltype --epochs 20 --samples 10 "
                                 "--no-deseq2 --permutations 10 --device cpu"}},
        "meta": {"id": "cohort"}, "data": nfg.PathList(["dataset"]), "gene_sets": nfg.PathList(["gene_sets/sets.gmt"]),
        "symbol_map": nfg.PathList([]),
    }
    script = nfg.render(process.stub if stub else process.script, scope)
    lines = [ln.strip() for ln in script.splitlines() if ln.strip().startswith("nofone ")]
    assert len(lines) == (0 if stub else 1), script
    if not stub:
        assert lines[0].startswith("nofone --threads 1 cohort-de --input dataset --outdir cohort_de "
                                   "--gene-sets gene_sets/sets.gmt")
    (task / ".command.sh").write_text(script)
    env = {"PATH": f"{REPO / 'bin'}:{Path(sys.executable).parent}:/usr/bin:/bin", "NOFONE_PROGRESS": "0",
           "HOME": str(tmp_path)}
    run = subprocess.run(["bash", "-euo", "pipefail", ".command.sh"], cwd=task, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, script + run.stderr[-3000:]
    for element in (e for output in process.outputs for e in output.elements if e.qualifier == "path"):
        pattern = nfg.evaluate(element.node, scope)
        assert (task / pattern).exists(), f"declared output {pattern} missing"
    for name in (RESULTS_FILE, REPORT_FILE, LATENT_FILE, "latent.png", "model/weights.safetensors"):
        assert (task / "cohort_de" / name).exists(), name
    if not stub:
        assert (task / "cohort_de" / "enrichment_prerank.tsv").exists()
    (versions,) = [e for output in process.outputs for e in output.elements if e.qualifier == "eval"]
    assert subprocess.run(nfg.evaluate(versions.node, scope), shell=True, cwd=task, env=env, capture_output=True,
                          text=True, check=True).stdout.startswith("nofone ")
