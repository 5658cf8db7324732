"""Runs nofone's Nextflow pipeline without Nextflow (tests only).

No Nextflow binary can run where the tests run (DESIGN.md, "Testing here"), so this module does
what Nextflow would, for the subset of the language the pipeline uses: it reads main.nf, the
workflows, subworkflows and modules with tests/nextflow/nfgroovy.py, runs the workflow bodies
with channels held as lists (every process call runs its tasks at once, so values flow in
program order), and runs each task as Nextflow would: inputs staged under their stageAs names,
the `script:` (or, in stub mode, `stub:`) block rendered with the task's ext.args, cpus and
attempt from the configs and run with bash, declared outputs collected (path, val, eval),
`topic:` outputs sent to their topic, and outputs published as the process's publishDir says.

A wiring mistake fails here as it would in Nextflow: a process called with the wrong number of
inputs, a tuple of the wrong shape, a path input given something that is not a file, an
emit name that does not exist, a process called twice, a join whose keys never meet.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import nfgroovy as nfg
from nftask import (  # noqa: F401  (the tests reach these as nfflow.<name>)
    TASK_CACHE,
    Config,
    Task,
    _files,
    check_inputs,
    cli_env,
    collect_outputs,
    labels_of,
    publish,
    run_bash,
    stage_inputs,
    task_cpus,
    task_key,
    task_scope,
)
from nfvalues import Active, Channel, ChannelFactory, Log, NFPath, Outputs, PipelineError, as_path  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
NEXTFLOW_VERSION = "25.04.0"  # what `nextflow.version` says in these runs


# ---------------------------------------------------------------------------------------------
# Scripts: includes, processes, workflows, functions
# ---------------------------------------------------------------------------------------------


@dataclass
class Function:
    name: str
    params: list[str]
    body: list
    module: dict

    def __call__(self, *args, **kwargs):
        if kwargs:
            args = (kwargs, *args)
        if len(args) != len(self.params):
            raise PipelineError(f"{self.name}() takes {len(self.params)} arguments, called with {len(args)}")
        scope = dict(self.module)
        scope.update(zip(self.params, args))
        return nfg.run_body(self.body, scope)


class ProcessCall:
    """A process as a script sees it: called once, then `.out`."""

    def __init__(self, process: nfg.Process, session: Session):
        self.process = process
        self.session = session
        self.out: Outputs | None = None

    def __call__(self, *args):
        if self.out is not None:
            raise PipelineError(f"process {self.process.name} has already been used (include it under another "
                                "name to run it twice)")
        self.out = self.session.call_process(self.process, list(args))
        return self.out

    def groovy_get(self, name: str):
        if name != "out":
            raise nfg.GroovyError(f"{self.process.name}.{name}")
        if self.out is None:
            raise PipelineError(f"{self.process.name}.out used before {self.process.name} is called")
        return self.out


@dataclass
class Workflow:
    name: str | None
    take: list[str]
    main: list
    emit: list                    # (name, node or None)
    module: dict
    session: Session
    out: Outputs | None = None

    def __call__(self, *args):
        if len(args) != len(self.take):
            raise PipelineError(f"workflow {self.name}: takes {len(self.take)} inputs, called with {len(args)}")
        scope = dict(self.module)
        scope.update(zip(self.take, args))
        self.session.stack.append(self.name)
        try:
            nfg.run_body(self.main, scope)
            channels = {}
            for name, node in self.emit:
                value = nfg.evaluate(node, scope) if node is not None else scope[name]
                channels[name] = value if isinstance(value, Channel) else Channel([value], value=True)
        finally:
            self.session.stack.pop()
        self.out = Outputs(self.name or "workflow", channels)
        return self.out

    def groovy_get(self, name: str):
        if name != "out" or self.out is None:
            raise PipelineError(f"{self.name}.{name} before {self.name} is called")
        return self.out


def _top_level(text: str):
    """(kind, name, header, body) of every top-level construct of a comment-free script."""
    for m in re.finditer(r"(?m)^(include|process|workflow|def)\b\s*([A-Za-z_]\w*)?\s*([^{\n]*)\{", text):
        end = nfg.brace_end(text, m.end() - 1)
        if m.group(1) == "include":
            yield "include", None, m.group(0), text[m.end() - 1:end] + text[end:text.index("\n", end)]
        else:
            yield m.group(1), m.group(2), m.group(3), text[m.end():end - 1]


def _sections(body: str) -> dict[str, str]:
    parts = re.split(r"(?m)^\s*(take|main|emit)\s*:", body)
    if len(parts) == 1:
        return {"main": body}
    return {parts[k]: parts[k + 1] for k in range(1, len(parts), 2)}


def load_script(path: Path, session: Session) -> dict:
    """The names a script defines or includes, bound for this session (cached per file)."""
    path = path.resolve()
    if path in session.modules:
        return session.modules[path]
    text = nfg.strip_comments(path.read_text())
    module: dict = dict(session.globals)
    module["moduleDir"] = str(path.parent)
    session.modules[path] = module
    for process in nfg.parse_processes(path):
        module[process.name] = ProcessCall(process, session)
    for kind, name, header, body in _top_level(text):
        if kind == "include":
            m = re.match(r"include\s*\{([^}]*)\}\s*from\s*'([^']+)'", header + body.lstrip("{"))
            names, source = [n for n in re.split(r"[;\s]+", m.group(1).strip()) if n], m.group(2)
            if source.startswith("plugin/"):
                plugin = session.plugins[source]
                module.update({n: plugin[n] for n in names})
                continue
            target = (path.parent / source).resolve()
            target = target if target.suffix == ".nf" else target.with_suffix(".nf")
            if not target.is_file():
                raise PipelineError(f"{path}: include from '{source}': no such file")
            included = load_script(target, session)
            for n in names:
                if n not in included or n in session.globals:
                    raise PipelineError(f"{path}: {n} is not defined in {target}")
                module[n] = included[n]
        elif kind == "def":
            params = [p.strip() for p in header.strip()[1:-1].split(",") if p.strip()] if header.strip() else []
            module[name] = Function(name, params, nfg.parse_block(nfg.tokenize(body)), module)
        elif kind == "workflow":
            sections = _sections(body)
            take = [t.strip() for t in sections.get("take", "").split("\n") if t.strip()]
            emit = []
            for statement in nfg.split_statements(nfg.tokenize(sections.get("emit", ""))):
                if len(statement) > 2 and statement[1].value == "=":
                    emit.append((statement[0].value, nfg.parse_expression(statement[2:])))
                else:
                    emit.append((statement[0].value, None))
            flow = Workflow(name, take, nfg.parse_block(nfg.tokenize(sections["main"])), emit, module, session)
            module[name or "__entry__"] = flow
    return module


# ---------------------------------------------------------------------------------------------
# nf-schema, emulated
# ---------------------------------------------------------------------------------------------

SCHEMA = REPO / "nextflow_schema.json"
SHEET_SCHEMA_PATH = REPO / "assets" / "schema_input.json"


def schema_params(schema: dict) -> dict[str, dict]:
    found = dict(schema.get("properties", {}))
    for group in schema.get("$defs", {}).values():
        found.update(group.get("properties", {}))
    return found


def validate_params(params: dict) -> list[str]:
    """validateParameters(): the schema's standard keywords, and its `exists` for paths."""
    schema = json.loads(SCHEMA.read_text())
    values = {k: v for k, v in params.items() if v is not None and not str(v).startswith("dynamic-")
              and not k.startswith("_")}
    errors = [f"--{'.'.join(map(str, e.path)) or ''}: {e.message}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(values)]
    for name, spec in schema_params(schema).items():
        if spec.get("exists") and values.get(name) and not Path(str(values[name])).exists():
            errors.append(f"--{name}: {values[name]} does not exist")
    return errors


def validate_sheet(rows: list[dict], base: Path) -> list[str]:
    """samplesheetToList(): jsonschema for the standard keywords; nf-schema's own (uniqueEntries,
    exists) emulated; its annotations (errorMessage, meta, format: file-path) are ignored."""
    schema = json.loads(SHEET_SCHEMA_PATH.read_text())
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(rows)]
    keys = schema.get("uniqueEntries", [])
    seen = set()
    for row in rows:
        key = tuple(row.get(k) for k in keys)
        if key in seen:
            errors.append(f"duplicate {keys}: {key}")
        seen.add(key)
    for row in rows:
        for column, spec in schema["items"]["properties"].items():
            if spec.get("exists") and column in row and not re.match(r"^[a-z0-9]+://", row[column]):
                path = Path(row[column]) if row[column].startswith("/") else base / row[column]
                if not path.exists():
                    errors.append(f"{column} {row[column]} does not exist")
    return errors


def sheet_rows(path: Path) -> list[dict]:
    """Rows as nf-schema sees them: empty cells are absent."""
    import csv

    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(handle)]


# ---------------------------------------------------------------------------------------------
# A run
# ---------------------------------------------------------------------------------------------


class Session:
    """One `nextflow run`: params, configs, a work folder, the tasks run and what they published."""


    def __init__(self, work: Path, *, params: dict | None = None, profiles: tuple[str, ...] = (),
                 config_files: tuple[Path, ...] = (), main_config: Path = REPO / "nextflow.config",
                 stub: bool = False, launch_dir: Path | None = None, session_id: str = "test-session",
                 extra_args: dict[str, str] | None = None, cache: bool = False):
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.launch_dir = Path(launch_dir or self.work)
        self.config = Config(profiles, tuple(config_files), main_config)
        self.params = self.config.params(self.launch_dir, params)
        self.stub = stub
        self.cache = cache
        self.session_id = session_id
        self.extra_args = extra_args or {}
        self.env = cli_env(self.config)
        self.tasks: list[Task] = []
        self.topics: dict[str, list] = {}
        self.origin: dict[Path, tuple[str, str]] = {}
        self.modules: dict[Path, dict] = {}
        self.stack: list[str | None] = []
        self.log = Log()
        self.plugins = {"plugin/nf-schema": {
            "validateParameters": self._validate_parameters,
            "paramsSummaryLog": lambda *a: "params summary",
            "samplesheetToList": self._samplesheet_to_list,
        }}
        self.globals = {
            "params": self.params, "log": self.log, "channel": ChannelFactory(), "Channel": ChannelFactory(),
            "file": self._file, "error": self._error, "projectDir": str(REPO), "baseDir": str(REPO),
            "launchDir": str(self.launch_dir), "nextflow": {"version": NEXTFLOW_VERSION},
            "workflow": {
                "profile": ",".join(profiles), "launchDir": NFPath(self.launch_dir),
                "workDir": NFPath(self.work), "sessionId": session_id, "projectDir": NFPath(REPO),
                "containerEngine": None,
                "manifest": {"version": nfg.evaluate(next(s for s in self.config.settings
                                                          if s.name == "manifest.version").node, {})},
            },
        }

    def resolve(self, path) -> Path:
        """A path as Nextflow reads it: relative to the launch folder."""
        path = Path(nfg.gstr(path))
        return path if path.is_absolute() else self.launch_dir / path

    # -- builtins --
    def _file(self, path, checkIfExists: bool = False, **_):
        path = self.resolve(path)
        if checkIfExists and not path.exists():
            raise PipelineError(f"file {path} does not exist")
        return NFPath(path)

    def _error(self, message):
        raise PipelineError(nfg.gstr(message))

    def _validate_parameters(self):
        errors = validate_params(self.params)
        if errors:
            raise PipelineError("The following invalid input values have been detected:\n" + "\n".join(errors))

    def _samplesheet_to_list(self, sheet, schema):
        path = self.resolve(sheet)
        rows = sheet_rows(path)
        errors = validate_sheet(rows, self.launch_dir)
        if errors:
            raise PipelineError(f"{path}: " + "; ".join(errors))
        return rows

    # -- running --
    def run_main(self, script: Path = REPO / "main.nf") -> Session:
        """The entry workflow of `script`, as `nextflow run script`."""
        Active.session = self
        module = load_script(script, self)
        module["__entry__"]()
        return self

    def script(self, path: Path) -> dict:
        Active.session = self
        return load_script(REPO / path if not Path(path).is_absolute() else Path(path), self)

    def call_process(self, process: nfg.Process, args: list) -> Outputs:
        if len(args) != len(process.inputs):
            raise PipelineError(f"{process.name}: {len(process.inputs)} inputs declared, called with {len(args)}")
        channels = [a if isinstance(a, Channel) else Channel([a], value=True) for a in args]
        queues = [c for c in channels if not c.value]
        if any(not c.items for c in channels if c.value):
            count = 0
        else:
            count = min(len(c.items) for c in queues) if queues else 1
        name = ":".join([n for n in self.stack if n] + [process.name])
        emitted: dict[str, list] = {d.emit: [] for d in process.outputs}
        for index in range(count):
            values = [c.items[0] if c.value else c.items[index] for c in channels]
            task = self.run_task(process, values, name, index + 1)
            for emit, value in task.outputs.items():
                emitted[emit].append(value)
        return Outputs(process.name, {emit: Channel(values, value=not queues) for emit, values in emitted.items()})

    def run_task(self, process: nfg.Process, inputs: list, name: str | None = None, index: int = 1,
                 attempt: int = 1) -> Task:
        check_inputs(process, inputs)
        name = name or process.name
        scope = task_scope(self.config, process, self.params, name=name, attempt=attempt, index=index,
                           session_id=self.session_id, launch_dir=str(self.launch_dir),
                           extra_args=self.extra_args.get(process.name, ""))
        bound = stage_inputs(process, inputs, scope, None)
        tags = process.directive_values("tag", scope)
        command = nfg.render(process.script, scope)
        script = nfg.render(process.stub, scope) if self.stub else command
        mode = "stub" if self.stub else "script"
        key = task_key(process, script, self.stub, inputs, scope) if self.cache else None
        cached = key in TASK_CACHE
        seconds = 0.0
        if cached:
            task_dir = TASK_CACHE[key]
        else:
            task_dir = self.work / f"{len(self.tasks) + 1:02d}_{process.name.lower()}_{index}"
            task_dir.mkdir(parents=True)
            stage_inputs(process, inputs, dict(scope), task_dir)
            (task_dir / ".command.sh").write_text(script)
            started = time.monotonic()
            run_bash(script, task_dir, self.env, f"{name} ({mode})")
            seconds = time.monotonic() - started
        staged = {p.relative_to(task_dir) for p in task_dir.rglob("*") if p.is_symlink()}
        outputs, topics = collect_outputs(process, scope, task_dir, staged, self.env, mode)
        if key is not None:
            TASK_CACHE[key] = task_dir
        for topic, value in topics:
            self.topics.setdefault(topic, []).append(value)
        task = Task(name, process, index, nfg.gstr(tags[0]) if tags else "", task_dir, script, bound, outputs,
                    command, self.stub, cached, round(seconds, 1))
        for emit, value in outputs.items():
            for path in _paths_in(value):
                self.origin[path.path.resolve()] = (process.name, emit)
        task.published = publish(task, self.config, scope, self.launch_dir)
        self.tasks.append(task)
        return task

    # -- what ran --
    def ran(self, process: str) -> list[Task]:
        return [t for t in self.tasks if t.simple_name == process]

    def source(self, task: Task, element: str) -> tuple[str, str] | None:
        """(process, emit) of the task output that an input element of `task` came from."""
        files = _files(task.inputs[element])
        if not files:
            return None
        origins = {self.origin.get(f.resolve()) for f in files}
        return origins.pop() if len(origins) == 1 else tuple(sorted(map(str, origins)))


def _paths_in(value) -> list[NFPath]:
    if isinstance(value, NFPath):
        return [value]
    if isinstance(value, list):
        return [p for v in value for p in _paths_in(v)]
    return []
