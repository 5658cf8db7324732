"""The Nextflow modules and configs, tested without Nextflow.

No Nextflow binary can run here, so these tests carry the proof instead (DESIGN.md, "Testing
here"). tests/nextflow/nfgroovy.py reads the modules and configs and tests/nextflow/nfflow.py
runs tasks as Nextflow would; these tests

- render every module's `script:` and `stub:` block with the ext.args that conf/modules.config
  and the profiles give it, and parse each rendered `nofone` command line with the CLI's own
  option parser, for many combinations of params (the options each param must reach);
- run every stub with placeholder inputs and check its declared outputs, and its versions;
- check params (used = declared in nextflow.config = described in nextflow_schema.json), the
  model types (the CLI's), the sample-sheet schema (nf-schema's keywords emulated), labels,
  containers, GPU scoping, retries, profiles, the explicit publishDir of every process;
- run the Groovy syntax check on every Nextflow file when `groovy` is installed.

The workflows themselves (channel wiring, what runs when, what is published, the nf-test files
and their snapshots) are run in tests/test_nextflow_pipeline.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import pytest

import nofone

REPO = Path(__file__).resolve().parents[1]


sys.path.insert(0, str(REPO / "tests" / "nextflow"))  # tests/nextflow's modules import each other by name
import nftest as nft  # noqa: E402

nff, nfg = nft.nff, nft.nfg

MODULES = REPO / "modules" / "local"
SYNTAX_CHECK = Path(os.environ.get("NF_SYNTAX_CHECK", REPO.parent / "shared" / "tools" / "nf_syntax_check.groovy"))
JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"

EXPECTED = {
    "NOFONE_SIMULATE": "simulate", "NOFONE_INGEST": "ingest", "NOFONE_FILTER": "filter",
    "NOFONE_TRAIN": "train", "NOFONE_CHUNK": "chunk", "NOFONE_REPRESENT": "represent",
    "NOFONE_DE": "de", "NOFONE_GATHER": "gather", "NOFONE_COHORT_DE": "cohort-de",
    "NOFONE_DESEQ2": "deseq2", "NOFONE_EVALUATE": "evaluate", "NOFONE_EXPLAIN": "explain", "NOFONE_REPORT": "report",
    "NOFONE_PERTURB": "perturb", "NOFONE_AUGMENT": "augment", "NOFONE_SCREEN": "screen-gene-sets",
    "NOFONE_PATHWAYS": "pathways",
}
# Commands of a command group: `nofone deseq2 n-of-one`
SUBCOMMANDS = {"NOFONE_DESEQ2": "n-of-one"}
# The resource label of every process (README, "Running on a cluster or in the cloud: Nextflow")
PROCESS_LABELS = {
    "NOFONE_SIMULATE": "process_single", "NOFONE_INGEST": "process_medium", "NOFONE_FILTER": "process_low",
    "NOFONE_TRAIN": "process_gpu", "NOFONE_CHUNK": "process_single", "NOFONE_REPRESENT": "process_gpu",
    "NOFONE_DE": "process_low", "NOFONE_GATHER": "process_low", "NOFONE_COHORT_DE": "process_medium",
    "NOFONE_DESEQ2": "process_medium", "NOFONE_EVALUATE": "process_medium", "NOFONE_EXPLAIN": "process_medium",
    "NOFONE_REPORT": "process_single",
    "NOFONE_PERTURB": "process_gpu", "NOFONE_AUGMENT": "process_gpu", "NOFONE_SCREEN": "process_medium",
    "NOFONE_PATHWAYS": "process_low",
}
# What each process publishes under --outdir (docs/nextflow.md, "Output"); REPRESENT and DE nothing
PUBLISHED = {
    "NOFONE_SIMULATE": "simulated", "NOFONE_INGEST": "data", "NOFONE_FILTER": "filtered", "NOFONE_TRAIN": "model",
    "NOFONE_CHUNK": "chunks/chunk_*.txt", "NOFONE_GATHER": "cohort", "NOFONE_COHORT_DE": "cohort_de",
    "NOFONE_DESEQ2": "deseq2", "NOFONE_EVALUATE": "evaluation", "NOFONE_EXPLAIN": "explain", "NOFONE_REPORT": "report",
    "NOFONE_PERTURB": "perturb", "NOFONE_AUGMENT": "synthetic", "NOFONE_SCREEN": "screen",
    "NOFONE_PATHWAYS": "pathways",
}
# Optional path inputs: [] (or [[:], []] for a [meta, folder]) when what they hold did not run
OPTIONAL_INPUTS = {"genes", "annotation", "config_json", "gene_sets", "symbol_map", "evaluation", "cohort_de",
                   "explain", "pathways", "NOFONE_DESEQ2.model"}
# ... except where the process runs only with it
REQUIRED_INPUTS = {"NOFONE_PATHWAYS.gene_sets"}
COHORT_PARAMS = {"cohort_group": "tissue", "cohort_contrast": "tissue02,tissue01", "cohort_covariates": "batch"}
GPU_PROCESSES = {"NOFONE_TRAIN", "NOFONE_REPRESENT", "NOFONE_PERTURB", "NOFONE_AUGMENT"}
LABELS = ("process_single", "process_low", "process_medium", "process_high", "process_gpu")
NF_FILES = sorted([REPO / "main.nf", *REPO.glob("workflows/*.nf"), *REPO.glob("subworkflows/**/*.nf"),
                   *MODULES.glob("*/main.nf")])
CONFIG_FILES = sorted([REPO / "nextflow.config", REPO / "nf-test.config", *REPO.glob("conf/*.config")])
NF_TEST_FILES = sorted([*REPO.glob("tests/*.nf.test"), *REPO.glob("tests/modules/*.nf.test"),
                        *REPO.glob("tests/nextflow/*.config")])


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
    return nff.Config(profiles).params(launch_dir, overrides)


def task_scope(name: str, params: dict, profiles: tuple[str, ...], attempt: int = 1) -> dict:
    return nff.task_scope(nff.Config(profiles), PROCESSES[name], params, attempt=attempt,
                          launch_dir=params.get("_launch_dir"))


def _cli_commands():
    from typer.main import get_command

    from nofone.cli.app import app

    return get_command(app).commands


def _nofone_lines(script: str) -> list[str]:
    return [line.strip() for line in script.splitlines() if line.strip().startswith("nofone ")]


def _parsed(command: str, required: list[str], args: str) -> dict:
    """The options a command line gives, as the CLI parses them (`deseq2 n-of-one` for DESEQ2)."""
    group, _, sub = command.partition(" ")
    cli = _cli_commands()[group]
    cli = cli.commands[sub] if sub else cli
    context = cli.make_context(command, [*required, *shlex.split(args)])
    return {k: (tuple(v) if isinstance(v, list | tuple) else v) for k, v in context.params.items()}


def _ext_args(name: str, profiles: tuple[str, ...] = (), **overrides) -> str:
    return task_scope(name, params_for(profiles, **overrides), profiles)["task"]["ext"]["args"]


# ---------------------------------------------------------------------------------------------
# Stubs with placeholder inputs
# ---------------------------------------------------------------------------------------------


def _dummy_inputs(process: nfg.Process, root: Path) -> list:
    """Placeholder inputs for a stub run: files with the declared names, two for list inputs."""
    values = []
    for declaration in process.inputs:
        items = []
        for element in declaration.elements:
            if element.qualifier == "val":
                items.append({"id": "chunk_0001"} if element.name.startswith("meta") else "tissue")
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
    """Every stub runs, creates every declared output, runs no step, and reports its process and
    `nofone --version` on the topic 'versions'."""
    session = nff.Session(tmp_path / "work", params={"checkpoint_dir": str(tmp_path / "ckpt")},
                          profiles=("test",), stub=True, launch_dir=tmp_path)
    nff.Active.session = session
    inputs = {name: _dummy_inputs(process, tmp_path / "inputs") for name, process in PROCESSES.items()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        tasks = list(pool.map(lambda name: session.run_task(PROCESSES[name], inputs[name], f"NOFONE:{name}"),
                              inputs))
    assert {t.simple_name for t in tasks} == set(EXPECTED)
    for task in tasks:
        runs_step = re.search(rf"nofone (--threads \S+ )?{EXPECTED[task.simple_name]}\b", task.script)
        assert not runs_step, f"{task.name}: a stub must not run the step"
        assert task.outputs["versions"] == [task.name, f"nofone {nofone.__version__}"]
    assert sorted(session.topics["versions"]) == sorted([t.name, f"nofone {nofone.__version__}"] for t in tasks)


# ---------------------------------------------------------------------------------------------
# Every rendered command line against the CLI's own parser
# ---------------------------------------------------------------------------------------------

VARIANTS = [
    ((), {}),
    (("test",), {}),
    ((), {"round_counts": True, "protein_coding": True, "train_config_json": "cfg.json", "epochs": 7,
          "represent_method": "one_opt", "de_test": "density", "q_threshold": 0.05, "lfc_threshold": 0.5,
          "normal_value": "healthy", "chunk_size": 3}),
    ((), {"train_config": "paper", "model": "/models/bulkdgd_v1", "annotation": "ensembl.tsv.gz",
          "regulators": "/models/regulators"}),
    ((), {"annotation": "ensembl.tsv.gz,ncbi_gene_aliases.tsv.gz", "protein_coding": True}),
    (("test",), COHORT_PARAMS | {"de_null": "outlier"}),
    ((), {"cohort_group": "Status", "cohort_contrast": "lactate,virgin", "cohort_covariates": " CellType, batch,",
          "cohort_epochs": 5, "cohort_latent_dim": 2, "gene_sets": "h.all.gmt", "symbol_map": "mouse_to_human.tsv"}),
    ((), {"skip_deseq2": True, "negative_conditions": "heldout_normal, Normal tissue,", "deseq2_n_controls": 5,
          "deseq2_seed": 3, "deseq2_same_tissue": True, "evaluate_max_negative": 3, "evaluate_repeats": 0,
          "normal_value": "healthy", "gene_sets": "h.all.gmt.gz"}),
    (("test",), {"model_type": "nbvae"}),
    ((), {"model_type": "nbvae", "train_config": "default", "epochs": 2}),
    (("test",), {"model_type": "diffusion", "perturb": True, "augment": True, "screen": True,
                 "gene_sets": "h.all.gmt"}),
    ((), {"model_type": "diffusion", "train_config": "gpu", "perturb": True, "perturb_k": 2, "augment": True,
          "augment_n_per_class": 7, "augment_seed": 3, "screen": True, "screen_n_random": 9,
          "screen_pca_only": True, "normal_value": "healthy"}),
]


def _dummy_inputs_dry(process: nfg.Process, optional_files: bool) -> list:
    values = []
    for declaration in process.inputs:
        items = []
        for element in declaration.elements:
            optional = (element.name in OPTIONAL_INPUTS or f"{process.name}.{element.name}" in OPTIONAL_INPUTS) \
                and f"{process.name}.{element.name}" not in REQUIRED_INPUTS
            if element.qualifier == "val":
                if element.name.startswith("meta"):
                    items.append({"id": "chunk_0003"} if element.name == "meta" or optional_files else {})
                else:
                    items.append("tissue,batch" if optional_files else "")
            elif element.name == "annotation":  # --annotation a,b: every file becomes its own option
                items.append([Path("/x/1/ensembl.tsv.gz"), Path("/x/2/ncbi_aliases.tsv.gz")] if optional_files else [])
            elif optional:
                items.append([Path(f"/x/{element.name}.tsv")] if optional_files else [])
            elif element.name == "counts":
                items.append([Path("/a/ReadsPerGene.out.tab"), Path("/b/ReadsPerGene.out.tab")])
            elif element.name == "parts":
                items.append([Path("/w/1/de_chunk_0001"), Path("/w/2/reps_chunk_0001")])
            else:
                items.append(Path(f"/x/{element.name}"))
        values.append(tuple(items) if declaration.qualifier == "tuple" else items[0])
    return values


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
            nff.check_inputs(process, inputs)
            nff.stage_inputs(process, inputs, scope, None)
            for block, label in ((process.script, "script"), (process.stub, "stub")):
                script = nfg.render(block, scope)
                lines = _nofone_lines(script)
                if label == "stub":
                    assert not lines, f"{name}: the stub runs {lines}"
                    continue
                assert len(lines) == 1, f"{name}: one nofone command per script, found {lines}"
                words = shlex.split(lines[0])
                assert words[1:3] == ["--threads", str(scope["task"]["cpus"])], "each task passes its cpus"
                if any(e.name == "annotation" for d in process.inputs for e in d.elements):
                    assert words.count("--annotation") == (2 if optional_files else 0), lines[0]
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


def test_every_script_passes_ext_args():
    for name, process in PROCESSES.items():
        scope = task_scope(name, params_for(), ())
        scope["task"]["ext"]["args"] = "--EXT-ARGS-SENTINEL"
        nff.stage_inputs(process, _dummy_inputs_dry(process, False), scope, None)
        lines = _nofone_lines(nfg.render(process.script, scope))
        assert lines[0].endswith("--EXT-ARGS-SENTINEL"), f"{name}: $args must end the nofone command line"


def test_task_cpus_follow_the_labels_and_the_test_profile_limits():
    """--threads gets task.cpus: the label's, growing with the attempt, capped by the test
    profile's process.resourceLimits (2 CPUs)."""
    full, test = nff.Config(()), nff.Config(("test",))
    assert nff.task_cpus(full, PROCESSES["NOFONE_EVALUATE"], 1) == 6
    assert nff.task_cpus(full, PROCESSES["NOFONE_EVALUATE"], 2) == 12
    assert nff.task_cpus(test, PROCESSES["NOFONE_EVALUATE"], 2) == 2
    assert nff.task_cpus(test, PROCESSES["NOFONE_SIMULATE"], 1) == 1


# ---------------------------------------------------------------------------------------------
# ext.args: the options each param reaches, as the CLI parses them
# ---------------------------------------------------------------------------------------------


def _model_types() -> tuple[str, ...]:
    """The model types `nofone train --model-type` accepts (the registry's one list)."""
    from nofone.models.registry import MODEL_TYPES

    return tuple(MODEL_TYPES)


def test_model_types_are_the_clis():
    """--model_type's choices are exactly the CLI's (nextflow_schema.json's enum is the pipeline's
    one list), its default is dgd, and -profile test has a tiny training config for each."""
    spec = nff.schema_params(json.loads(nff.SCHEMA.read_text()))["model_type"]
    assert tuple(spec["enum"]) == _model_types()
    assert spec["default"] == params_for()["model_type"] == "dgd"
    for model_type in _model_types():
        config_json = Path(params_for(("test",), model_type=model_type)["train_config_json"])
        assert config_json == REPO / "assets" / f"test_train_config_{model_type}.json" and config_json.is_file()
        assert json.loads(config_json.read_text()).get("model_type", model_type) == model_type


@pytest.mark.parametrize("model_type", _model_types())
def test_train_ext_args(model_type):
    """--model_type reaches `nofone train --model-type`; --train_config only when given (each
    model has its own presets and default); the module's --config FILE with --train_config_json."""
    got = _parsed("train", ["--input", "d", "--outdir", "o"], _ext_args("NOFONE_TRAIN", model_type=model_type))
    assert got["model_type"] == model_type and got["config"] is None and got["normal_value"] == "normal"
    got = _parsed("train", ["--input", "d", "--outdir", "o"],
                  _ext_args("NOFONE_TRAIN", model_type=model_type, train_config="paper", epochs=4))
    assert got["config"] == "paper" and got["epochs"] == 4
    args = _ext_args("NOFONE_TRAIN", model_type=model_type, train_config="paper", train_config_json="x.json")
    assert "--config" not in shlex.split(args), "the JSON file (the module's --config) replaces the preset"


@pytest.mark.parametrize(("overrides", "expected"), [
    ({}, {"perturb": {"normal": "normal", "k": 1.0}, "augment": {"n_per_class": 100, "seed": 0},
          "screen-gene-sets": {"normal": "normal", "n_random": 100, "embedding": ("umap", "pca")}}),
    ({"normal_value": "healthy", "perturb_k": 2.5, "augment_n_per_class": 7, "augment_seed": 3, "screen_n_random": 9,
      "screen_pca_only": True},
     {"perturb": {"normal": "healthy", "k": 2.5}, "augment": {"n_per_class": 7, "seed": 3},
      "screen-gene-sets": {"normal": "healthy", "n_random": 9, "embedding": ("pca",)}}),
])
def test_diffusion_analyses_ext_args(overrides, expected):
    """--normal_value, --perturb_k, --augment_*, --screen_*: parsed by the CLI into the options they name
    (the tumours of PERTURB and SCREEN's other group: every sample not of --normal_value)."""
    required = {"perturb": ["-m", "m", "-i", "d", "-o", "o"], "augment": ["-m", "m", "-o", "o"],
                "screen-gene-sets": ["-i", "d", "-o", "o", "--gene-sets", "g.gmt"]}
    for name, command in (("NOFONE_PERTURB", "perturb"), ("NOFONE_AUGMENT", "augment"),
                          ("NOFONE_SCREEN", "screen-gene-sets")):
        got = _parsed(command, required[command], _ext_args(name, **overrides))
        assert {k: got[k] for k in expected[command]} == expected[command], (name, got)
    assert _parsed("perturb", required["perturb"], _ext_args("NOFONE_PERTURB", **overrides))["value"] is None


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
    """--group, --contrast, one --covariate per comma-separated column, and --epochs/--latent-dim
    only when set; parsed by the CLI into the options they name."""
    args = _ext_args("NOFONE_COHORT_DE", **overrides)
    if not expected:
        assert args == ""
        return
    got = _parsed("cohort-de", ["--input", "d", "--outdir", "o"], args)
    assert {k: got[k] for k in expected} == expected, args
    for option in ("epochs", "latent_dim"):
        if option not in expected:
            assert got[option] is None, f"{option} passed without its param: {args}"
    assert params_for(("test",))["cohort_epochs"] == 3 and params_for(("test",))["cohort_group"] is None


@pytest.mark.parametrize(("overrides", "expected"), [
    ({}, {"cases_except_condition": ("normal",), "controls_condition": "normal", "same_tissue": False,
          "n_controls": None, "seed": 0, "q_threshold": 0.01, "lfc_threshold": 1.0}),
    ({"negative_conditions": "heldout_normal, Normal tissue,", "normal_value": "healthy", "deseq2_n_controls": 5,
      "deseq2_seed": 3, "deseq2_same_tissue": True, "q_threshold": 0.05, "lfc_threshold": 0.5},
     {"cases_except_condition": ("healthy", "heldout_normal", "Normal tissue"), "controls_condition": "healthy",
      "same_tissue": True, "n_controls": 5, "seed": 3, "q_threshold": 0.05, "lfc_threshold": 0.5}),
])
def test_deseq2_ext_args(overrides, expected):
    """The cases are every sample neither --normal_value nor of --negative_conditions, the
    controls the --normal_value samples (the script keeps those TRAIN trained on:
    --controls-trained-by), random controls and their seed from the params."""
    got = _parsed("deseq2 n-of-one", ["--input", "d", "--outdir", "o"], _ext_args("NOFONE_DESEQ2", **overrides))
    assert {k: got[k] for k in expected} == expected
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
    """--no-deseq2 exactly with --skip_deseq2; negative controls and the size of the evaluation
    from the params."""
    got = _parsed("evaluate", ["--outdir", "o"], _ext_args("NOFONE_EVALUATE", **overrides))
    assert {k: got[k] for k in expected} == expected
    test = _parsed("evaluate", ["--outdir", "o"], _ext_args("NOFONE_EVALUATE", ("test",)))
    assert test["negative_condition"] == ("heldout_normal",), "-profile test: the simulated held-out normals"
    assert _ext_args("NOFONE_REPORT", **overrides) == ""


def test_de_null_choices_are_the_clis():
    """--de_null's enum is exactly the nulls `nofone de --null` knows (nofone.choices.NULLS)."""
    from nofone.choices import NULLS

    assert tuple(nff.schema_params(json.loads(nff.SCHEMA.read_text()))["de_null"]["enum"]) == NULLS


@pytest.mark.parametrize("de_null", ["auto", "outlier", "local", "nb", "model-error"])
def test_de_null_ext_args(de_null):
    """--de_null picks the DE test's null: the calibrated outlier mixture where the model has one
    (auto), the outlier mixture, the paper's NB or the sample's own model error."""
    assert _ext_args("NOFONE_DE", de_null=de_null) == \
        f"--test equal-tail-midp --null {de_null} --q-threshold 0.01 --lfc-threshold 1.0"


def test_explain_runs_against_the_cli(tmp_path):
    """NOFONE_EXPLAIN's script, rendered as the pipeline renders it, run for real on the fixture's
    regulator model and simulated profiles (tests/nextflow/fixtures/regulators/): the planted
    regulators of S1 and S2 come out first, nothing is significant in S3 (pure noise)."""
    import pandas as pd

    fixtures = REPO / "tests" / "nextflow" / "fixtures" / "regulators"
    session = nff.Session(tmp_path / "work", params={"checkpoint_dir": str(tmp_path / "ckpt")}, profiles=("test",),
                          launch_dir=tmp_path)
    nff.Active.session = session
    task = session.run_task(PROCESSES["NOFONE_EXPLAIN"], [({"id": "cohort"}, nff.NFPath(fixtures / "de")),
                                                          ({"id": "regulators"}, nff.NFPath(fixtures / "model"))])
    assert " ".join(task.command.split()[3:]) == "explain --regulators regulators --de cohort --outdir explain"
    meta, folder = task.outputs["explain"]
    assert meta == {"id": "cohort"}
    summary = pd.read_csv(nff.as_path(folder) / "summary.tsv", sep="\t").set_index("sample_id")
    assert list(summary.index) == ["S1", "S2", "S3"] and summary.loc["S3", "n_significant"] == 0
    truth = pd.read_csv(fixtures / "truth.tsv", sep="\t")
    for sample in ("S1", "S2"):
        top = pd.read_csv(nff.as_path(folder) / "regulators" / f"{sample}.tsv", sep="\t").iloc[0]
        planted = set(truth.loc[(truth["sample_id"] == sample) & truth["planted"], "feature"])
        assert top["feature"] in planted and top["q_value"] < 0.05, (sample, top)
    assert _ext_args("NOFONE_EXPLAIN") == ""


# ---------------------------------------------------------------------------------------------
# Params: used, declared, described
# ---------------------------------------------------------------------------------------------


def _used_params() -> dict[str, set[str]]:
    """params.<name> in the sources. Static by nature: a param that no file mentions is dead."""
    used: dict[str, set[str]] = {}
    for path in [*NF_FILES, *CONFIG_FILES]:
        for name in re.findall(r"\bparams\.([A-Za-z_]\w*)", nfg.strip_comments(path.read_text())):
            used.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return used


def _schema_params() -> dict[str, dict]:
    return nff.schema_params(json.loads(nff.SCHEMA.read_text()))


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
    schema = json.loads(nff.SCHEMA.read_text())
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
    assert nff.validate_params(defaults) == [], "the defaults validate (a stand-in for validateParameters())"


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
    ({"model_type": "nbvae"}, True),
    ({"model_type": "diffusion"}, True),
    ({"model_type": "transformer"}, False),                                  # not a model the CLI trains
    ({"train_config": "paper"}, True),
    ({"train_config": "small; rm -rf /"}, False),                            # reaches a command line
])
def test_params_in_the_schema(params, valid):
    schema = json.loads(nff.SCHEMA.read_text())
    values = {k: v for k, v in params_for().items() if v is not None and not str(v).startswith("dynamic-")}
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors({**values, **params}))
    assert (not errors) == valid, [e.message for e in errors]


# ---------------------------------------------------------------------------------------------
# The sample-sheet schema
# ---------------------------------------------------------------------------------------------

SHEET_SCHEMA = json.loads(nff.SHEET_SCHEMA_PATH.read_text())


@pytest.fixture(scope="module")
def simulated_sheet(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "sim"
    args = nfg.evaluate(nfg.process_setting(config(("test",)), "ext.args", "NOFONE_SIMULATE", []).node, {})
    subprocess.run(["nofone", "simulate", "--outdir", str(out), *shlex.split(args)], env=nff.cli_env(), check=True,
                   capture_output=True)
    return out / "samplesheet.csv"


def test_simulated_sheet_is_valid(simulated_sheet):
    rows = nff.sheet_rows(simulated_sheet)
    assert len(rows) > 10
    assert nff.validate_sheet(rows, simulated_sheet.parent) == []


def _bad(rows, **change):
    first = dict(rows[0])
    first.update(change)
    return [first, *rows[1:]]


@pytest.mark.parametrize("case", [
    "duplicate", "semicolon", "dollar", "space", "leading-dash", "too-long", "empty-id", "no-counts-column",
    "no-sample-column", "bad-strandedness", "bad-format", "missing-file",
])
def test_malformed_sheets_are_rejected(simulated_sheet, case):
    rows = nff.sheet_rows(simulated_sheet)
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
    assert nff.validate_sheet(bad, simulated_sheet.parent), f"{case}: accepted"


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
# Process conventions
# ---------------------------------------------------------------------------------------------


def test_one_process_per_step_named_after_its_folder():
    assert set(PROCESSES) == set(EXPECTED)
    for name, process in PROCESSES.items():
        assert process.path.parent.name == EXPECTED[name].replace("-", "_"), f"{name} lives in {process.path}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_process_directives_and_outputs(name):
    """One label, a tag with the meta's id, the versioned container, the conda environment, a
    stub; every input a dataset, model, chunk or result comes with its meta, and every output
    but the versions is [meta, files]; the versions: [task.process, `nofone --version`], sent to
    the topic 'versions'."""
    process = PROCESSES[name]
    labels = labels_of(process)
    assert len(labels) == 1 and labels[0] in LABELS, f"{name}: exactly one resource label, has {labels}"
    scope = {"params": params_for(), "meta": {"id": "chunk_0001"}}
    assert process.directive_values("tag", scope) == ["chunk_0001"], f"{name}: tag \"${{meta.id}}\""
    containers = process.directive_values("container", scope)
    assert containers == [params_for()["container"]], f"{name}: container from params.container"
    assert re.search(r":\d+\.\d+\.\d+", containers[0]), "a versioned container tag"
    conda = process.directive_values("conda", {"moduleDir": str(process.path.parent)})
    assert len(conda) == 1 and Path(conda[0]).resolve() == REPO / "containers" / "environment.yml"
    assert process.stub is not None, f"{name}: a stub: block"
    first = process.inputs[0]
    assert first.elements[0].qualifier == "val" and first.elements[0].name == "meta", f"{name}: input 1 is meta"
    for declaration in process.inputs:
        paths = [e.name for e in declaration.elements if e.qualifier == "path"]
        if declaration.qualifier != "tuple" and paths:
            assert paths[0] in OPTIONAL_INPUTS | {"genes"}, f"{name}: '{paths[0]}' should come with its meta"
    emits = [d.emit for d in process.outputs]
    assert all(emits) and len(set(emits)) == len(emits), f"{name}: every output has a unique emit: name"
    for declaration in process.outputs:
        kinds = [(e.qualifier, nfg.evaluate(e.node, {"task": {"process": "P"}, "meta": {"id": "M"}}))
                 for e in declaration.elements]
        if declaration.emit == "versions":
            assert declaration.qualifier == "tuple" and kinds == [("val", "P"), ("eval", "nofone --version")]
            assert declaration.options["topic"] == ("var", "versions")
        else:
            assert declaration.qualifier == "tuple" and kinds[0] == ("val", {"id": "M"}), f"{name}.{declaration.emit}"
            assert "topic" not in declaration.options


def test_process_labels():
    """DESEQ2 and EVALUATE fit DESeq2 many times (CPU-bound): process_medium, as EXPLAIN (DeepLIFT
    and Integrated Gradients per sample, on the CPU); REPORT: one CPU."""
    assert {name: labels_of(process)[0] for name, process in PROCESSES.items()} == PROCESS_LABELS


def test_gpu_processes_are_train_and_represent():
    assert {n for n, p in PROCESSES.items() if "process_gpu" in labels_of(p)} == GPU_PROCESSES


def test_every_process_publishes_explicitly():
    """conf/modules.config names what each process publishes (withName, not a default for all):
    its one output folder, under its name; REPRESENT and DE nothing; no other rule."""
    settings = [s for s in config() if s.name == "process.publishDir"]
    assert all(s.selectors and s.selectors[0][0] == "withName" for s in settings), "no default publishDir"
    assert {s.selectors[0][1] for s in settings} == set(EXPECTED)
    for name, process in PROCESSES.items():
        scope = {"params": params_for(outdir="OUT")}
        options = nfg.value_of(nfg.process_setting(config(), "publishDir", name, labels_of(process)).node, scope)
        if name not in PUBLISHED:
            assert options == {"enabled": False}, name
            continue
        assert options["path"]() == "OUT" and options["mode"] == "copy", name
        assert options["pattern"] == PUBLISHED[name], name
        outputs = [nfg.evaluate(e.node, {}) for d in process.outputs if d.emit != "versions"
                   for e in d.elements if e.qualifier == "path"]
        assert outputs == [PUBLISHED[name]], f"{name}: publishes its output {outputs}"


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


@pytest.mark.parametrize(("profile", "setting"), [
    ("test", "process.resourceLimits"), ("docker", "docker.enabled"), ("singularity", "singularity.enabled"),
    ("apptainer", "apptainer.enabled"), ("conda", "conda.enabled"), ("slurm", "process.executor"),
    ("gpu", "process.accelerator"), ("awsbatch", "aws.region"), ("debug", "dumpHashes"),
])
def test_profiles(profile, setting):
    """Each profile exists and sets what it is for (the config read with and without it)."""
    assert setting not in {s.name for s in config()}, f"{setting} set without -profile {profile}"
    assert setting in {s.name for s in config((profile,))}, f"-profile {profile} does not set {setting}"


def test_run_records():
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


def test_manifest_and_plugin():
    """Nextflow >= 25.04: topic channels (the versions) and eval outputs are stable there."""
    settings = {s.name: s for s in config()}
    assert nfg.evaluate(settings["manifest.version"].node, {}) == nofone.__version__
    assert nfg.evaluate(settings["manifest.name"].node, {}) == "nofone"
    assert nfg.evaluate(settings["manifest.nextflowVersion"].node, {}) == "!>=25.04.0"
    assert re.fullmatch(r"nf-schema@2\.\d+\.\d+", nfg.evaluate(settings["plugins.id"].node, {}))
    assert nfg.evaluate(settings["process.shell"].node, {}) == ["/bin/bash", "-euo", "pipefail"]
    assert not any(s.name.startswith("nextflow.preview") for s in config()), "no preview feature flags"


# ---------------------------------------------------------------------------------------------
# Groovy syntax, containers
# ---------------------------------------------------------------------------------------------


def _groovy() -> str:
    groovy = shutil.which("groovy")
    if groovy is None or not SYNTAX_CHECK.is_file():
        pytest.skip("groovy not installed (Debian: apt-get install -y groovy) or the syntax checker "
                    f"{SYNTAX_CHECK} is absent")
    return groovy


def _groovy_env() -> dict:
    env = dict(os.environ)
    if "JAVA_HOME" not in env and Path(JAVA_HOME).is_dir():
        env["JAVA_HOME"] = JAVA_HOME
    return env


def test_groovy_syntax_of_every_nextflow_file():
    files = [*NF_FILES, *CONFIG_FILES, *NF_TEST_FILES]
    result = subprocess.run([_groovy(), str(SYNTAX_CHECK), *map(str, files)], env=_groovy_env(),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(files)} passed, 0 failed" in result.stdout


def test_groovy_syntax_check_catches_errors(tmp_path):
    broken = tmp_path / "broken.nf"
    broken.write_text((MODULES / "de" / "main.nf").read_text().replace("output:", "output: {", 1))
    result = subprocess.run([_groovy(), str(SYNTAX_CHECK), str(broken)], env=_groovy_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1 and "0 passed, 1 failed" in result.stdout


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


def test_bin_nofone_answers_the_version_the_package_has():
    """Each task's versions come from `nofone --version` through bin/nofone (first on PATH)."""
    out = subprocess.run(["nofone", "--version"], env=nff.cli_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"nofone {nofone.__version__}"
