"""The Nextflow pipeline, tested without Nextflow.

No Nextflow binary can run here, so these tests carry the proof instead (see DESIGN.md,
"Testing here"). tests/nextflow/nfgroovy.py reads the modules and configs; the tests then

- render every module's `script:` and `stub:` block as Nextflow would (test values for inputs,
  params, task and workflow; the ext.args that conf/modules.config and the test profile give
  each process; Nextflow's staging names for input files), run them with bash in a task folder
  with bin/ first on PATH against the real CLI, chained on a tiny simulated cohort
  (SIMULATE -> INGEST -> FILTER -> TRAIN -> CHUNK -> REPRESENT -> DE -> GATHER -> DESEQ2,
  EVALUATE -> REPORT, and INGEST -> COHORT_DE with its params set), and check that every
  declared output exists;
- parse each rendered `nofone` command line with the CLI's own option parser, for many
  combinations of params;
- check params (used = declared in nextflow.config = described in nextflow_schema.json), the
  sample-sheet schema (with nf-schema's keywords emulated), labels, containers, GPU scoping,
  retries, profiles, includes and channel names;
- run the Groovy syntax check on every Nextflow file when `groovy` is installed.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pyarrow.parquet as pq
import pytest

import nofone

REPO = Path(__file__).resolve().parents[1]
MODULES = REPO / "modules" / "local"
SYNTAX_CHECK = Path(os.environ.get("NF_SYNTAX_CHECK", REPO.parent / "shared" / "tools" / "nf_syntax_check.groovy"))
JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"

_spec = importlib.util.spec_from_file_location("nfgroovy", REPO / "tests" / "nextflow" / "nfgroovy.py")
nfg = sys.modules.setdefault("nfgroovy", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(nfg)

EXPECTED = {
    "NOFONE_SIMULATE": "simulate", "NOFONE_INGEST": "ingest", "NOFONE_FILTER": "filter",
    "NOFONE_TRAIN": "train", "NOFONE_CHUNK": "chunk", "NOFONE_REPRESENT": "represent",
    "NOFONE_DE": "de", "NOFONE_GATHER": "gather", "NOFONE_COHORT_DE": "cohort-de",
    "NOFONE_DESEQ2": "deseq2", "NOFONE_EVALUATE": "evaluate", "NOFONE_REPORT": "report",
}
# Commands of a command group: `nofone deseq2 n-of-one`
SUBCOMMANDS = {"NOFONE_DESEQ2": "n-of-one"}
# The resource label of every process (README, "Running on a cluster or in the cloud: Nextflow")
PROCESS_LABELS = {
    "NOFONE_SIMULATE": "process_single", "NOFONE_INGEST": "process_medium", "NOFONE_FILTER": "process_low",
    "NOFONE_TRAIN": "process_gpu", "NOFONE_CHUNK": "process_single", "NOFONE_REPRESENT": "process_gpu",
    "NOFONE_DE": "process_low", "NOFONE_GATHER": "process_low", "NOFONE_COHORT_DE": "process_medium",
    "NOFONE_DESEQ2": "process_medium", "NOFONE_EVALUATE": "process_medium", "NOFONE_REPORT": "process_single",
}
# Optional path inputs: [] when what they hold did not run (workflows/nofone.nf)
OPTIONAL_INPUTS = {"genes", "annotation", "config_json", "gene_sets", "symbol_map", "evaluation", "cohort_de",
                   "NOFONE_DESEQ2.model"}
# EVALUATE in the chained test, beyond the test profile's ext.args: two held-out normals, one
# spike-in fold change, one random-controls repeat (CI has 2 cores)
EVALUATE_SMALL = "--max-negative 2 --spike-lfc 2 --repeats 1 --n-random-controls 3"
# NOFONE_COHORT_DE runs only with --cohort_group: its params in a test-profile-like run (the
# simulated sheet's tissue column holds tissue01, tissue02; batch b1, b2), with the fixture GMT
# and symbol map (tests/nextflow/fixtures/cohort: SIM<n> -> GENE<n>, three sets of 20 genes)
COHORT_FIXTURES = REPO / "tests" / "nextflow" / "fixtures" / "cohort"
COHORT_PARAMS = {"cohort_group": "tissue", "cohort_contrast": "tissue02,tissue01", "cohort_covariates": "batch"}
GPU_PROCESSES = {"NOFONE_TRAIN", "NOFONE_REPRESENT"}
LABELS = ("process_single", "process_low", "process_medium", "process_high", "process_gpu")
SESSION = "4b8c0c57-0b1e-4c5e-9d3b-nofone-test"
NF_FILES = sorted([REPO / "main.nf", *REPO.glob("workflows/*.nf"), *REPO.glob("subworkflows/**/*.nf"),
                   *MODULES.glob("*/main.nf")])
CONFIG_FILES = sorted([REPO / "nextflow.config", *REPO.glob("conf/*.config")])
NF_TEST_FILES = sorted([*REPO.glob("tests/*.nf.test"), *REPO.glob("tests/modules/*.nf.test"),
                        *REPO.glob("tests/nextflow/*.config")])


# ---------------------------------------------------------------------------------------------
# Reading the pipeline
# ---------------------------------------------------------------------------------------------


def load_processes() -> dict[str, nfg.Process]:
    processes = {}
    for path in sorted(MODULES.glob("*/main.nf")):
        found = nfg.parse_processes(path)
        assert len(found) == 1, f"{path}: one process per module file, found {[p.name for p in found]}"
        processes[found[0].name] = found[0]
    return processes


PROCESSES = load_processes()


def config(profiles: tuple[str, ...] = ()) -> list[nfg.Setting]:
    return nfg.read_config(REPO / "nextflow.config", profiles)


def labels_of(process: nfg.Process) -> list[str]:
    return process.directive_values("label", {})


def params_for(profiles: tuple[str, ...] = (), launch_dir: Path = REPO, **overrides) -> dict:
    """Every param's value as Nextflow would have it (dynamic defaults get a test value)."""
    scope = {"launchDir": str(launch_dir), "projectDir": str(REPO)}
    values = {}
    for name, setting in nfg.config_params(config(profiles)).items():
        try:
            values[name] = nfg.evaluate(setting.node, scope)
        except nfg.GroovyError:
            values[name] = f"dynamic-{name}"  # e.g. trace_report_suffix: the launch time
    values.update(overrides)
    return values


# ---------------------------------------------------------------------------------------------
# Running one task the way Nextflow would
# ---------------------------------------------------------------------------------------------


@dataclass
class Task:
    name: str
    dir: Path
    script: str
    outputs: dict[str, list[Path]]


def task_scope(name: str, params: dict, profiles: tuple[str, ...], attempt: int = 1, extra_args: str = "") -> dict:
    process = PROCESSES[name]
    scope = {
        "params": params,
        "task": {"process": f"NOFONE:{name}", "attempt": attempt, "cpus": 2, "ext": {}, "index": 1},
        "workflow": {"sessionId": SESSION, "containerEngine": None, "launchDir": params.get("_launch_dir")},
        "projectDir": str(REPO),
        "moduleDir": str(process.path.parent),
    }
    setting = nfg.process_setting(config(profiles), "ext.args", name, labels_of(process))
    if setting is not None:
        scope["task"]["ext"]["args"] = nfg.value_of(setting.node, scope)
    if extra_args:  # a test's own options after the config's (the CLI keeps the last of an option)
        scope["task"]["ext"]["args"] = f"{scope['task']['ext'].get('args') or ''} {extra_args}".strip()
    return scope


def stage_inputs(process: nfg.Process, inputs: list, scope: dict, task_dir: Path | None) -> None:
    """Bind input values in `scope` and, with a task folder, link the files as Nextflow stages
    them (stageAs patterns expanded, e.g. 'inputs/*/*' -> inputs/<n>/<file name>)."""
    assert len(inputs) == len(process.inputs), f"{process.name}: {len(process.inputs)} inputs expected"
    for declaration, value in zip(process.inputs, inputs):
        values = list(value) if declaration.qualifier == "tuple" else [value]
        assert len(values) == len(declaration.elements)
        for element, item in zip(declaration.elements, values):
            if element.qualifier == "val":
                scope[element.name] = item
                continue
            assert element.qualifier == "path", f"{process.name}: unsupported input {element.qualifier}"
            files = [] if item in (None, []) else (list(item) if isinstance(item, (list, tuple)) else [item])
            pattern = element.options.get("stageAs")
            names = nfg.expand_stage_names(nfg.evaluate(pattern, scope) if pattern else None,
                                           [Path(f).name for f in files])
            assert len(set(names)) == len(names), f"{process.name}: staged names collide: {names}"
            if task_dir is not None:
                for source, staged in zip(files, names):
                    target = task_dir / staged
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to(Path(source).resolve())
            scope[element.name] = nfg.PathList(names)


def cli_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{REPO / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["NOFONE_PROGRESS"] = "0"
    env["PYTHONNOUSERSITE"] = "1"
    return env


def run_task(name: str, inputs: list, workdir: Path, params: dict, *, stub: bool = False,
             profiles: tuple[str, ...] = ("test",), attempt: int = 1, extra_args: str = "") -> Task:
    process = PROCESSES[name]
    task_dir = Path(tempfile.mkdtemp(prefix=f"{name.lower()}-", dir=workdir))
    scope = task_scope(name, params, profiles, attempt, extra_args)
    stage_inputs(process, inputs, scope, task_dir)
    staged = {p.relative_to(task_dir) for p in task_dir.rglob("*") if p.is_symlink()}
    block = process.stub if stub else process.script
    script = nfg.render(block, scope)
    (task_dir / ".command.sh").write_text(script)
    result = subprocess.run(["bash", "-euo", "pipefail", ".command.sh"], cwd=task_dir, env=cli_env(),
                            capture_output=True, text=True, timeout=300)
    mode = "stub" if stub else "script"
    assert result.returncode == 0, (f"{name} ({mode}) exited {result.returncode}\n--- script\n{script}"
                                    f"--- stderr\n{result.stderr[-3000:]}")
    outputs: dict[str, list[Path]] = {}
    for declaration in process.outputs:
        found: list[Path] = []
        for element in declaration.elements:
            if element.qualifier != "path":
                continue
            pattern = nfg.evaluate(element.node, scope)
            if any(ch in pattern for ch in "*?[{"):
                matches = sorted(p for p in task_dir.glob(pattern) if p.relative_to(task_dir) not in staged)
            else:
                matches = [task_dir / pattern] if (task_dir / pattern).exists() else []
            assert matches or declaration.optional, (
                f"{name} ({mode}): declared output '{pattern}' (emit: {declaration.emit}) was not created\n"
                f"--- script\n{script}--- files\n{sorted(str(p.relative_to(task_dir)) for p in task_dir.rglob('*'))}")
            found.extend(matches)
        outputs[declaration.emit] = found
    versions = (task_dir / "versions.yml").read_text()
    assert versions == f'"NOFONE:{name}":\n    nofone: {nofone.__version__}\n', versions
    return Task(name, task_dir, script, outputs)


def in_parallel(calls) -> list:
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(*call) for call in calls]
        return [f.result() for f in futures]


def stage_samplesheet(sheet: Path, launch_dir: Path) -> tuple[str, list[Path], list[str]]:
    """Python mirror of stageSampleSheet() in subworkflows/local/samplesheet/main.nf: the
    rewritten sheet (counts -> inputs/<n>/<file name>), the distinct files in number order, and
    the sheet's columns."""
    delimiter = "\t" if sheet.name.lower().endswith(".tsv") else ","
    with open(sheet, newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        rows = [{k: (v or "").strip() for k, v in row.items()} for row in reader]
        columns = list(reader.fieldnames)
    numbers: dict[str, int] = {}
    files: list[Path] = []
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        value = row["counts"]
        if value.startswith("/") or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", value):
            path = Path(value)
        elif (launch_dir / value).exists():
            path = launch_dir / value
        else:
            path = sheet.parent / value
        assert path.exists(), path
        if str(path) not in numbers:
            files.append(path)
            numbers[str(path)] = len(files)
        staged = f"inputs/{numbers[str(path)]}/{path.name}"
        writer.writerow([staged if c == "counts" else row[c] for c in columns])
    return out.getvalue(), files, columns


# ---------------------------------------------------------------------------------------------
# Modules against the real CLI
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def background():
    """One task running beside the chain (as Nextflow runs independent processes), joined at
    teardown even when the test fails first."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


def test_module_scripts_run_chained_against_the_cli(tmp_path, background):
    """-profile test with the cohort-DE params set, task by task: every script runs and creates
    every declared output."""
    launch = tmp_path / "launch"
    launch.mkdir()
    # gseapy is optional (the enrichment needs it): without it, COHORT_DE runs without a GMT
    enrichment = importlib.util.find_spec("gseapy") is not None
    gmt = {"gene_sets": str(COHORT_FIXTURES / "gene_sets.gmt"), "symbol_map": str(COHORT_FIXTURES / "symbol_map.tsv")}
    params = params_for(("test",), launch, checkpoint_dir=str(tmp_path / "checkpoints"),
                        outdir=str(tmp_path / "results"), **COHORT_PARAMS, **(gmt if enrichment else {}))
    params["_launch_dir"] = str(launch)
    work = tmp_path / "work"
    work.mkdir()

    simulated = run_task("NOFONE_SIMULATE", [], work, params).outputs["simulated"][0]

    # SIMULATE's own sheet: count paths relative to the sheet's folder
    _, sim_files, _ = stage_samplesheet(simulated / "samplesheet.csv", launch)
    assert all(f.is_relative_to(simulated) for f in sim_files)

    # A sheet that needs the staging: one matrix shared by 28 rows (absolute path), two case
    # files with the same name (relative to the launch directory), and an extra metadata column
    # whose value holds a comma
    sheet_dir = launch / "sheets"
    sheet_dir.mkdir()
    for target, case in ((launch / "cases_a" / "sample.tsv", "case001"),
                         (launch / "more" / "cases_b" / "sample.tsv", "case002")):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(simulated / "counts" / "cases" / f"{case}.tsv", target)
    with open(simulated / "samplesheet.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["counts"] = {"case001": "cases_a/sample.tsv", "case002": "more/cases_b/sample.tsv"}.get(
            row["sample"], str((simulated / row["counts"]).resolve()))
        row["site"] = "Oslo, Norway" if row["sample"] == "case002" else "Bergen"
    sheet = sheet_dir / "samplesheet.csv"
    with open(sheet, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0].keys()])
        writer.writeheader()
        writer.writerows(rows)
    assert not validate_sheet(sheet_rows(sheet), launch), "the test sheet itself must be valid"

    text, files, columns = stage_samplesheet(sheet, launch)
    assert [f.name for f in files] == ["normals.tsv.gz", "sample.tsv", "sample.tsv"]
    assert "inputs/2/sample.tsv" in text and "inputs/3/sample.tsv" in text and '"Oslo, Norway"' in text
    rewritten = tmp_path / "collect" / "samplesheet.csv"
    rewritten.parent.mkdir()
    rewritten.write_text(text)

    ingest = run_task("NOFONE_INGEST", [rewritten, files, [], []], work, params)
    data = ingest.outputs["data"][0]
    samples = pq.read_table(data / "samples.parquet").to_pandas().set_index("sample_id")
    assert len(samples) == len(rows) and samples.loc["case002", "site"] == "Oslo, Norway"
    counts = pq.read_table(data / "counts.parquet").to_pandas().set_index("sample_id")["counts"]
    for case in ("case001", "case002"):  # each case read from its own file, not its namesake's
        expected = sum(int(line.split("\t")[1]) for line in
                       (simulated / "counts" / "cases" / f"{case}.tsv").read_text().splitlines()[1:])
        assert int(sum(counts[case])) == expected

    # COHORT_DE: every ingested sample, beside FILTER -> ... -> GATHER (workflows/nofone.nf)
    optional = [Path(params[name]) if params.get(name) else [] for name in ("gene_sets", "symbol_map")]
    cohort_de = background.submit(run_task, "NOFONE_COHORT_DE", [data, *optional], work, params)

    group = "tissue" if "tissue" in columns else ""
    filtered = run_task("NOFONE_FILTER", [data, group, []], work, params).outputs["data"][0]
    config_json = Path(params["train_config_json"])  # the test profile's tiny model, 3 epochs
    train = run_task("NOFONE_TRAIN", [filtered, config_json], work, params)
    model = train.outputs["model"][0]
    checkpoints = f"--checkpoint-dir {params['checkpoint_dir']}/{SESSION} --resume"
    assert f"--config train_config/{config_json.name} {checkpoints}" in train.script
    assert json.loads((model / "config.json").read_text())  # a model folder

    chunks = run_task("NOFONE_CHUNK", [filtered, model], work, params).outputs["chunks"]
    assert len(chunks) >= 2, "the test profile's chunk_size must scatter over several tasks"
    tested = [s for c in chunks for s in c.read_text().split()]
    assert {"case001", "case002"} <= set(tested)

    reps = in_parallel([(run_task, "NOFONE_REPRESENT", [({"id": c.stem}, c), model, filtered], work, params)
                        for c in chunks])
    des = in_parallel([(run_task, "NOFONE_DE", [({"id": c.stem}, r.outputs["representations"][0]), model, filtered],
                        work, params) for c, r in zip(chunks, reps)])
    parts = sorted([r.outputs["representations"][0] for r in reps] + [d.outputs["de"][0] for d in des],
                   key=lambda p: p.name)
    cohort = run_task("NOFONE_GATHER", [parts], work, params).outputs["cohort"][0]

    summary = (cohort / "summary.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in summary[1:]) == sorted(tested)
    assert pq.ParquetFile(cohort / "representations.parquet").metadata.num_rows == len(tested)
    assert sorted(p.stem for p in (cohort / "samples").glob("*.tsv")) == sorted(tested)

    # After GATHER: DESEQ2 and EVALUATE side by side (EVALUATE kept small: EVALUATE_SMALL; its
    # enrichment needs no gseapy, so it always gets the fixture GMT)
    deseq2, evaluate = in_parallel([
        (run_task, "NOFONE_DESEQ2", [filtered, model], work, params),
        (lambda *a: run_task(*a, extra_args=EVALUATE_SMALL), "NOFONE_EVALUATE",
         [filtered, model, cohort, COHORT_FIXTURES / "gene_sets.gmt"], work, params),
    ])
    assert ("--controls-trained-by model --cases-except-condition normal --cases-except-condition "
            "'heldout_normal' --controls-condition normal --seed 0") in deseq2.script
    training = pq.read_table(model / "training_representations.parquet").to_pandas()
    trained = set(training.loc[training["split"] == "train", "sample_id"])
    deseq2_out = deseq2.outputs["results"][0]
    with open(deseq2_out / "summary.tsv", newline="") as handle:
        deseq2_summary = list(csv.DictReader(handle, delimiter="\t"))
    assert sorted(r["sample_id"] for r in deseq2_summary) == ["case001", "case002"], "the cases, not the normals"
    with open(deseq2_out / "controls.tsv", newline="") as handle:
        drawn = list(csv.DictReader(handle, delimiter="\t"))
    for case in ("case001", "case002"):  # every training normal, and only those (no --deseq2_n_controls)
        assert {r["control_id"] for r in drawn if r["sample_id"] == case} == trained
    assert pq.ParquetFile(deseq2_out / "deseq2.parquet").metadata.num_rows > 0

    evaluation = evaluate.outputs["evaluation"][0]
    assert "evaluate --data dataset --model model --representations cohort --de cohort" in evaluate.script
    assert "--gene-set gene_sets/gene_sets.gmt --normal-value normal --negative-condition 'heldout_normal'" \
        in evaluate.script
    evaluated = json.loads((evaluation / "evaluation.json").read_text())
    assert evaluated["n_negative_controls"] == 2 and evaluated["n_cases"] == 2 and evaluated["run"] is None
    assert evaluated["inputs"]["representations"] == evaluated["inputs"]["de"] == "cohort"
    with open(evaluation / "negative_control_summary.tsv", newline="") as handle:
        rows_nc = list(csv.DictReader(handle, delimiter="\t"))
    assert {(r["method"], r["controls"]) for r in rows_nc} == {("dgd", "model"), ("deseq2", "all same-tissue"),
                                                                ("deseq2", "3 random")}
    with open(evaluation / "spike_ins_summary.tsv", newline="") as handle:
        spikes = list(csv.DictReader(handle, delimiter="\t"))
    assert {(r["method"], r["spike_lfc"]) for r in spikes} == {("dgd", "2.0"), ("deseq2", "2.0")}
    with open(evaluation / "enrichment_summary.tsv", newline="") as handle:
        sets = {(r["method"], r["gene_set"]) for r in csv.DictReader(handle, delimiter="\t")}
    assert sets == {(m, f"SIMULATED_SET_{x}") for m in ("dgd", "deseq2") for x in "ABC"}
    assert (evaluation / "nll_auroc.tsv").is_file()

    task = cohort_de.result()
    assert "--group 'tissue' --contrast 'tissue02,tissue01' --covariate 'batch' --epochs 3" in task.script
    if enrichment:
        assert "--gene-sets gene_sets/gene_sets.gmt --symbol-map symbol_map/symbol_map.tsv" in task.script
    results = task.outputs["results"][0]
    report = json.loads((results / "cohort_de_report.json").read_text())
    assert report["samples"]["n"] == len(rows), "COHORT_DE trains on every sample of the sheet"
    tissues = [row["tissue"] for row in rows]
    assert report["samples"]["per_level"] == {t: tissues.count(t) for t in ("tissue02", "tissue01")}
    assert report["contrast"]["covariates"] == ["batch"]
    assert report["model"]["epochs_run"] == params["cohort_epochs"] == 3, "the test profile's tiny NB-VAE"
    table = (results / "cohort_de.tsv").read_text().splitlines()
    assert len(table) - 1 == report["genes"]["n_modelled"] > 0
    assert (results / "latent.png").stat().st_size > 0 and (results / "model" / "weights.safetensors").exists()
    if enrichment:
        assert report["enrichment"]["n_gene_sets"] == 3
        assert report["enrichment"]["genes_with_symbol"] == report["genes"]["n_modelled"], "the symbol map applied"
        with open(results / "enrichment_prerank.tsv", newline="") as handle:
            terms = {(r["ranking"], r["term"]) for r in csv.DictReader(handle, delimiter="\t")}
        assert terms == {(r, f"SIMULATED_SET_{s}") for r in ("nbvae", "deseq2") for s in "ABC"}

    # REPORT: the pipeline's folders, with EVALUATE's and COHORT_DE's
    report_task = run_task("NOFONE_REPORT", [filtered, model, cohort, evaluation, results],  # COHORT_DE's results
                           work, params)
    assert "--evaluation evaluation --cohort-de cohort_de" in report_task.script
    folder = report_task.outputs["report"][0]
    assert (folder / "report.html").stat().st_size > 0 and (folder / "tables").is_dir()
    sections = json.loads((folder / "report_summary.json").read_text())["sections"]
    for section in ("summary", "training", "degs", "evaluation", "cohort"):
        assert sections[section]["available"], (section, sections[section])


def _dummy_inputs(process: nfg.Process, root: Path) -> list:
    """Placeholder inputs for a stub run: files with the declared names, two for list inputs."""
    values = []
    for declaration in process.inputs:
        items = []
        for element in declaration.elements:
            if element.qualifier == "val":
                items.append({"id": "chunk_0001"} if element.name == "meta" else "tissue")
                continue
            folder = root / process.name / element.name
            first = folder / "a" / f"{element.name}.txt"
            # two files of the same name where Nextflow keeps names apart (stageAs 'x/*/*'), two
            # names (as reps_chunk_0001, de_chunk_0001) where it does not
            second = folder / "b" / (f"{element.name}.txt" if element.name != "parts" else f"{element.name}_2.txt")
            for f in (first, second):
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text("placeholder\n")
            stage_as = element.options.get("stageAs")
            many = "*/*" in (nfg.evaluate(stage_as, {}) if stage_as else "") or element.name == "parts"
            items.append([first, second] if many else first)
        values.append(tuple(items) if declaration.qualifier == "tuple" else items[0])
    return values


def test_module_stubs_create_every_declared_output(tmp_path):
    params = params_for(("test",), tmp_path, checkpoint_dir=str(tmp_path / "checkpoints"))
    params["_launch_dir"] = str(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    inputs = {name: _dummy_inputs(process, tmp_path / "inputs") for name, process in PROCESSES.items()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        tasks = list(pool.map(lambda name: run_task(name, inputs[name], work, params, stub=True), inputs))
    assert {t.name for t in tasks} == set(EXPECTED)
    for task in tasks:
        runs_step = re.search(rf"nofone (--threads \S+ )?{EXPECTED[task.name]}\b", task.script)
        assert not runs_step, f"{task.name}: a stub must not run the step"


# ---------------------------------------------------------------------------------------------
# Every rendered command line against the CLI's own parser
# ---------------------------------------------------------------------------------------------

VARIANTS = [
    ((), {}),
    (("test",), {}),
    ((), {"round_counts": True, "protein_coding": True, "train_config_json": "cfg.json", "epochs": 7,
          "represent_method": "one_opt", "de_test": "density", "q_threshold": 0.05, "lfc_threshold": 0.5,
          "normal_value": "healthy", "chunk_size": 3}),
    ((), {"train_config": "paper", "model": "/models/bulkdgd_v1", "annotation": "ensembl.tsv.gz"}),
    (("test",), COHORT_PARAMS | {"de_null": "outlier"}),
    ((), {"cohort_group": "Status", "cohort_contrast": "lactate,virgin", "cohort_covariates": " CellType, batch,",
          "cohort_epochs": 5, "cohort_latent_dim": 2, "gene_sets": "h.all.gmt", "symbol_map": "mouse_to_human.tsv"}),
    ((), {"skip_deseq2": True, "negative_conditions": "heldout_normal, Normal tissue,", "deseq2_n_controls": 5,
          "deseq2_seed": 3, "deseq2_same_tissue": True, "evaluate_max_negative": 3, "evaluate_repeats": 0,
          "normal_value": "healthy", "gene_sets": "h.all.gmt.gz"}),
]


def _cli_commands():
    from typer.main import get_command

    from nofone.cli.app import app

    return get_command(app).commands


def _nofone_lines(script: str) -> list[str]:
    return [line.strip() for line in script.splitlines() if line.strip().startswith("nofone ")]


@pytest.mark.parametrize("variant", range(len(VARIANTS)))
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_rendered_command_lines_parse(name, variant):
    profiles, overrides = VARIANTS[variant]
    process = PROCESSES[name]
    commands = _cli_commands()
    for attempt in (1, 2):
        for optional_files in (False, True):
            params = params_for(profiles, **overrides)
            if name == "NOFONE_COHORT_DE" and not params["cohort_group"]:
                params.update(COHORT_PARAMS)  # it runs only with --cohort_group
            params["_launch_dir"] = "/launch"
            scope = task_scope(name, params, profiles, attempt)
            inputs = _dummy_inputs_dry(process, optional_files)
            stage_inputs(process, inputs, scope, None)
            for block, label in ((process.script, "script"), (process.stub, "stub")):
                script = nfg.render(block, scope)
                lines = _nofone_lines(script)
                if label == "stub":
                    assert not lines, f"{name}: the stub runs {lines}"
                    continue
                assert len(lines) == 1, f"{name}: one nofone command per script, found {lines}"
                words = shlex.split(lines[0])
                assert words[1:3] == ["--threads", str(scope["task"]["cpus"])], "each task passes its cpus"
                words = [words[0], *words[3:]]
                assert words[1] == EXPECTED[name]
                command = commands[words[1]]
                if name in SUBCOMMANDS:  # a command group: its subcommand parses the options
                    assert words[2] == SUBCOMMANDS[name], lines[0]
                    command = command.commands[words[2]]
                    words = [words[0], *words[2:]]
                try:
                    command.make_context(words[1], words[2:], resilient_parsing=False)
                except Exception as exc:  # click.UsageError and friends
                    pytest.fail(f"{name} ({profiles}, {overrides}, attempt {attempt}): {lines[0]!r} "
                                f"is not a valid command line: {exc}")


def _dummy_inputs_dry(process: nfg.Process, optional_files: bool) -> list:
    values = []
    for declaration in process.inputs:
        items = []
        for element in declaration.elements:
            if element.qualifier == "val":
                groups = "tissue,batch" if optional_files else ""
                items.append({"id": "chunk_0003"} if element.name == "meta" else groups)
            elif element.name in OPTIONAL_INPUTS or f"{process.name}.{element.name}" in OPTIONAL_INPUTS:
                items.append([Path(f"/x/{element.name}.tsv")] if optional_files else [])
            elif element.name == "counts":
                items.append([Path("/a/ReadsPerGene.out.tab"), Path("/b/ReadsPerGene.out.tab")])
            elif element.name == "parts":
                items.append([Path("/w/1/de_chunk_0001"), Path("/w/2/reps_chunk_0001")])
            else:
                items.append(Path(f"/x/{element.name}"))
        values.append(tuple(items) if declaration.qualifier == "tuple" else items[0])
    return values


def test_every_script_passes_ext_args():
    for name, process in PROCESSES.items():
        scope = task_scope(name, params_for(), ())
        scope["task"]["ext"]["args"] = "--EXT-ARGS-SENTINEL"
        stage_inputs(process, _dummy_inputs_dry(process, False), scope, None)
        lines = _nofone_lines(nfg.render(process.script, scope))
        assert lines[0].endswith("--EXT-ARGS-SENTINEL"), f"{name}: $args must end the nofone command line"


@pytest.mark.parametrize(("overrides", "expected"), [
    ({}, {}),  # no --cohort_group: the process does not run, and its ext.args say nothing
    (COHORT_PARAMS, {"group": "tissue", "contrast": "tissue02,tissue01", "covariates": ("batch",)}),
    ({"cohort_group": "Status", "cohort_contrast": "lactate,virgin", "cohort_covariates": " CellType, batch,",
      "cohort_epochs": 5, "cohort_latent_dim": 2},
     {"group": "Status", "contrast": "lactate,virgin", "covariates": ("CellType", "batch"), "epochs": 5,
      "latent_dim": 2}),
    ({"cohort_group": "Cell type", "cohort_contrast": "basal cell,luminal cell"},  # quoted: spaces survive
     {"group": "Cell type", "contrast": "basal cell,luminal cell", "covariates": ()}),
])
def test_cohort_de_ext_args(overrides, expected):
    """conf/modules.config: --group, --contrast, one --covariate per comma-separated column, and
    --epochs/--latent-dim only when set; parsed by the CLI into the options they name."""
    args = task_scope("NOFONE_COHORT_DE", params_for((), **overrides), ())["task"]["ext"]["args"]
    if not expected:
        assert args == ""
        return
    context = _cli_commands()["cohort-de"].make_context("cohort-de", ["--input", "d", "--outdir", "o",
                                                                      *shlex.split(args)])
    got = {k: (tuple(v) if isinstance(v, list | tuple) else v) for k, v in context.params.items()}
    assert {k: got[k] for k in expected} == expected, args
    for option in ("epochs", "latent_dim"):
        if option not in expected:
            assert got[option] is None, f"{option} passed without its param: {args}"
    assert params_for(("test",))["cohort_epochs"] == 3 and params_for(("test",))["cohort_group"] is None


def test_cohort_de_runs_on_every_ingested_sample_only_with_cohort_group():
    """workflows/nofone.nf: COHORT_DE inside `if (params.cohort_group)`, on INGEST's data (every
    sample, not FILTER's), with the GMT and symbol map or [], its versions and output wired."""
    text = nfg.strip_comments((REPO / "workflows" / "nofone.nf").read_text())
    start = text.index("if (params.cohort_group)")
    block = text[start:nfg.brace_end(text, text.index("{", start))]
    assert _calls(block, "NOFONE_COHORT_DE") == [["NOFONE_INGEST.out.data", "gene_sets", "symbol_map"]]
    assert _calls(text, "NOFONE_COHORT_DE") == _calls(block, "NOFONE_COHORT_DE"), "called once, under the if"
    for name in ("gene_sets", "symbol_map"):
        assert re.search(rf"\b{name}\s*=\s*params\.{name} \? file\(params\.{name}, checkIfExists: true\) : \[\]",
                         text), name
    assert "ch_versions.mix(NOFONE_COHORT_DE.out.versions)" in block
    emitted = text.split("emit:")[1]
    assert re.search(r"(?m)^\s*cohort_de\s*=\s*ch_cohort_de\b", emitted)
    assert "ch_cohort_de = NOFONE_COHORT_DE.out.results" in block


def _parsed(command: str, required: list[str], args: str) -> dict:
    """The options a command line gives, as the CLI parses them (`deseq2 n-of-one` for DESEQ2)."""
    group, _, sub = command.partition(" ")
    cli = _cli_commands()[group]
    cli = cli.commands[sub] if sub else cli
    context = cli.make_context(command, [*required, *shlex.split(args)])
    return {k: (tuple(v) if isinstance(v, list | tuple) else v) for k, v in context.params.items()}


@pytest.mark.parametrize(("overrides", "expected"), [
    ({}, {"cases_except_condition": ("normal",), "controls_condition": "normal", "same_tissue": False,
          "n_controls": None, "seed": 0, "q_threshold": 0.01, "lfc_threshold": 1.0}),
    ({"negative_conditions": "heldout_normal, Normal tissue,", "normal_value": "healthy", "deseq2_n_controls": 5,
      "deseq2_seed": 3, "deseq2_same_tissue": True, "q_threshold": 0.05, "lfc_threshold": 0.5},
     {"cases_except_condition": ("healthy", "heldout_normal", "Normal tissue"), "controls_condition": "healthy",
      "same_tissue": True, "n_controls": 5, "seed": 3, "q_threshold": 0.05, "lfc_threshold": 0.5}),
])
def test_deseq2_ext_args(overrides, expected):
    """conf/modules.config: the cases are every sample neither --normal_value nor of
    --negative_conditions, the controls the --normal_value samples (the script keeps those TRAIN
    trained on: --controls-trained-by), random controls and their seed from the params."""
    args = task_scope("NOFONE_DESEQ2", params_for((), **overrides), ())["task"]["ext"]["args"]
    got = _parsed("deseq2 n-of-one", ["--input", "d", "--outdir", "o"], args)
    assert {k: got[k] for k in expected} == expected, args
    assert got["repeats"] == 1 and got["controls_trained_by"] is None and got["cases_condition"] is None


@pytest.mark.parametrize(("overrides", "expected"), [
    ({}, {"deseq2": True, "normal_value": "normal", "negative_condition": (), "max_negative": 20, "repeats": 20,
          "lfc_threshold": 1.0}),
    ({"skip_deseq2": True, "negative_conditions": "heldout_normal", "evaluate_max_negative": 3,
      "evaluate_repeats": 0, "lfc_threshold": 0.5, "normal_value": "healthy"},
     {"deseq2": False, "normal_value": "healthy", "negative_condition": ("heldout_normal",), "max_negative": 3,
      "repeats": 0, "lfc_threshold": 0.5}),
])
def test_evaluate_ext_args(overrides, expected):
    """conf/modules.config: --no-deseq2 exactly with --skip_deseq2; negative controls and the size
    of the evaluation from the params."""
    args = task_scope("NOFONE_EVALUATE", params_for((), **overrides), ())["task"]["ext"]["args"]
    got = _parsed("evaluate", ["--outdir", "o"], args)
    assert {k: got[k] for k in expected} == expected, args
    test = task_scope("NOFONE_EVALUATE", params_for(("test",)), ("test",))["task"]["ext"]["args"]
    assert _parsed("evaluate", ["--outdir", "o"], test)["negative_condition"] == ("heldout_normal",), \
        "-profile test: the simulated held-out normals are negative controls"
    assert task_scope("NOFONE_REPORT", params_for((), **overrides), ())["task"]["ext"]["args"] == ""


def _if_block(text: str, condition: str) -> str:
    start = text.index(f"if ({condition})")
    return text[start:nfg.brace_end(text, text.index("{", start))]


def test_deseq2_evaluate_and_report_run_after_gather_unless_skipped():
    """workflows/nofone.nf: DESEQ2, EVALUATE and REPORT each called once, under its skip param
    (EVALUATE also not with --model); --skip_deseq2 removes the DESEQ2 call and gives EVALUATE
    --no-deseq2; REPORT gets [] for EVALUATE and COHORT_DE when they do not run."""
    text = nfg.strip_comments((REPO / "workflows" / "nofone.nf").read_text())
    calls = {
        "NOFONE_DESEQ2": ("!params.skip_deseq2", [["ch_data", "params.model ? [] : ch_model"]]),
        "NOFONE_EVALUATE": ("!params.skip_evaluate && !params.model",
                            [["ch_data", "ch_model", "NOFONE_GATHER.out.cohort", "gene_sets"]]),
        "NOFONE_REPORT": ("!params.skip_report", [["ch_data", "ch_model", "NOFONE_GATHER.out.cohort",
                                                   "report_evaluation", "params.cohort_group ? ch_cohort_de : []"]]),
    }
    for name, (condition, expected) in calls.items():
        block = _if_block(text, condition)
        assert _calls(block, name) == expected, name
        assert _calls(text, name) == expected, f"{name}: called once, under the if"
        assert f"ch_versions.mix({name}.out.versions)" in block, name
        assert text.index(block) > text.index("NOFONE_GATHER(ch_parts)"), f"{name}: after GATHER"
    assert re.search(r"(?m)^\s*report_evaluation\s*=\s*\[\]", text), "REPORT without EVALUATE: []"
    assert "report_evaluation = NOFONE_EVALUATE.out.evaluation" in _if_block(text, calls["NOFONE_EVALUATE"][0])
    emitted = text.split("emit:")[1]
    for emit, channel in (("deseq2", "ch_deseq2"), ("evaluation", "ch_evaluation"), ("report", "ch_report")):
        assert re.search(rf"(?m)^\s*{emit}\s*=\s*{channel}\b", emitted), emit

    # --skip_deseq2 as Nextflow would see it: the DESEQ2 call is skipped and EVALUATE says --no-deseq2
    def runs(block_condition: str, params: dict) -> bool:
        node = nfg.parse_expression(nfg.tokenize(block_condition))
        return nfg.truth(nfg.evaluate(node, {"params": params}))

    for skip in (False, True):
        params = params_for((), skip_deseq2=skip)
        assert runs(calls["NOFONE_DESEQ2"][0], params) is not skip
        args = task_scope("NOFONE_EVALUATE", params, ())["task"]["ext"]["args"]
        assert ("--no-deseq2" in shlex.split(args)) is skip, args
        assert _parsed("evaluate", ["--outdir", "o"], args)["deseq2"] is not skip
    defaults = params_for()
    assert not any(defaults[f"skip_{step}"] for step in ("deseq2", "evaluate", "report")), "all run by default"
    assert runs(calls["NOFONE_EVALUATE"][0], defaults)
    assert not runs(calls["NOFONE_EVALUATE"][0], params_for(model="/models/m")), "EVALUATE not with --model"
    assert not runs(calls["NOFONE_EVALUATE"][0], params_for(skip_evaluate=True))
    assert not runs(calls["NOFONE_REPORT"][0], params_for(skip_report=True))


@pytest.mark.parametrize(("params", "valid"), [
    ({"cohort_group": "tissue", "cohort_contrast": "tissue02,tissue01"}, True),
    ({"cohort_group": "tissue", "cohort_contrast": "tissue02,tissue01", "cohort_covariates": "batch,sex",
      "cohort_epochs": 3, "cohort_latent_dim": 2, "gene_sets": "h.gmt", "symbol_map": "map.tsv"}, True),
    ({"cohort_group": "tissue"}, False),                                     # no contrast
    ({"cohort_contrast": "a,b"}, False),                                     # no group
    ({"cohort_group": "tissue", "cohort_contrast": "tissue02"}, False),      # not LEVEL,REFERENCE
    ({"cohort_group": "tissue", "cohort_contrast": "a,b,c"}, False),
    ({"cohort_group": "tis'sue", "cohort_contrast": "a,b"}, False),          # a quote would break the quoting
    ({"cohort_group": "tissue", "cohort_contrast": "a,b", "symbol_map": "map.tsv"}, False),  # only with a GMT
    ({"gene_sets": "h.gmt"}, True),                                          # EVALUATE's enrichment
    ({"cohort_group": "tissue", "cohort_contrast": "a,b", "cohort_epochs": 0}, False),
    ({"negative_conditions": "heldout_normal,Normal tissue", "deseq2_n_controls": 5, "deseq2_seed": 7,
      "deseq2_same_tissue": True, "evaluate_max_negative": 1, "evaluate_repeats": 0, "skip_deseq2": True,
      "skip_evaluate": True, "skip_report": True}, True),
    ({"negative_conditions": "heldout'normal"}, False),                      # a quote would break the quoting
    ({"deseq2_n_controls": 1}, False),                                       # DESeq2 needs 2 controls
    ({"evaluate_max_negative": 0}, False),
    ({"evaluate_repeats": -1}, False),
    ({"skip_report": "yes"}, False),
])
def test_cohort_params_in_the_schema(params, valid):
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    values = {k: v for k, v in params_for().items() if v is not None and not str(v).startswith("dynamic-")}
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors({**values, **params}))
    assert (not errors) == valid, [e.message for e in errors]


# ---------------------------------------------------------------------------------------------
# Process conventions
# ---------------------------------------------------------------------------------------------


def test_one_process_per_step_named_after_its_folder():
    assert set(PROCESSES) == set(EXPECTED)
    for name, process in PROCESSES.items():
        assert process.path.parent.name == EXPECTED[name].replace("-", "_"), f"{name} lives in {process.path}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_process_directives_and_outputs(name):
    process = PROCESSES[name]
    labels = labels_of(process)
    assert len(labels) == 1 and labels[0] in LABELS, f"{name}: exactly one resource label, has {labels}"
    scope = {"params": params_for(), "meta": {"id": "chunk_0001"}}
    tags = process.directive_values("tag", scope)
    assert len(tags) == 1 and tags[0], f"{name}: a tag"
    if any(d.qualifier == "tuple" for d in process.inputs):
        assert tags[0] == "chunk_0001", f"{name}: per-chunk processes are tagged with the chunk id"
    else:
        assert tags[0] in ("cohort", "simulated")
    containers = process.directive_values("container", scope)
    assert containers == [params_for()["container"]], f"{name}: container from params.container"
    assert re.search(r":\d+\.\d+\.\d+", containers[0]), "a versioned container tag"
    conda = process.directive_values("conda", {"moduleDir": str(process.path.parent)})
    assert len(conda) == 1 and Path(conda[0]).resolve() == REPO / "containers" / "environment.yml"
    assert process.stub is not None, f"{name}: a stub: block"
    emits = [d.emit for d in process.outputs]
    assert all(emits) and len(set(emits)) == len(emits), f"{name}: every output has a unique emit: name"
    versions = [d for d in process.outputs if d.emit == "versions"]
    assert versions and nfg.evaluate(versions[0].elements[0].node, {}) == "versions.yml"


def test_process_labels():
    """DESEQ2 and EVALUATE fit DESeq2 many times (CPU-bound): process_medium; REPORT: one CPU."""
    assert {name: labels_of(process)[0] for name, process in PROCESSES.items()} == PROCESS_LABELS


def test_gpu_processes_are_train_and_represent():
    assert {n for n, p in PROCESSES.items() if "process_gpu" in labels_of(p)} == GPU_PROCESSES


def test_resources_grow_with_each_attempt_and_retries_follow_exit_codes():
    settings = config()
    for label in LABELS:
        for directive in ("cpus", "memory", "time"):
            setting = nfg.process_setting(settings, directive, "ANY", [label])
            assert setting is not None and ("withLabel", label) in setting.selectors, f"{label}: {directive}"
            first, second = (nfg.value_of(setting.node, {"task": {"attempt": a}}) for a in (1, 2))
            amount = lambda v: v.amount if isinstance(v, nfg.Unit) else v  # noqa: E731
            if not (label == "process_single" and directive == "cpus"):
                assert amount(second) > amount(first), f"{label}: {directive} must grow with task.attempt"
    strategy = nfg.process_setting(settings, "errorStrategy", "ANY", ["process_low"])
    decide = lambda code: nfg.value_of(strategy.node, {"task": {"exitStatus": code}})  # noqa: E731
    assert all(decide(code) == "retry" for code in [*range(130, 146), 75])
    assert all(decide(code) == "finish" for code in (1, 2, 127, 129, 146, 255))
    assert nfg.value_of(nfg.process_setting(settings, "maxRetries", "ANY", []).node, {}) == 2


def test_gpu_settings_apply_to_gpu_processes_only():
    gpu = nfg.read_config(REPO / "conf" / "gpu.config")
    for setting in gpu:
        if setting.name.startswith("process."):
            assert setting.selectors == (("withLabel", "process_gpu"),), setting
    options = next(s for s in gpu if s.name == "process.containerOptions")
    engine = lambda e: nfg.value_of(options.node, {"workflow": {"containerEngine": e}})  # noqa: E731
    assert engine("docker") == "--gpus all"
    assert engine("singularity") == engine("apptainer") == "--nv"
    assert engine(None) is None
    assert nfg.value_of(next(s for s in gpu if s.name == "process.accelerator").node, {}) == 1
    params = params_for(("gpu",))
    container = next(s for s in gpu if s.name == "process.container")
    assert nfg.value_of(container.node, {"params": params}) == params["container_gpu"]
    assert params["use_gpu"] is True and params_for()["use_gpu"] is False


def test_slurm_and_awsbatch_profiles():
    slurm = nfg.read_config(REPO / "conf" / "slurm.config")
    assert nfg.value_of(next(s for s in slurm if s.name == "process.executor").node, {}) == "slurm"
    assert nfg.value_of(next(s for s in slurm if s.name == "process.cache").node, {}) == "lenient"
    options = [s for s in slurm if s.name == "process.clusterOptions"]
    assert len(options) == 1 and options[0].selectors == (("withLabel", "process_gpu"),)
    assert nfg.value_of(options[0].node, {"params": params_for(("slurm", "gpu"))}) == "--gres=gpu:1"
    assert nfg.value_of(options[0].node, {"params": params_for(("slurm",))}) is None

    aws = {s.name: s for s in nfg.read_config(REPO / "conf" / "awsbatch.config") if not s.selectors}
    params = params_for(awsqueue="Q", awsregion="R")
    assert nfg.value_of(aws["process.executor"].node, {}) == "awsbatch"
    for name, param in (("process.queue", "awsqueue"), ("aws.region", "awsregion"), ("aws.batch.cliPath", "awscli")):
        assert nfg.value_of(aws[name].node, {"params": params}) == params[param]


def test_profiles_and_run_records():
    profiles = set(re.findall(r"(?m)^    (\w+)\s*\{", _profiles_block()))
    assert {"test", "docker", "singularity", "apptainer", "conda", "slurm", "gpu", "awsbatch", "debug"} <= profiles
    settings = {s.name: s for s in config()}
    for record in ("trace", "timeline", "report", "dag"):
        assert nfg.evaluate(settings[f"{record}.enabled"].node, {}) is True
        scope = {"params": {"outdir": "OUT", "trace_report_suffix": "SFX"}}
        path = nfg.evaluate(settings[f"{record}.file"].node, scope)
        assert path.startswith("OUT/pipeline_info/") and "SFX" in path, path
    test = {s.name: s for s in config(("test",))}
    limits = nfg.evaluate(test["process.resourceLimits"].node, {})
    assert limits["cpus"] == 2 and limits["memory"].amount == 6 * 1024**3 and limits["time"].amount == 3_600_000
    assert params_for(("test",))["simulate"] is True and params_for(("test",))["input"] is None


def _profiles_block() -> str:
    text = nfg.strip_comments((REPO / "nextflow.config").read_text())
    start = text.index("profiles {")
    return text[start:nfg.brace_end(text, text.index("{", start))]


def test_manifest_and_plugin():
    settings = {s.name: s for s in config()}
    assert nfg.evaluate(settings["manifest.version"].node, {}) == nofone.__version__
    assert nfg.evaluate(settings["manifest.name"].node, {}) == "nofone"
    assert nfg.evaluate(settings["manifest.nextflowVersion"].node, {}) == "!>=24.04.0"
    assert re.fullmatch(r"nf-schema@2\.\d+\.\d+", nfg.evaluate(settings["plugins.id"].node, {}))
    assert nfg.evaluate(settings["process.shell"].node, {}) == ["/bin/bash", "-euo", "pipefail"]


# ---------------------------------------------------------------------------------------------
# Params: used, declared, described
# ---------------------------------------------------------------------------------------------


def _used_params() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for path in [*NF_FILES, *CONFIG_FILES]:
        for name in re.findall(r"\bparams\.([A-Za-z_]\w*)", nfg.strip_comments(path.read_text())):
            used.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return used


def _schema_params() -> dict[str, dict]:
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    found = dict(schema.get("properties", {}))
    for group in schema.get("$defs", {}).values():
        found.update(group.get("properties", {}))
    return found


def test_every_param_is_used_declared_and_described():
    declared = set(nfg.config_params(nfg.read_config(REPO / "nextflow.config")))
    used = _used_params()
    described = set(_schema_params())
    assert set(used) - declared == set(), {n: used[n] for n in set(used) - declared}
    assert declared - set(used) == set(), "declared in nextflow.config but never used"
    assert declared == described, {"not in the schema": declared - described, "not declared": described - declared}
    for profile in ("test", "gpu", "slurm", "awsbatch", "docker"):
        assert set(nfg.config_params(config((profile,)))) == declared, f"-profile {profile} adds params"


def test_schema_matches_the_config_defaults():
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert [ref["$ref"] for ref in schema["allOf"]] == [f"#/$defs/{k}" for k in schema["$defs"]]
    defaults = params_for()
    for name, spec in _schema_params().items():
        assert spec.get("type") and spec.get("description"), name
        value = defaults[name]
        if value is None or str(value).startswith("dynamic-") or name == "checkpoint_dir":
            assert "default" not in spec, f"{name}: no default in the schema when the config has none"
            continue
        assert spec.get("default") == value, f"{name}: schema default {spec.get('default')!r} != config {value!r}"
        kind = {bool: "boolean", int: "integer", float: "number", str: "string"}[type(value)]
        assert spec["type"] == kind or (kind == "integer" and spec["type"] == "number"), name
        if "enum" in spec:
            assert value in spec["enum"], name
    # the params themselves validate against the schema (a stand-in for validateParameters())
    values = {k: v for k, v in defaults.items() if v is not None and not str(v).startswith("dynamic-")}
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(values))
    assert not errors, [e.message for e in errors]


# ---------------------------------------------------------------------------------------------
# The sample-sheet schema
# ---------------------------------------------------------------------------------------------

SHEET_SCHEMA = json.loads((REPO / "assets" / "schema_input.json").read_text())


def sheet_rows(path: Path) -> list[dict]:
    """Rows as nf-schema sees them: empty cells are absent."""
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(handle)]


def validate_sheet(rows: list[dict], base: Path) -> list[str]:
    """jsonschema for the standard keywords; nf-schema's own (uniqueEntries, exists) emulated;
    its annotations (errorMessage, meta, format: file-path) are ignored by jsonschema."""
    errors = [e.message for e in jsonschema.Draft202012Validator(SHEET_SCHEMA).iter_errors(rows)]
    keys = SHEET_SCHEMA.get("uniqueEntries", [])
    seen = set()
    for row in rows:
        key = tuple(row.get(k) for k in keys)
        if key in seen:
            errors.append(f"duplicate {keys}: {key}")
        seen.add(key)
    for row in rows:
        for column, spec in SHEET_SCHEMA["items"]["properties"].items():
            if spec.get("exists") and column in row and not re.match(r"^[a-z0-9]+://", row[column]):
                path = Path(row[column]) if row[column].startswith("/") else base / row[column]
                if not path.exists():
                    errors.append(f"{column} {row[column]} does not exist")
    return errors


@pytest.fixture(scope="module")
def simulated_sheet(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "sim"
    args = nfg.evaluate(nfg.process_setting(config(("test",)), "ext.args", "NOFONE_SIMULATE", []).node, {})
    subprocess.run(["nofone", "simulate", "--outdir", str(out), *shlex.split(args)], env=cli_env(), check=True,
                   capture_output=True)
    return out / "samplesheet.csv"


def test_simulated_sheet_is_valid(simulated_sheet):
    rows = sheet_rows(simulated_sheet)
    assert len(rows) > 10
    assert validate_sheet(rows, simulated_sheet.parent) == []


def _bad(rows, **change):
    first = dict(rows[0])
    first.update(change)
    return [first, *rows[1:]]


@pytest.mark.parametrize("case", [
    "duplicate", "semicolon", "dollar", "space", "leading-dash", "too-long", "empty-id", "no-counts-column",
    "no-sample-column", "bad-strandedness", "bad-format", "missing-file",
])
def test_malformed_sheets_are_rejected(simulated_sheet, case):
    rows = sheet_rows(simulated_sheet)
    bad = {
        "duplicate": lambda: [*rows, dict(rows[0])],
        "semicolon": lambda: _bad(rows, sample="a;rm -rf x"),
        "dollar": lambda: _bad(rows, sample="$(reboot)"),
        "space": lambda: _bad(rows, sample="two words"),
        "leading-dash": lambda: _bad(rows, sample="-rf"),
        "too-long": lambda: _bad(rows, sample="s" * 129),
        "empty-id": lambda: _bad(rows, sample=""),
        "no-counts-column": lambda: [{k: v for k, v in r.items() if k != "counts"} for r in rows],
        "no-sample-column": lambda: [{k: v for k, v in r.items() if k != "sample"} for r in rows],
        "bad-strandedness": lambda: _bad(rows, strandedness="yes"),
        "bad-format": lambda: _bad(rows, format="excel"),
        "missing-file": lambda: _bad(rows, counts="counts/nowhere.tsv"),
    }[case]()
    assert validate_sheet(bad, simulated_sheet.parent), f"{case}: accepted"


def test_sheet_schema_agrees_with_the_cli():
    from nofone.io.readers import FORMATS, STRANDEDNESS
    from nofone.io.samplesheet import REQUIRED_COLUMNS, SAMPLE_ID_PATTERN

    properties = SHEET_SCHEMA["items"]["properties"]
    assert properties["sample"]["pattern"] == SAMPLE_ID_PATTERN.pattern
    assert tuple(properties["format"]["enum"]) == FORMATS
    assert tuple(properties["strandedness"]["enum"]) == STRANDEDNESS
    assert tuple(SHEET_SCHEMA["items"]["required"]) == REQUIRED_COLUMNS
    assert SHEET_SCHEMA["uniqueEntries"] == ["sample"]
    assert properties["counts"]["format"] == "file-path" and properties["counts"]["exists"] is True
    assert SHEET_SCHEMA["items"].get("additionalProperties", True) is True, "further columns are allowed"
    assert list(properties)[:2] == ["sample", "counts"]
    nf = _schema_params()["input"]
    assert nf["schema"] == "assets/schema_input.json" and nf["format"] == "file-path" and nf["exists"] is True


# ---------------------------------------------------------------------------------------------
# Wiring: includes, channel names, call arity, Groovy syntax
# ---------------------------------------------------------------------------------------------


def _definitions(path: Path) -> set[str]:
    text = nfg.strip_comments(path.read_text())
    return set(re.findall(r"(?m)^\s*(?:process|workflow|def)\s+([A-Za-z_]\w*)", text))


def test_includes_resolve_and_every_module_is_used():
    included = set()
    for path in NF_FILES:
        text = nfg.strip_comments(path.read_text())
        for names, source in re.findall(r"include\s*\{([^}]*)\}\s*from\s*'([^']+)'", text):
            if source.startswith("plugin/"):
                assert source == "plugin/nf-schema"
                continue
            target = (path.parent / source).resolve()
            target = target if target.suffix == ".nf" else target.with_suffix(".nf")
            assert target.is_file(), f"{path}: include from '{source}'"
            for name in re.split(r"[;\s]+", names.strip()):
                assert name in _definitions(target), f"{path}: {name} is not defined in {target}"
                included.add(name)
    assert set(EXPECTED) <= included, f"modules never included: {set(EXPECTED) - included}"


def _calls(text: str, name: str) -> list[list[str]]:
    """Top-level comma-separated arguments of every `name(...)` call."""
    calls = []
    for m in re.finditer(rf"\b{name}\s*\(", text):
        depth, j, start, args = 0, m.end() - 1, m.end(), []
        while True:
            c = text[j]
            if c in "([{":
                depth += 1
            elif c in ")]}":
                depth -= 1
                if depth == 0:
                    args.append(text[start:j])
                    break
            elif c == "," and depth == 1:
                args.append(text[start:j])
                start = j + 1
            j += 1
        calls.append([a for a in (a.strip() for a in args) if a])
    return calls


def test_channel_names_and_call_arity_match_the_processes():
    text = "\n".join(nfg.strip_comments(p.read_text()) for p in (REPO / "main.nf", REPO / "workflows" / "nofone.nf"))
    for name, process in PROCESSES.items():
        calls = _calls(text, name)
        assert calls, f"{name} is never called"
        for args in calls:
            assert len(args) == len(process.inputs), f"{name}({', '.join(args)}): {len(process.inputs)} inputs"
        emits = {d.emit for d in process.outputs}
        for emit in re.findall(rf"\b{name}\.out\.(\w+)", text):
            assert emit in emits, f"{name}.out.{emit}: no such emit ({sorted(emits)})"
    staging = nfg.strip_comments((REPO / "subworkflows" / "local" / "samplesheet" / "main.nf").read_text())
    emitted = set(re.findall(r"(?m)^\s*(\w+)\s*=", staging.split("emit:")[1].split("}")[0]))
    for emit in re.findall(r"\bSAMPLESHEET_STAGE\.out\.(\w+)", text):
        assert emit in emitted, f"SAMPLESHEET_STAGE.out.{emit}"


def test_groovy_syntax_of_every_nextflow_file():
    groovy = shutil.which("groovy")
    if groovy is None or not SYNTAX_CHECK.is_file():
        pytest.skip("groovy not installed (Debian: apt-get install -y groovy) or the syntax checker "
                    f"{SYNTAX_CHECK} is absent")
    env = dict(os.environ)
    if "JAVA_HOME" not in env and Path(JAVA_HOME).is_dir():
        env["JAVA_HOME"] = JAVA_HOME
    files = [*NF_FILES, *CONFIG_FILES, *NF_TEST_FILES]
    result = subprocess.run([groovy, str(SYNTAX_CHECK), *map(str, files)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(files)} passed, 0 failed" in result.stdout


def test_groovy_syntax_check_catches_errors(tmp_path):
    groovy = shutil.which("groovy")
    if groovy is None or not SYNTAX_CHECK.is_file():
        pytest.skip("groovy not installed (Debian: apt-get install -y groovy)")
    broken = tmp_path / "broken.nf"
    broken.write_text((MODULES / "de" / "main.nf").read_text().replace("output:", "output: {", 1))
    env = dict(os.environ)
    env.setdefault("JAVA_HOME", JAVA_HOME)
    result = subprocess.run([groovy, str(SYNTAX_CHECK), str(broken)], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "0 passed, 1 failed" in result.stdout


# ---------------------------------------------------------------------------------------------
# Containers and nf-test files
# ---------------------------------------------------------------------------------------------


def test_container_recipes_pin_the_pipeline_version():
    version = nofone.__version__
    params = params_for()
    assert params["container"].endswith(f":{version}")
    assert params["container_gpu"].endswith(f":{version}-cuda")
    containers = REPO / "containers"
    for name in ("Dockerfile", "Dockerfile.cuda"):
        text = (containers / name).read_text()
        assert f"ARG NOFONE_VERSION={version}" in text, name
        assert "ARG TORCH_VERSION=2.13.0" in text, name
        assert 'test "$(nofone --version)" = "nofone ${NOFONE_VERSION}"' in text, name
        assert (containers / f"{name}.dockerignore").is_file(), name
    assert "--index-url https://download.pytorch.org/whl/cpu" in (containers / "Dockerfile").read_text()
    assert (containers / "Dockerfile").read_text().count("FROM python:3.11-slim") == 1
    assert "FROM ${CUDA_IMAGE}" in (containers / "Dockerfile.cuda").read_text()
    definition = (containers / "nofone.def").read_text()
    assert definition.startswith("Bootstrap: docker\nFrom: python:3.11-slim\n")
    assert f'test "$(nofone --version)" = "nofone {version}"' in definition
    environment = (containers / "environment.yml").read_text()
    assert f"nofone=={version}" in environment and "torch==2.13.0" in environment


def test_every_process_has_an_nf_test():
    for name, command in EXPECTED.items():
        step = command.replace("-", "_")  # the folder: cohort_de for `nofone cohort-de`
        path = REPO / "tests" / "modules" / f"{step}.nf.test"
        assert path.is_file(), f"{name}: {path} missing"
        text = path.read_text()
        assert f'process "{name}"' in text and f'script "../../modules/local/{step}/main.nf"' in text
        assert 'options "-stub"' in text, f"{path}: a stub test"
        inputs = set(re.findall(r"input\[(\d+)\]", text.split('options "-stub"')[1].split("test(")[0]))
        assert inputs == {str(i) for i in range(len(PROCESSES[name].inputs))}, f"{path}: inputs"
    pipeline = (REPO / "tests" / "main.nf.test").read_text()
    assert 'script "../main.nf"' in pipeline and 'profile "test"' in pipeline and 'options "-stub"' in pipeline


@pytest.mark.parametrize("de_null", ["auto", "outlier", "nb", "model-error"])
def test_de_null_ext_args(de_null):
    """--de_null picks the DE test's null: the calibrated outlier mixture where the model has one
    (auto), the outlier mixture, the paper's NB or the sample's own model error."""
    args = task_scope("NOFONE_DE", params_for(de_null=de_null), ())["task"]["ext"]["args"]
    assert args == f"--test equal-tail-midp --null {de_null} --q-threshold 0.01 --lfc-threshold 1.0"
