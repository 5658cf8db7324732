"""The Nextflow pipeline, run without Nextflow: its workflows, its nf-test files, their snapshots.

tests/nextflow/nfflow.py runs main.nf, workflows/nofone.nf and subworkflows/ as Nextflow would
(channels, process calls, joins and groupings, topics, publishDir), each task's `stub:` or
`script:` block against the real CLI. tests/nextflow/nftest.py runs the nf-test files shipped
for users who have Nextflow (tests/main.nf.test, tests/modules/*.nf.test) on top of it, with
their assertions and snapshots. So here:

- every nf-test test runs: stub tests always; the real ones (tiny models, minutes) are marked
  slow. A snapshot that differs from its `.nf.test.snap` fails (NOFONE_UPDATE_SNAPSHOTS=1
  rewrites it): the shipped snapshots are the ones these runs make;
- stub runs of the whole pipeline for many params check the wiring by behaviour: which
  processes run, which output each input came from, what --outdir holds, the versions file;
- wiring mistakes (a missing input, a tuple of the wrong shape, an unknown emit, an input from
  the wrong process) are shown to fail;
- the sample-sheet staging (the Groovy of subworkflows/local/samplesheet) runs on a sheet with a
  shared matrix, files of the same name and a quoted comma, then INGEST for real on its output.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import nofone

REPO = Path(__file__).resolve().parents[1]


sys.path.insert(0, str(REPO / "tests" / "nextflow"))  # tests/nextflow's modules import each other by name
import nftest as nft  # noqa: E402

nff, nfg = nft.nff, nft.nfg

NF_TESTS = [*sorted(REPO.glob("tests/modules/*.nf.test")), REPO / "tests" / "main.nf.test"]
SUITES = {path: nft.parse(path) for path in NF_TESTS}
COHORT_FIXTURES = REPO / "tests" / "nextflow" / "fixtures" / "cohort"
STUB_MODEL = REPO / "tests" / "nextflow" / "fixtures" / "stub" / "model"
REGULATOR_MODEL = REPO / "tests" / "nextflow" / "fixtures" / "regulators" / "model"
ALL = {"NOFONE_SIMULATE", "NOFONE_INGEST", "NOFONE_FILTER", "NOFONE_TRAIN", "NOFONE_CHUNK", "NOFONE_REPRESENT",
       "NOFONE_DE", "NOFONE_GATHER", "NOFONE_COHORT_DE", "NOFONE_DESEQ2", "NOFONE_EVALUATE", "NOFONE_EXPLAIN",
       "NOFONE_REPORT", "NOFONE_PERTURB", "NOFONE_AUGMENT", "NOFONE_SCREEN", "NOFONE_PATHWAYS"}
DIFFUSION_ANALYSES = {"NOFONE_PERTURB", "NOFONE_AUGMENT", "NOFONE_SCREEN"}  # only when asked
# only with --cohort_group, --regulators, --gene_sets, or when asked
OPTIONAL = {"NOFONE_COHORT_DE", "NOFONE_EXPLAIN", "NOFONE_PATHWAYS"} | DIFFUSION_ANALYSES
MAIN_REAL_RUN = "real run on the simulated cohort"


def _cases(stub: bool):
    for path, suite in SUITES.items():
        for case in suite.tests:
            if case.stub == stub:
                marks = [] if stub else [pytest.mark.slow]
                yield pytest.param(path, case.name, id=f"{path.name}::{case.name}", marks=marks)


def _case(path: Path, name: str):
    suite = SUITES[path]
    return suite, next(c for c in suite.tests if c.name == name)


@pytest.fixture(scope="session")
def nf_test_launch(tmp_path_factory) -> Path:
    """One launch folder for every emulated nf-test run of this pytest worker (as nf-test runs
    every test from the project folder), so that identical tasks are reused across tests."""
    return tmp_path_factory.mktemp("nf-test-launch")


# ---------------------------------------------------------------------------------------------
# The nf-test files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "name"), list(_cases(stub=True)))
def test_nf_test_stub(path, name, tmp_path, nf_test_launch):
    suite, case = _case(path, name)
    nft.run(suite, case, tmp_path, launch=nf_test_launch)


@pytest.mark.parametrize(("path", "name"), list(_cases(stub=False)))
def test_nf_test_real(path, name, tmp_path, nf_test_launch):
    """The real nf-test runs against the CLI (tiny models), their assertions and snapshots; the
    whole pipeline's run is checked further below (DESeq2's controls, EVALUATE's and COHORT_DE's
    tables, the report, every command line)."""
    suite, case = _case(path, name)
    session = nft.run(suite, case, tmp_path, launch=nf_test_launch, cache=True)
    if path.name == "main.nf.test" and name == MAIN_REAL_RUN:
        _check_the_real_run(session, Path(session.params["outdir"]))


def _tsv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _check_the_real_run(session, out: Path) -> None:
    script = {t.simple_name: t.command for t in session.tasks}
    assert "--config train_config/test_train_config_dgd.json --checkpoint-dir " in script["NOFONE_TRAIN"]
    assert f"/.nofone-checkpoints/{session.session_id} --resume --model-type dgd" in script["NOFONE_TRAIN"]
    tested = [s for chunk in sorted((out / "chunks").iterdir()) for s in chunk.read_text().split()]
    assert len(list((out / "chunks").iterdir())) == 2, "-profile test's chunk_size scatters over two tasks"
    assert [r["sample_id"] for r in _tsv(out / "cohort" / "summary.tsv")] == tested
    assert sorted(p.stem for p in (out / "cohort" / "samples").glob("*.tsv")) == sorted(tested)
    assert pq.ParquetFile(out / "cohort" / "representations.parquet").metadata.num_rows == len(tested)

    # DESEQ2: the cases, each against every training normal and only those
    assert ("--controls-trained-by model --cases-except-condition normal --cases-except-condition "
            "'heldout_normal' --controls-condition normal --seed 0") in script["NOFONE_DESEQ2"]
    training = pq.read_table(out / "model" / "training_representations.parquet").to_pandas()
    trained = set(training.loc[training["split"] == "train", "sample_id"])
    assert sorted(r["sample_id"] for r in _tsv(out / "deseq2" / "summary.tsv")) == ["case001", "case002"]
    controls = _tsv(out / "deseq2" / "controls.tsv")
    for case in ("case001", "case002"):
        assert {r["control_id"] for r in controls if r["sample_id"] == case} == trained
    assert not trained & set(tested), "the samples tested are those the model did not train on"

    # EVALUATE on the pipeline's folders, with the GMT
    assert "evaluate --data dataset --model model --representations cohort --de cohort" in script["NOFONE_EVALUATE"]
    assert "--gene-set gene_sets/gene_sets.gmt --normal-value normal --negative-condition 'heldout_normal'" \
        in script["NOFONE_EVALUATE"]
    evaluated = json.loads((out / "evaluation" / "evaluation.json").read_text())
    assert evaluated["n_cases"] == 2 and evaluated["run"] is None
    assert evaluated["inputs"]["representations"] == evaluated["inputs"]["de"] == "cohort"
    assert {(r["method"], r["controls"]) for r in _tsv(out / "evaluation" / "negative_control_summary.tsv")} == \
        {("dgd", "model"), ("deseq2", "all same-tissue"), ("deseq2", "5 random")}
    assert {(r["method"], r["spike_lfc"]) for r in _tsv(out / "evaluation" / "spike_ins_summary.tsv")} == \
        {(m, lfc) for m in ("dgd", "deseq2") for lfc in ("1.0", "2.0", "3.0")}
    assert {(r["method"], r["gene_set"]) for r in _tsv(out / "evaluation" / "enrichment_summary.tsv")} == \
        {(m, f"SIMULATED_SET_{x}") for m in ("dgd", "deseq2") for x in "ABC"}

    # COHORT_DE on every sample, with the contrast, the covariate, the GMT and the symbol map
    assert "--gene-sets gene_sets/gene_sets.gmt --symbol-map symbol_map/symbol_map.tsv --group 'tissue' " \
           "--contrast 'tissue02,tissue01' --covariate 'batch' --epochs 3" in script["NOFONE_COHORT_DE"]
    report = json.loads((out / "cohort_de" / "cohort_de_report.json").read_text())
    sheet = _csv(out / "simulated" / "samplesheet.csv")
    tissues = [row["tissue"] for row in sheet]
    assert report["samples"]["n"] == len(sheet)
    assert report["samples"]["per_level"] == {t: tissues.count(t) for t in ("tissue02", "tissue01")}
    assert report["contrast"]["covariates"] == ["batch"] and report["model"]["epochs_run"] == 3
    assert len(_tsv(out / "cohort_de" / "cohort_de.tsv")) == report["genes"]["n_modelled"] > 0
    assert report["enrichment"]["n_gene_sets"] == 3
    assert report["enrichment"]["genes_with_symbol"] == report["genes"]["n_modelled"], "the symbol map applied"
    assert {(r["ranking"], r["term"]) for r in _tsv(out / "cohort_de" / "enrichment_prerank.tsv")} == \
        {(r, f"SIMULATED_SET_{s}") for r in ("nbvae", "deseq2") for s in "ABC"}

    # PATHWAYS: the GMT through the symbol map, against the trained model's local null
    assert "pathways --de cohort --gene-sets gene_sets/gene_sets.gmt --model model --outdir pathways " \
           "--symbol-map symbol_map/symbol_map.tsv --q-threshold 0.01" in script["NOFONE_PATHWAYS"]
    called = pq.read_table(out / "pathways" / "pathways.parquet").to_pandas()
    assert set(called["sample_id"]) == set(tested) and set(called["gene_set"]) == {f"SIMULATED_SET_{s}" for s in "ABC"}

    # REPORT: with EVALUATE's, COHORT_DE's and PATHWAYS' folders
    assert "--evaluation evaluation --cohort-de cohort_de --pathways pathways" in script["NOFONE_REPORT"]
    sections = json.loads((out / "report" / "report_summary.json").read_text())["sections"]
    assert all(sections[s]["available"] for s in ("summary", "training", "degs", "evaluation", "cohort", "pathways"))
    assert (out / "report" / "report.html").stat().st_size > 0 and (out / "report" / "tables").is_dir()


@pytest.mark.slow
def test_snapshots_do_not_depend_on_the_thread_count(tmp_path):
    """The module tests' snapshots (SIMULATE to CHUNK, through a tiny TRAIN) come out the same
    when every task runs on one thread instead of its label's cpus (2 under -profile test)."""
    one_thread = tmp_path / "one_thread.config"
    one_thread.write_text("process {\n    withLabel: '.*' {\n        cpus = 1\n    }\n}\n")
    launch = tmp_path / "launch"
    names = ["simulate.nf.test", "ingest.nf.test", "filter.nf.test", "train.nf.test", "chunk.nf.test"]
    for path in (REPO / "tests" / "modules" / name for name in names):
        suite = SUITES[path]
        case = next(c for c in suite.tests if not c.stub)
        # cache: the suites share their upstream tasks (SIMULATE, INGEST, FILTER, TRAIN), each run once
        session = nft.run(suite, case, tmp_path / path.stem, launch=launch, extra_config=(one_thread,), cache=True)
        assert {t.command.split()[2] for t in session.tasks} == {"1"}, "every task ran with --threads 1"


def test_every_process_has_a_module_nf_test_with_a_stub_test():
    tested = {suite.target: suite for suite in SUITES.values() if suite.kind == "process"}
    assert set(tested) == ALL
    for suite in tested.values():
        assert suite.path.name == f"{suite.script.split('/')[-2]}.nf.test", suite.path
        assert any(case.stub for case in suite.tests), f"{suite.path}: no stub test"
    pipeline = SUITES[REPO / "tests" / "main.nf.test"]
    assert pipeline.kind == "pipeline" and pipeline.script == "../main.nf" and pipeline.profiles == ["test"]


def test_snapshot_files_match_their_tests():
    """Every test that takes a snapshot has its entry in the .snap beside it, and every entry a
    test: no missing snapshot, none left over from a renamed test."""
    for suite in SUITES.values():
        snap = suite.snapshot_file()
        entries = set(json.loads(snap.read_text())) if snap.exists() else set()
        assert entries == nft.snapshot_names(suite), f"{snap.name}: {entries ^ nft.snapshot_names(suite)}"


def test_a_stale_snapshot_fails(tmp_path, nf_test_launch):
    """A stub snapshot altered by one byte fails its test, naming the snapshot."""
    suite, case = _case(REPO / "tests" / "main.nf.test", "stub run: every step runs once and every output is published")
    stored = json.loads(suite.snapshot_file().read_text())

    def alter(value):  # the first md5 in the snapshot, one character longer
        if isinstance(value, list):
            return next((True for k, v in enumerate(value) if (isinstance(v, str) and "md5," in v
                         and value.__setitem__(k, v.replace("md5,", "md5,0")) is None) or alter(v)), False)
        return False

    assert alter(stored[case.name]["content"])
    altered = tmp_path / "altered.snap"
    altered.write_text(json.dumps(stored))
    with pytest.raises(AssertionError, match="is stale"):
        nft.run(suite, case, tmp_path / "run", nft.SnapshotStore(altered), launch=nf_test_launch)


def test_nf_test_serializes_snapshot_values_as_nf_test_does(tmp_path):
    """Files: name and md5; folders: their files, sorted by name, sub-folders nested; strings
    that name existing files become files too (nf-test's PathConverter)."""
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.txt").write_text("x\n")
    (tmp_path / "a.txt").write_text("")
    assert nft.serialize([nff.NFPath(tmp_path), str(tmp_path / "a.txt"), "not a file", 3, {"id": "c"}]) == [
        ["a.txt:md5,d41d8cd98f00b204e9800998ecf8427e", ["x.txt:md5,401b30e3b8b5d629635a5c613cdb7919"]],
        "a.txt:md5,d41d8cd98f00b204e9800998ecf8427e", "not a file", 3, {"id": "c"}]


# ---------------------------------------------------------------------------------------------
# Stub runs of the whole pipeline: the wiring, by behaviour
# ---------------------------------------------------------------------------------------------

GMT_PARAMS = {"gene_sets": str(COHORT_FIXTURES / "gene_sets.gmt"),
              "symbol_map": str(COHORT_FIXTURES / "symbol_map.tsv")}
COHORT_PARAMS = {"cohort_group": "tissue", "cohort_contrast": "tissue02,tissue01", "cohort_covariates": "batch"}
REGULATOR_PARAMS = {"regulators": str(REGULATOR_MODEL)}
BASE = ALL - DIFFUSION_ANALYSES
STUB_RUNS = {
    "test": ({}, ALL - OPTIONAL),
    "model": ({"model": str(STUB_MODEL)}, ALL - OPTIONAL - {"NOFONE_FILTER", "NOFONE_TRAIN", "NOFONE_EVALUATE"}),
    "skip_deseq2": ({"skip_deseq2": True}, ALL - OPTIONAL - {"NOFONE_DESEQ2"}),
    "skip_all": ({"skip_deseq2": True, "skip_evaluate": True, "skip_report": True},
                 ALL - OPTIONAL - {"NOFONE_DESEQ2", "NOFONE_EVALUATE", "NOFONE_REPORT"}),
    "cohort_de": (COHORT_PARAMS | GMT_PARAMS, BASE - {"NOFONE_EXPLAIN"}),
    "cohort_de_model": (COHORT_PARAMS | {"model": str(STUB_MODEL), "skip_deseq2": True},
                        BASE - {"NOFONE_FILTER", "NOFONE_TRAIN", "NOFONE_EVALUATE", "NOFONE_DESEQ2", "NOFONE_EXPLAIN",
                                "NOFONE_PATHWAYS"}),
    "nbvae": ({"model_type": "nbvae"}, ALL - OPTIONAL),
    "input": ({"simulate": False, "input": "SHEET"}, ALL - OPTIONAL - {"NOFONE_SIMULATE"}),
    "regulators": (COHORT_PARAMS | REGULATOR_PARAMS, BASE - {"NOFONE_PATHWAYS"}),
    "regulators_model_no_report": (REGULATOR_PARAMS | {"model": str(STUB_MODEL), "skip_report": True},
                                   BASE - {"NOFONE_COHORT_DE", "NOFONE_FILTER", "NOFONE_TRAIN", "NOFONE_EVALUATE",
                                          "NOFONE_REPORT", "NOFONE_PATHWAYS"}),
    "diffusion": ({"model_type": "diffusion", "perturb": True, "augment": True, "screen": True} | GMT_PARAMS,
                  ALL - {"NOFONE_COHORT_DE", "NOFONE_EXPLAIN"}),
    "diffusion_model": ({"model": str(STUB_MODEL), "perturb": True, "screen": True, "skip_deseq2": True} | GMT_PARAMS,
                        ALL - {"NOFONE_COHORT_DE", "NOFONE_FILTER", "NOFONE_TRAIN", "NOFONE_EVALUATE", "NOFONE_DESEQ2",
                               "NOFONE_AUGMENT", "NOFONE_EXPLAIN"}),
    "pathways_model": (GMT_PARAMS | {"model": str(STUB_MODEL)},
                       BASE - {"NOFONE_COHORT_DE", "NOFONE_FILTER", "NOFONE_TRAIN", "NOFONE_EVALUATE",
                               "NOFONE_EXPLAIN"}),
    "skip_pathways": (GMT_PARAMS | {"skip_pathways": True},
                      BASE - {"NOFONE_COHORT_DE", "NOFONE_EXPLAIN", "NOFONE_PATHWAYS"}),
}
FOLDERS = {"NOFONE_SIMULATE": "simulated", "NOFONE_INGEST": "data", "NOFONE_FILTER": "filtered",
           "NOFONE_TRAIN": "model", "NOFONE_CHUNK": "chunks", "NOFONE_GATHER": "cohort",
           "NOFONE_COHORT_DE": "cohort_de", "NOFONE_DESEQ2": "deseq2", "NOFONE_EVALUATE": "evaluation",
           "NOFONE_EXPLAIN": "explain", "NOFONE_REPORT": "report", "NOFONE_PERTURB": "perturb",
           "NOFONE_AUGMENT": "synthetic", "NOFONE_SCREEN": "screen", "NOFONE_PATHWAYS": "pathways"}


def test_the_stub_runs_cover_every_process_and_branch():
    assert set().union(*(ran for _, ran in STUB_RUNS.values())) == ALL
    assert {k for k, (params, _) in STUB_RUNS.items() if params.get("model")} and \
        {k for k, (params, _) in STUB_RUNS.items() if not params.get("model")}


def _sheet(folder: Path) -> Path:
    """A sample sheet of two normals and a case, its count files beside it (relative paths,
    from the launch folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [("n1", "normal"), ("n2", "normal"), ("c1", "case")]
    for sample, _ in rows:
        (folder / f"{sample}.tsv").write_text("gene_id\tcount\n")
    sheet = folder / "samplesheet.csv"
    sheet.write_text("sample,counts,condition,tissue\n" + "".join(f"{s},sheet/{s}.tsv,{c},t1\n" for s, c in rows))
    return sheet


def stub_run(tmp_path: Path, params: dict, profiles=("test",), root: Path = REPO) -> nff.Session:
    params = {"outdir": str(tmp_path / "results"), "checkpoint_dir": str(tmp_path / "ckpt"), **params}
    if params.get("input") == "SHEET":
        params["input"] = str(_sheet(tmp_path / "sheet"))
    session = nff.Session(tmp_path / "work", params=params, profiles=profiles, stub=True, launch_dir=tmp_path)
    return session.run_main(root / "main.nf")


def check_wiring(session: nff.Session, params: dict) -> None:
    """Which output each input of each task came from."""
    data = ("NOFONE_INGEST", "data") if params.get("model") else ("NOFONE_FILTER", "data")
    model = None if params.get("model") else ("NOFONE_TRAIN", "model")
    expected = {
        "NOFONE_FILTER": {"data": ("NOFONE_INGEST", "data")},
        "NOFONE_TRAIN": {"data": ("NOFONE_FILTER", "data")},
        "NOFONE_CHUNK": {"data": data, "model": model},
        "NOFONE_REPRESENT": {"samples_file": ("NOFONE_CHUNK", "chunks"), "model": model, "data": data},
        "NOFONE_DE": {"representations": ("NOFONE_REPRESENT", "representations"), "model": model, "data": data},
        "NOFONE_GATHER": {"parts": ("('NOFONE_DE', 'de')", "('NOFONE_REPRESENT', 'representations')")},
        "NOFONE_COHORT_DE": {"data": ("NOFONE_INGEST", "data")},  # every sample, not FILTER's
        "NOFONE_PERTURB": {"data": data, "model": model},
        "NOFONE_AUGMENT": {"model": model},
        "NOFONE_SCREEN": {"data": ("NOFONE_INGEST", "data")},  # every ingested sample, no model
        "NOFONE_DESEQ2": {"data": data, "model": model},
        "NOFONE_EVALUATE": {"data": data, "model": model, "cohort": ("NOFONE_GATHER", "cohort")},
        "NOFONE_PATHWAYS": {"cohort": ("NOFONE_GATHER", "cohort"), "model": model},
        "NOFONE_EXPLAIN": {"cohort": ("NOFONE_GATHER", "cohort"), "regulators": None},  # --regulators itself
        "NOFONE_REPORT": {"data": data, "model": model, "cohort": ("NOFONE_GATHER", "cohort"),
                          "evaluation": ("NOFONE_EVALUATE", "evaluation") if session.ran("NOFONE_EVALUATE") else None,
                          "cohort_de": ("NOFONE_COHORT_DE", "results") if session.ran("NOFONE_COHORT_DE") else None,
                          "explain": ("NOFONE_EXPLAIN", "explain") if session.ran("NOFONE_EXPLAIN") else None,
                          "pathways": ("NOFONE_PATHWAYS", "pathways") if session.ran("NOFONE_PATHWAYS") else None},
    }
    for process, inputs in expected.items():
        for task in session.ran(process):
            for element, source in inputs.items():
                assert session.source(task, element) == source, (process, element, session.source(task, element))
    for task in session.ran("NOFONE_CHUNK") + session.ran("NOFONE_REPRESENT") + session.ran("NOFONE_DE"):
        if params.get("model"):
            assert nff.as_path(task.inputs["model"]) == Path(params["model"]), "--model: the folder given"
    for task in session.ran("NOFONE_EXPLAIN"):
        assert nff.as_path(task.inputs["regulators"]) == Path(params["regulators"]), "--regulators: the folder given"


@pytest.mark.parametrize("run", sorted(STUB_RUNS))
def test_pipeline_stub_run(run, tmp_path):
    """main.nf in stub mode: the processes that run, where their inputs come from, what they
    publish, their tags and command lines, and pipeline_info/software_versions.yml."""
    params, expected = STUB_RUNS[run]
    session = stub_run(tmp_path, params)
    ran = [t.simple_name for t in session.tasks]
    assert set(ran) == expected and len(ran) == len(expected), ran  # each once (a stub makes one chunk)
    check_wiring(session, session.params)

    cohort = "cohort" if params.get("input") else "simulated"
    for task in session.tasks:
        per_chunk = task.simple_name in ("NOFONE_REPRESENT", "NOFONE_DE")
        assert task.tag == ("chunk_0001" if per_chunk else cohort), task.trace_name
    command = {t.simple_name: t.command for t in session.tasks}
    assert ("--model-type nbvae" in command.get("NOFONE_TRAIN", "")) is (run == "nbvae")
    assert ("--model-type diffusion" in command.get("NOFONE_TRAIN", "")) is (run == "diffusion")
    if "NOFONE_PERTURB" in command:
        assert "--gene-sets gene_sets/gene_sets.gmt --normal normal --k 1.0" in command["NOFONE_PERTURB"]
    if "NOFONE_SCREEN" in command:
        assert "--gene-sets gene_sets/gene_sets.gmt --normal normal --n-random 100" in command["NOFONE_SCREEN"]
    if "NOFONE_EVALUATE" in command:
        assert ("--no-deseq2" in command["NOFONE_EVALUATE"]) is bool(params.get("skip_deseq2"))
    if "NOFONE_DESEQ2" in command:
        assert ("--controls-trained-by model" in command["NOFONE_DESEQ2"]) is not bool(params.get("model"))
    if "NOFONE_REPORT" in command:
        assert ("--evaluation evaluation" in command["NOFONE_REPORT"]) is ("NOFONE_EVALUATE" in command)
        assert ("--cohort-de cohort_de" in command["NOFONE_REPORT"]) is ("NOFONE_COHORT_DE" in command)
        assert ("--explain explain" in command["NOFONE_REPORT"]) is ("NOFONE_EXPLAIN" in command)
        assert ("--pathways pathways" in command["NOFONE_REPORT"]) is ("NOFONE_PATHWAYS" in command)
    if "NOFONE_EXPLAIN" in command:
        assert "explain --regulators regulators --de cohort --outdir explain" in command["NOFONE_EXPLAIN"]
    if "NOFONE_PATHWAYS" in command:
        assert "--symbol-map symbol_map/symbol_map.tsv" in command["NOFONE_PATHWAYS"]
    assert ("--genes model_genes/genes.tsv" in command["NOFONE_INGEST"]) is bool(params.get("model"))
    if params.get("input"):
        assert [f.name for f in session.ran("NOFONE_INGEST")[0].inputs["counts"]] == ["n1.tsv", "n2.tsv", "c1.tsv"]

    out = Path(session.params["outdir"])
    assert {p.name for p in out.iterdir()} == {FOLDERS[p] for p in expected if p in FOLDERS} | {"pipeline_info"}
    assert [p.name for p in (out / "chunks").iterdir()] == ["chunk_0001.txt"]
    names = sorted({t.name for t in session.tasks})
    assert (out / "pipeline_info" / "software_versions.yml").read_text() == "".join(sorted(
        [f'"{n}":\n    nofone: {nofone.__version__}\n' for n in names]
        + [f"Workflow:\n    nofone: {nofone.__version__}\n    Nextflow: {nff.NEXTFLOW_VERSION}\n"]))


def _mutated(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the pipeline's Nextflow files with one change in workflows/nofone.nf."""
    root = tmp_path / "pipeline"
    root.mkdir()
    for part in ("main.nf", "workflows", "subworkflows", "modules"):
        (shutil.copytree if (REPO / part).is_dir() else shutil.copy)(REPO / part, root / part)
    flow = root / "workflows" / "nofone.nf"
    text = flow.read_text()
    assert text.count(old) == 1, old
    flow.write_text(text.replace(old, new))
    return root


@pytest.mark.parametrize(("old", "new", "error"), [
    ("NOFONE_EVALUATE(ch_data, ch_model, NOFONE_GATHER.out.cohort, gene_sets)",
     "NOFONE_EVALUATE(ch_data, ch_model, NOFONE_GATHER.out.cohort)", "4 inputs declared, called with 3"),
    ("NOFONE_FILTER(NOFONE_INGEST.out.data.join(SAMPLESHEET_STAGE.out.groups), annotation)",
     "NOFONE_FILTER(NOFONE_INGEST.out.data, annotation)", "input 1 is a tuple of 3"),
    ("ch_model = NOFONE_TRAIN.out.model.first()", "ch_model = NOFONE_TRAIN.out.models.first()", "no such output"),
    (".map { meta, folder -> [meta.dataset, folder] }", ".map { meta, folder -> folder }", "groupTuple"),
    ("NOFONE_TRAIN(NOFONE_FILTER.out.data, config_json)", "NOFONE_TRAIN(NOFONE_FILTER.out.data, [id: 'x'])",
     "not files"),
    ("NOFONE_COHORT_DE(NOFONE_INGEST.out.data, gene_sets, symbol_map)",
     "NOFONE_COHORT_DE(NOFONE_FILTER.out.data, gene_sets, symbol_map)", "used before NOFONE_FILTER is called"),
    ("NOFONE_GATHER(ch_parts)", "NOFONE_GATHER(ch_parts)\n    NOFONE_GATHER(ch_parts)", "already been used"),
])
def test_wiring_mistakes_fail(tmp_path, old, new, error):
    with pytest.raises(nff.PipelineError, match=error):
        stub_run(tmp_path, COHORT_PARAMS | GMT_PARAMS, root=_mutated(tmp_path, old, new))


@pytest.mark.parametrize(("old", "new"), [
    ("NOFONE_DESEQ2(ch_data, params.model ? absent : ch_model)",
     "NOFONE_DESEQ2(NOFONE_INGEST.out.data, params.model ? absent : ch_model)"),  # every sample, unfiltered
    ("            report_evaluation,\n", "            NOFONE_GATHER.out.cohort,\n"),
    ("NOFONE_CHUNK(ch_data, ch_model)", "NOFONE_CHUNK(ch_data, ch_data)"),
    ("NOFONE_EXPLAIN(NOFONE_GATHER.out.cohort, ch_regulators)", "NOFONE_EXPLAIN(NOFONE_GATHER.out.cohort, ch_model)"),
    ("            report_explain,\n", "            report_evaluation,\n"),
    ("            report_pathways\n", "            report_evaluation\n"),
])
def test_wiring_that_runs_but_is_wrong_is_caught(tmp_path, old, new):
    """Mistakes Nextflow would run without complaint: the source of each input is checked."""
    root = _mutated(tmp_path, old, new)
    params = COHORT_PARAMS | GMT_PARAMS | REGULATOR_PARAMS
    session = stub_run(tmp_path, params, root=root)
    with pytest.raises(AssertionError):
        check_wiring(session, session.params)


@pytest.mark.parametrize(("params", "profiles", "error"), [
    ({"simulate": False}, ("test",), "Give a sample sheet with --input"),
    ({"de_test": "density", "de_null": "outlier"}, ("test",), "needs --de_test equal-tail-midp"),
    ({}, ("test", "awsbatch"), "-profile awsbatch needs --awsqueue"),
    ({"model_type": "transformer"}, ("test",), "model_type"),
    ({"perturb": True}, ("test",), "--perturb and --augment need a diffusion model"),
    ({"augment": True, "model_type": "nbvae"}, ("test",), "--perturb and --augment need a diffusion model"),
    ({"screen": True}, ("test",), "--screen needs --gene_sets"),
    ({"train_config_json": "/nowhere/cfg.json"}, ("test",), "does not exist"),
    ({"simulate": False, "input": "NO_NORMALS"}, ("test",), "no sample has condition 'normal'"),
    ({"simulate": False, "input": "MISSING_FILE"}, ("test",), "counts .* does not exist"),
])
def test_pipeline_refuses_bad_setups(tmp_path, params, profiles, error):
    """Refused before any task runs, with a message that says what to change."""
    sheet = _sheet(tmp_path / "sheet")
    if params.get("input") == "NO_NORMALS":
        sheet.write_text(sheet.read_text().replace(",normal,", ",healthy,"))
        params = {**params, "input": str(sheet)}
    if params.get("input") == "MISSING_FILE":
        sheet.write_text(sheet.read_text().replace("sheet/c1.tsv", "sheet/gone.tsv"))
        params = {**params, "input": str(sheet)}
    with pytest.raises(nff.PipelineError, match=error):
        stub_run(tmp_path, params, profiles)
    assert not any((tmp_path / "work").glob("*_nofone_*")), "no task ran"


# ---------------------------------------------------------------------------------------------
# Sample-sheet staging, then INGEST for real
# ---------------------------------------------------------------------------------------------


def test_samplesheet_staging_against_ingest(tmp_path):
    """SAMPLESHEET_STAGE (its own Groovy) on a sheet that needs it: one matrix shared by many rows
    (an absolute path), two case files of the same name (relative to the launch folder), a
    metadata column whose value holds a comma; then INGEST reads every sample from its own file."""
    launch = tmp_path / "launch"
    simulated = tmp_path / "sim"
    args = nfg.evaluate(nfg.process_setting(nfg.read_config(REPO / "nextflow.config", ("test",)), "ext.args",
                                            "NOFONE_SIMULATE", []).node, {})
    subprocess.run(["nofone", "simulate", "--outdir", str(simulated), *args.split()], env=nff.cli_env(), check=True,
                   capture_output=True)
    for target, case in ((launch / "cases_a" / "sample.tsv", "case001"),
                         (launch / "more" / "cases_b" / "sample.tsv", "case002")):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(simulated / "counts" / "cases" / f"{case}.tsv", target)
    rows = _csv(simulated / "samplesheet.csv")
    for row in rows:
        row["counts"] = {"case001": "cases_a/sample.tsv", "case002": "more/cases_b/sample.tsv"}.get(
            row["sample"], str((simulated / row["counts"]).resolve()))
        row["site"] = "Oslo, Norway" if row["sample"] == "case002" else "Bergen"
    sheet = launch / "sheets" / "samplesheet.csv"
    sheet.parent.mkdir(parents=True)
    with open(sheet, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0].keys()])
        writer.writeheader()
        writer.writerows(rows)
    assert not nff.validate_sheet(nff.sheet_rows(sheet), launch), "the test sheet itself must be valid"

    session = nff.Session(tmp_path / "work", launch_dir=launch)
    stage = session.script(REPO / "subworkflows" / "local" / "samplesheet" / "main.nf")["SAMPLESHEET_STAGE"]
    out = stage(nff.Channel([[{"id": "cohort"}, nff.NFPath(sheet)]]))
    [[meta, staged_sheet, files]] = out.channels["ingest"].items
    assert meta == {"id": "cohort"} and out.channels["groups"].items == [[{"id": "cohort"}, "tissue"]]
    assert [f.name for f in files] == ["normals.tsv.gz", "sample.tsv", "sample.tsv"]
    text = staged_sheet.path.read_text()
    assert "inputs/2/sample.tsv" in text and "inputs/3/sample.tsv" in text and '"Oslo, Norway"' in text
    assert text.count("inputs/1/normals.tsv.gz") == len(rows) - 2, "the shared matrix: staged once"

    ingest = session.script(REPO / "modules" / "local" / "ingest" / "main.nf")["NOFONE_INGEST"]
    data = ingest(out.channels["ingest"], [], []).channels["data"].items[0][1].path
    samples = pq.read_table(data / "samples.parquet").to_pandas().set_index("sample_id")
    assert len(samples) == len(rows) and samples.loc["case002", "site"] == "Oslo, Norway"
    counts = pq.read_table(data / "counts.parquet").to_pandas().set_index("sample_id")["counts"]
    for case in ("case001", "case002"):  # each case read from its own file, not its namesake's
        expected = sum(int(line.split("\t")[1]) for line in
                       (simulated / "counts" / "cases" / f"{case}.tsv").read_text().splitlines()[1:])
        assert int(sum(counts[case])) == expected

    # SIMULATE's own sheet: count paths relative to the sheet's folder, found there
    own = nff.Session(tmp_path / "work2", launch_dir=tmp_path / "elsewhere")
    stage = own.script(REPO / "subworkflows" / "local" / "samplesheet" / "main.nf")["SAMPLESHEET_STAGE"]
    [[_, _, files]] = stage(nff.Channel([[{"id": "s"}, nff.NFPath(simulated / "samplesheet.csv")]])).channels[
        "ingest"].items
    assert all(f.path.is_relative_to(simulated) for f in files)
