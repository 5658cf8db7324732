"""`nofone report`: one self-contained HTML page from real `nofone run` outputs.

The run is made here on a tiny simulated cohort whose gene names and one tissue contain HTML
(`<i>SIM1</i>&`, `tis<b>02</b>`), so that escaping is tested on values that went through the
whole pipeline. So is a `nofone cohort-de` output (two groups x two cell types, 30 epochs), whose
cell types, gene names and one gene set contain HTML too, for the cohort section (`--cohort-de`).
The page is also rendered in headless Chromium when it is installed (Debian:
`apt-get install -y chromium`); the screenshot is kept in test-artifacts/report.png.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, simulate_two_group_cohort

from nofone.errors import InputError
from nofone.evaluate.metrics import auroc
from nofone.io.ingest import IngestOptions
from nofone.models.dgd.config import load_config
from nofone.report.build import ReportOptions, build_report, report
from nofone.report.inputs import resolve_paths
from nofone.report.sections import COHORT, RUN, sections_for
from nofone.report.sections.summary import call_rule
from nofone.simulate.config import SimulationConfig
from nofone.simulate.write import simulate
from nofone.steps.run import RunOptions, run
from nofone.steps.scatter import gather

SECTIONS = [(spec.id, spec.title) for spec in sections_for({RUN})]  # a run's sections, in order
COHORT_SECTION = next((spec.id, spec.title) for spec in sections_for({COHORT}))
SECTION_IDS = [section_id for section_id, _ in SECTIONS]
TISSUE = "tis<b>02</b>"
TITLE = "Tumour board <7> & co"
EVALUATION = {
    "negative_control_summary.tsv": (
        "method\tcontrols\tq_threshold\tn_samples\tmean_de\tsd_de\tmean_up\tmean_down\tup_down_ratio\n"
        "nofone\theld-out normal\t0.01\t6\t0.5\t0.7\t0.3\t0.2\t1.5\n"
        "nofone\theld-out normal\t0.05\t6\t1.5\t1.1\t0.8\t0.7\t1.14\n"
        "deseq2\theld-out normal\t0.01\t6\t8.2\t3.1\t4.0\t4.2\t0.95\n"
        "deseq2\theld-out normal\t0.05\t6\t14.0\t5.0\t7.1\t6.9\t1.03\n"),
    "spike_ins_summary.tsv": (
        "method\tspike_fraction\tspike_lfc\tnominal_q\tprecision\trecall\tobserved_fdr\n"
        "nofone\t0.05\t1.5\t0.01\t0.97\t0.61\t0.03\n"
        "deseq2\t0.05\t1.5\t0.01\t0.93\t0.55\t0.07\n"),
    "frontier.tsv": (
        "null\tdefault\tnominal_q\tfalse_calls_per_normal\tnormals_with_a_call\tspike_lfc\trecall\tprecision\n"
        "nb\tFalse\t0.01\t12.0\t1.0\t2.0\t0.6\t0.7\n"
        "nb\tFalse\t0.05\t20.0\t1.0\t2.0\t0.7\t0.6\n"
        "outlier\tTrue\t0.01\t0.0\t0.0\t2.0\t0.01\t1.0\n"
        "outlier\tTrue\t0.05\t0.5\t0.3\t2.0\t0.05\t0.9\n"),
    "enrichment_summary.tsv": (
        "method\tgene_set\tn_samples\tmean_enrichment_score\tmean_n_de\n"
        "nofone\tHALLMARK_<E2F>_TARGETS\t3\t2.4\t31\n"),
    "assignment.tsv": "group\ttissue\tn\taccuracy\nheld-out normal\ttissue01\t2\t1.0\ncase\ttissue03\t1\t1.0\n",
    "nll_auroc.tsv": "score\tgroup\treference\tauroc\nnll_per_gene\tcase\theld-out normal\t0.97\n",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """`nofone run` on 3 tissues x 25 normals, 400 genes, 3 cases, with HTML in names (~20 s)."""
    root = tmp_path_factory.mktemp("report_run")
    sim = root / "sim"
    simulate(sim, SimulationConfig(tissues=3, samples_per_tissue=25, genes=400, cases=3, seed=1))
    genes = pd.read_csv(sim / "genes.tsv", sep="\t")
    genes["gene_name"] = "<i>" + genes["gene_name"] + "</i>&"
    genes.to_csv(sim / "genes.tsv", sep="\t", index=False)
    sheet = sim / "samplesheet.csv"
    sheet.write_text(sheet.read_text().replace(",tissue02,", f",{TISSUE},"))
    config = root / "config.json"
    config.write_text(json.dumps({"latent_dim": 4, "hidden": [16, 32], "gmm": {"n_components": 4},
                                  "training": {"epochs": 8, "batch_size": 16, "eval_every": 2,
                                               "checkpoint_every": 100}}))
    options = RunOptions(config=load_config(str(config)), ingest=IngestOptions(annotation=sim / "genes.tsv"),
                         device="cpu")
    run(sheet, root / "run", options)
    return root / "run"


@pytest.fixture(scope="module")
def evaluation_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("evaluation")
    for name, text in EVALUATION.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def built(run_dir, evaluation_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report"
    report(run_dir, out, evaluation=evaluation_dir, options=ReportOptions(title=TITLE))
    return out


def _html(folder: Path) -> str:
    return (folder / "report.html").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------ cohort-de outputs

CELL_TYPES = {"A": "<b>A</b>", "B": "B & co"}
UP_SET = "PLANTED_<UP>"
COHORT_GENES = 400
PER_CELL = 6  # samples per (cell type, group)


def simulate_cohort(folder: Path, seed: int = 0) -> pd.DataFrame:
    """Two cell types (with HTML in their names) x two groups (ctrl, trt), PER_CELL samples each
    (see conftest); gene names `<i>G1</i>`."""
    return simulate_two_group_cohort(folder, COHORT_GENES, PER_CELL, CELL_TYPES, "<i>G{}</i>", seed)


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    """`nofone cohort-de` on 2 cell types x 2 groups x 6 samples, 400 genes, 30 epochs (~5 s)."""
    import importlib.util

    import torch

    from nofone.steps.cohort_de import CohortDEOptions, cohort_de

    root = tmp_path_factory.mktemp("cohort")
    truth = simulate_cohort(root / "data")
    gene_sets = None
    if importlib.util.find_spec("gseapy") is not None:  # gene sets whose names and genes hold HTML too
        names = truth["gene_name"]
        gene_sets = root / "sets.gmt"
        gene_sets.write_text(f"{UP_SET}\tx\t" + "\t".join(names[truth["lfc"] > 0]) + "\n"
                             "PLANTED_DOWN\tx\t" + "\t".join(names[truth["lfc"] < 0]) + "\n")
    options = CohortDEOptions(group="group", level="trt", reference="ctrl", covariates=["celltype"], epochs=30,
                              samples=20, gene_sets=gene_sets, permutations=50, color_by="depth", device="cpu")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model trains fastest on one thread
    try:
        cohort_de(root / "data", root / "out", options)
    finally:
        torch.set_num_threads(before)
    return root / "out"


@pytest.fixture(scope="module")
def built_all(run_dir, evaluation_dir, cohort_dir, tmp_path_factory) -> Path:
    """A run, its evaluation and a cohort-de output in one report."""
    out = tmp_path_factory.mktemp("report_all") / "report"
    report(run_dir, out, evaluation=evaluation_dir, cohort_de=cohort_dir, options=ReportOptions(title=TITLE))
    return out


def _section(html: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', html, re.S)
    assert match, section_id
    return match.group(1)


def _pngs(html: str) -> list[bytes]:
    sources = re.findall(r'<img [^>]*src="([^"]*)"', html)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    return [base64.b64decode(s.split(",", 1)[1], validate=True) for s in sources]


def test_every_section_is_there_with_its_tables(built, run_dir):
    html = _html(built)
    for section_id, title in SECTIONS:
        assert re.search(rf'<section id="{section_id}">\s*<h2>{re.escape(title)}</h2>', html), section_id
        assert f'href="#{section_id}"' in html  # table of contents
    assert "not available" not in html
    assert '<section id="cohort">' not in html  # only with --cohort-de
    summary = json.loads((built / "report_summary.json").read_text())
    assert all(s["available"] for s in summary["sections"].values()), summary["sections"]
    assert summary["negative_controls"]["groups"] == ["held-out normal"]
    assert summary["call_rule"] == "q < 0.01 and |log2 fold change| > 1"
    assert summary["model"]["n_train"] == 69 and summary["model"]["n_test"] == 6
    assert summary["model"]["epochs_run"] == 8 and summary["model"]["n_genes"] > 0
    assert set(summary["nll"]) >= {"training", "held-out normal", "case"}
    assert 0 <= summary["nll"]["case"]["auroc_vs_heldout"] <= 1
    cases = summary["volcano"]["samples"]
    assert 1 <= len(cases) <= 4 and all(s.startswith("case") for s in cases)
    for path in summary["tables"]:
        assert (built / path).is_file(), path
    tested = pd.read_csv(run_dir / "de" / "summary.tsv", sep="\t")
    per_sample = pd.read_csv(built / "tables" / "de_per_sample.tsv", sep="\t")
    assert sorted(per_sample["sample_id"]) == sorted(tested["sample_id"])
    assert set(per_sample["group"]) == {"held-out normal", "heldout_normal", "case"}
    frontier = pd.read_csv(built / "tables" / "evaluation_frontier.tsv", sep="\t")
    assert set(frontier["null"]) == {"nb", "outlier"}
    assert "The sensitivity frontier" in _html(built) and "frontier of false calls against recall" in _html(built)
    negative = pd.read_csv(built / "tables" / "evaluation_negative_control_summary.tsv", sep="\t")
    assert list(negative.columns) == EVALUATION["negative_control_summary.tsv"].split("\n")[0].split("\t")
    top = pd.read_csv(built / "tables" / "volcano_top_genes.tsv", sep="\t")
    assert set(top["sample_id"]) == set(cases) and (top.groupby("sample_id").size() <= 20).all()
    # the tissue x component table of the training samples: every training sample counted once
    association = pd.read_csv(built / "tables" / "association_training.tsv", sep="\t")
    assert association["samples"].sum() == 69 and TISSUE in set(association["tissue"])


def test_the_page_is_self_contained(built):
    html = _html(built)
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert "@import" not in html and "url(" not in html  # no fonts or images pulled by CSS
    sources = re.findall(r'<img [^>]*src="([^"]*)"', html)
    assert len(sources) >= 8  # training, latent, 2 heatmaps, NLL, DE genes, volcanoes, negative controls
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        png = base64.b64decode(source.split(",", 1)[1], validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_values_from_data_files_are_escaped(built):
    html = _html(built)
    assert "<i>" not in html and "<b>02" not in html and "<7>" not in html and "<E2F>" not in html
    assert "tis&lt;b&gt;02&lt;/b&gt;" in html  # the tissue, in tables
    assert re.search(r"&lt;i&gt;SIM\d+&lt;/i&gt;&amp;", html)  # gene names, in the top-genes tables
    assert "HALLMARK_&lt;E2F&gt;_TARGETS" in html  # evaluation tables
    assert "<title>Tumour board &lt;7&gt; &amp; co</title>" in html
    # the TSVs hold the data as it is
    tissues = pd.read_csv(built / "tables" / "samples_per_group.tsv", sep="\t")["tissue"]
    assert TISSUE in set(tissues)


def test_missing_inputs_give_a_not_available_line(run_dir, tmp_path):
    partial = tmp_path / "run"
    shutil.copytree(run_dir, partial, ignore=shutil.ignore_patterns("de", "history.tsv"))
    report(partial, tmp_path / "r1")
    html = _html(tmp_path / "r1")
    summary = json.loads((tmp_path / "r1" / "report_summary.json").read_text())
    available = {k: v["available"] for k, v in summary["sections"].items()}
    assert available == {"summary": True, "training": False, "latent": True, "association": True, "nll": True,
                         "degs": False, "volcano": False, "evaluation": False}
    assert "not available: model/history.tsv not found" in html
    assert "not available: de/summary.tsv not found: run `nofone de`" in html
    assert "not available: run `nofone evaluate` and pass its output folder with --evaluation" in html
    for section_id in SECTION_IDS:
        assert f'<section id="{section_id}">' in html
    # the model alone: only what a model can show
    report(None, tmp_path / "r2", model=run_dir / "model")
    summary = json.loads((tmp_path / "r2" / "report_summary.json").read_text())
    assert summary["sections"]["training"]["available"] and not summary["sections"]["degs"]["available"]
    # an evaluation folder without any of its tables
    (tmp_path / "empty_eval").mkdir()
    report(run_dir, tmp_path / "r3", evaluation=tmp_path / "empty_eval")
    assert "not available: none of negative_control_summary.tsv" in _html(tmp_path / "r3")


def test_explicit_folders_as_in_the_nextflow_layout(run_dir, tmp_path):
    cohort = tmp_path / "cohort"  # GATHER puts representations and DE results in one folder
    gather([run_dir / "representations", run_dir / "de"], cohort)
    assert not (cohort / "de_report.json").exists()  # the chunks' reports are in gather_report.json
    paths = resolve_paths(model=run_dir / "model", representations=cohort, de=cohort, data=run_dir / "filtered")
    built = build_report(paths, ReportOptions(samples=["tissue01_H01"]))
    assert "not available" in built.html  # evaluation only
    assert [k for k, v in built.summary["sections"].items() if not v["available"]] == ["evaluation"]
    assert built.summary["volcano"]["samples"] == ["tissue01_H01"]
    assert built.summary["call_rule"] == "q < 0.01 and |log2 fold change| > 1"
    assert "de_report.json not found" not in built.html


def test_spike_ins_caption_says_what_the_outlier_null_cannot_find(run_dir, evaluation_dir, tmp_path):
    de = tmp_path / "de"
    shutil.copytree(run_dir / "de", de)
    fitted = json.loads((de / "de_report.json").read_text()) | {
        "null": "outlier", "outlier_null": {"pi": 0.023, "tau": 0.86},
        "min_callable_fold": {"only_call": 37.4, "five_percent_called": 7.2}}
    (de / "de_report.json").write_text(json.dumps(fitted))
    paths = resolve_paths(run=run_dir, de=de, evaluation=evaluation_dir)
    html = build_report(paths, ReportOptions()).html
    assert "no change smaller than about 7-fold when 5% of the genes are called" in html
    plain = build_report(resolve_paths(run=run_dir, evaluation=evaluation_dir), ReportOptions()).html
    assert "no change smaller than" not in plain


def test_a_broken_gathered_de_report_is_a_clear_error(run_dir, tmp_path):
    cohort = tmp_path / "cohort"
    gather([run_dir / "representations", run_dir / "de"], cohort)
    (cohort / "gather_report.json").write_text("{not json")
    with pytest.raises(InputError, match=r"gather_report.json: not valid JSON"):
        report(None, tmp_path / "report", model=run_dir / "model", representations=cohort, de=cohort,
               data=run_dir / "filtered")
    assert not (tmp_path / "report").exists()  # nothing half-written


def test_call_rule_says_how_large_a_change_the_outlier_null_needs():
    report = {"test": "equal-tail-midp", "q_threshold": 0.01, "lfc_threshold": 1.0, "null": "outlier",
              "outlier_null": {"pi": 0.023, "tau": 0.86},
              "min_callable_fold": {"only_call": 37.4, "five_percent_called": 7.2}}
    _, details = call_rule(report)
    assert "smaller than about 37-fold" in details and "or 7-fold when 5% of the genes are called" in details
    assert "--null nb" in details
    for without in ({"min_callable_fold": None}, {"null": "nb", "min_callable_fold": None}):
        assert "-fold" not in call_rule(report | without)[1]


def test_unknown_volcano_sample_is_an_error(run_dir, tmp_path):
    with pytest.raises(InputError, match="--sample 'nope' is not among the 15 samples"):
        report(run_dir, tmp_path / "r", options=ReportOptions(samples=["nope"]))
    assert not (tmp_path / "r").exists()


def test_auroc_is_mann_whitney_u_over_n1_n2():
    import numpy as np

    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auroc(np.array([0.0]), np.array([1.0, 2.0])) == 0.0
    assert auroc(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.5


def test_cli(run_dir, evaluation_dir, tmp_path, runner):
    from nofone.cli.app import app

    out = tmp_path / "report"
    result = runner.invoke(app, ["report", "--run", str(run_dir), "--outdir", str(out), "--evaluation",
                                 str(evaluation_dir), "--sample", "case001", "--sample", "tissue01_H01",
                                 "--title", "My run"])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file() and (out / "report_summary.json").is_file()
    summary = json.loads((out / "report_summary.json").read_text())
    assert summary["title"] == "My run" and summary["volcano"]["samples"] == ["case001", "tissue01_H01"]
    missing = tmp_path / "no_such_run"
    result = runner.invoke(app, ["report", "--run", str(missing), "--outdir", str(tmp_path / "r2")])
    assert result.exit_code == 2 and str(missing) in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r2").exists()
    result = runner.invoke(app, ["report", "--outdir", str(tmp_path / "r3")])
    assert result.exit_code == 2 and "--run" in result.output and not (tmp_path / "r3").exists()
    result = runner.invoke(app, ["report", "--run", str(run_dir), "--outdir", str(tmp_path / "r4"), "--sample", "x"])
    assert result.exit_code == 2 and "'x'" in result.output and not (tmp_path / "r4").exists()


# ------------------------------------------------------------------------------ the cohort section

def test_cohort_section_after_a_run(built_all, cohort_dir):
    html = _html(built_all)
    ids = re.findall(r'<section id="([^"]+)">', html)
    assert ids == [*[i for i, _ in SECTIONS], "cohort"]  # after the run's sections
    assert re.search(rf'<section id="cohort">\s*<h2>{re.escape(COHORT_SECTION[1])}</h2>', html)
    assert 'href="#cohort"' in html and "not available" not in html
    summary = json.loads((built_all / "report_summary.json").read_text())
    assert all(s["available"] for s in summary["sections"].values()), summary["sections"]
    cohort = _section(html, "cohort")
    for heading in ("What was compared", "Latent space", "Agreement with DESeq2", "Top 25 genes", "Pathway enrichment"):
        assert f"<h3>{heading}" in cohort, heading
    assert "never saw the labels" in cohort
    # two figures (latent, LFC scatter), real PNGs
    pngs = _pngs(cohort)
    assert len(pngs) == 2 and all(p.startswith(b"\x89PNG\r\n\x1a\n") and len(p) > 5000 for p in pngs)
    assert "latent.png" not in cohort  # drawn again, not embedded
    # the numbers: what cohort-de reported
    stored = json.loads((cohort_dir / "cohort_de_report.json").read_text())
    numbers = summary["cohort"]
    assert (numbers["group"], numbers["level"], numbers["reference"]) == ("group", "trt", "ctrl")
    n = 4 * PER_CELL
    assert numbers["covariates"] == ["celltype"] and numbers["samples"] == n and numbers["latent_dim"] == 10
    assert numbers["samples_per_level"] == {"ctrl": n // 2, "trt": n // 2} and numbers["epochs_run"] == 30
    assert numbers["deseq2"]["pearson"] == stored["deseq2"]["pearson"]
    assert numbers["deseq2"]["top_overlap"] == stored["deseq2"]["top_overlap"]
    assert f"Pearson r = {stored['deseq2']['pearson']:.3f}" in cohort
    assert numbers["latent"]["dim"] == 10 and numbers["latent"]["coloured_by"] == ["group", "celltype", "depth"]
    # the tables, in full in tables/
    for name in ("cohort_cells", "cohort_latent", "cohort_deseq2_agreement", "cohort_top_genes"):
        assert f"tables/{name}.tsv" in summary["tables"] and (built_all / "tables" / f"{name}.tsv").is_file()
    results = pd.read_csv(cohort_dir / "cohort_de.tsv", sep="\t", dtype={"gene_id": str})
    top = pd.read_csv(built_all / "tables" / "cohort_top_genes.tsv", sep="\t", dtype={"gene_id": str})
    expected = results.loc[results["log2_fold_change"].abs().sort_values(ascending=False).index[:25], "gene_id"]
    assert len(top) == 25 and set(top["gene_id"]) == set(expected)
    assert (top["log2_fold_change"].abs().diff().dropna() <= 0).all()
    assert {"ci_low", "ci_high", "deseq2_log2FoldChange", "deseq2_padj"} <= set(top.columns)
    cells = pd.read_csv(built_all / "tables" / "cohort_cells.tsv", sep="\t")
    assert set(cells["covariate levels"]) == set(CELL_TYPES.values()) and cells["used"].all()
    latent = pd.read_csv(built_all / "tables" / "cohort_latent.tsv", sep="\t")
    assert len(latent) == n and {"sample_id", "group", "celltype", "x", "y"} <= set(latent.columns)
    if (cohort_dir / "enrichment_prerank.tsv").is_file():
        enrichment = pd.read_csv(built_all / "tables" / "cohort_enrichment_prerank.tsv", sep="\t")
        assert set(enrichment["ranking"]) == {"nbvae", "deseq2"}
        terms = numbers["enrichment"]["enrichment_prerank.tsv"]
        assert terms["nbvae"]["tested"] == 2 and terms["deseq2"]["tested"] == 2
        side = pd.read_csv(built_all / "tables" / "cohort_enrichment_prerank_top.tsv", sep="\t")
        assert list(side.columns) == ["term", "NB-VAE direction", "NB-VAE NES", "NB-VAE FDR q", "DESeq2 direction",
                                      "DESeq2 NES", "DESeq2 FDR q"]
        directions = dict(zip(side["term"], side["NB-VAE direction"]))
        assert directions == {UP_SET: "up", "PLANTED_DOWN": "down"}  # the planted sets, found
        assert "NB-VAE NES" in cohort and "DESeq2 FDR q" in cohort


def test_cohort_values_are_escaped(built_all):
    cohort = _section(_html(built_all), "cohort")
    assert "<b>A" not in cohort and "<i>" not in cohort and "B & co" not in cohort and "<UP>" not in cohort
    assert "&lt;b&gt;A&lt;/b&gt;" in cohort and "B &amp; co" in cohort  # cell types
    assert re.search(r"&lt;i&gt;G\d+&lt;/i&gt;", cohort)  # gene names, in the top genes
    if "Pathway enrichment" in cohort and "PLANTED" in cohort:
        assert "PLANTED_&lt;UP&gt;" in cohort  # gene sets
    cells = pd.read_csv(built_all / "tables" / "cohort_cells.tsv", sep="\t")
    assert "<b>A</b>" in set(cells["covariate levels"])  # the TSVs hold the data as it is


def test_cohort_de_alone_from_the_cli(cohort_dir, run_dir, tmp_path, runner):
    from nofone.cli.app import app

    out = tmp_path / "report"
    result = runner.invoke(app, ["report", "--cohort-de", str(cohort_dir), "--outdir", str(out),
                                 "--title", "trt <vs> ctrl"])
    assert result.exit_code == 0, result.output
    html = _html(out)
    ids = re.findall(r'<section id="([^"]+)">', html)
    assert ids == ["cohort"]  # alone: no list of a run's sections, all empty
    summary = json.loads((out / "report_summary.json").read_text())
    assert summary["sections"]["cohort"]["available"] and summary["inputs"]["cohort_de"] == str(cohort_dir)
    assert list(summary["sections"]) == ["cohort"]
    assert "not available" not in html and "<title>trt &lt;vs&gt; ctrl</title>" in html
    assert len(_pngs(html)) == 2 and "http://" not in html and "<script" not in html
    # a missing folder: exit 2, named, nothing written; alone and with --run
    missing = tmp_path / "no_such_cohort"
    for extra in ([], ["--run", str(run_dir)]):
        result = runner.invoke(app, ["report", "--cohort-de", str(missing), "--outdir", str(tmp_path / "r2"), *extra])
        assert result.exit_code == 2, result.output
        assert str(missing) in result.output and "--cohort-de" in result.output and "Traceback" not in result.output
        assert not (tmp_path / "r2").exists()


def test_cohort_with_a_run_from_the_cli(run_dir, cohort_dir, tmp_path, runner):
    from nofone.cli.app import app

    out = tmp_path / "report"
    result = runner.invoke(app, ["report", "--run", str(run_dir), "--cohort-de", str(cohort_dir), "--outdir", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "report_summary.json").read_text())
    assert all(v["available"] for k, v in summary["sections"].items() if k != "evaluation")
    assert list(summary["sections"])[-1] == "cohort"


def test_cohort_outputs_in_part(cohort_dir, tmp_path):
    """Missing enrichment and latent files: 'not available' lines; a report JSON without DESeq2's
    agreement: computed from cohort_de.tsv, as cohort-de computes it."""
    partial = tmp_path / "cohort"
    shutil.copytree(cohort_dir, partial, ignore=shutil.ignore_patterns("enrichment_*", "latent.tsv", "model"))
    stored = json.loads((partial / "cohort_de_report.json").read_text())
    agreement = stored.pop("deseq2")
    (partial / "cohort_de_report.json").write_text(json.dumps(stored))
    summary = report(None, tmp_path / "r1", cohort_de=partial)
    html = _html(tmp_path / "r1")
    assert summary["sections"]["cohort"]["available"]
    assert "not available: no enrichment_*.tsv in" in html and "not available: latent.tsv not found" in html
    assert "computed from cohort_de.tsv" in html
    computed = summary["cohort"]["deseq2"]
    assert computed["pearson"] == pytest.approx(agreement["pearson"], abs=1e-4)
    assert computed["deseq2_na"] == agreement["deseq2_na"] and computed["top_overlap"] == agreement["top_overlap"]
    # without DESeq2 (cohort-de --no-deseq2): said so, no scatter plot
    results = pd.read_csv(partial / "cohort_de.tsv", sep="\t", dtype=str)
    results.drop(columns=[c for c in results if c.startswith("deseq2_")]).to_csv(partial / "cohort_de.tsv", sep="\t",
                                                                                  index=False)
    report(None, tmp_path / "r2", cohort_de=partial)
    cohort = _section(_html(tmp_path / "r2"), "cohort")
    assert "not available: DESeq2 was not run" in cohort and len(_pngs(cohort)) == 0
    # a folder without any cohort-de output: one line; a table lacking its columns: an error naming it
    (tmp_path / "empty").mkdir()
    summary = report(None, tmp_path / "r3", cohort_de=tmp_path / "empty")
    assert not summary["sections"]["cohort"]["available"]
    assert "not available: neither cohort_de_report.json nor cohort_de.tsv" in _html(tmp_path / "r3")
    (tmp_path / "empty" / "cohort_de.tsv").write_text("gene\tlfc\nA\t1\n")
    with pytest.raises(InputError, match=r"cohort_de.tsv: columns \['gene_id', 'log2_fold_change'\] are missing"):
        report(None, tmp_path / "r4", cohort_de=tmp_path / "empty")
    assert not (tmp_path / "r4").exists()


# ------------------------------------------------------------------------------ headless Chromium

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _render(page: Path, profile: Path, *mode: str) -> subprocess.CompletedProcess:
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-extensions", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *mode, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary (Debian: apt-get install -y chromium)")
def test_renders_in_headless_chromium(built_all, tmp_path):
    """The report of a run, its evaluation and a cohort-de output: every section, no console errors."""
    built = built_all
    # the console check must be able to fail: a page with a script error is caught
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom'); notDefined();</script></body></html>")
    assert _console_errors(_render(bad, tmp_path / "profile0", "--dump-dom").stderr)

    dom = _render(built / "report.html", tmp_path / "profile1", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not _console_errors(dom.stderr), _console_errors(dom.stderr)
    for section_id in [*SECTION_IDS, "cohort"]:
        assert f'<section id="{section_id}">' in dom.stdout, section_id
    assert dom.stdout.count("data:image/png;base64,") >= 10

    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    screenshot = artifacts / "report.png"
    screenshot.unlink(missing_ok=True)
    shot = _render(built / "report.html", tmp_path / "profile2", "--hide-scrollbars",
                   f"--screenshot={screenshot}", "--window-size=1200,4000")
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert not _console_errors(shot.stderr)
    assert screenshot.read_bytes().startswith(b"\x89PNG") and screenshot.stat().st_size > 50_000
