"""Runs the pipeline's nf-test files without Nextflow or nf-test (tests only).

tests/main.nf.test and tests/modules/*.nf.test are written for nf-test, for users who have
Nextflow. This module reads them (nf-test's DSL: suites, tests, `setup`, `when`, `then`) and
runs each test with tests/nextflow/nfflow.py: the process, workflow or pipeline under test, its
setup runs and its inputs as the file gives them, then the `then` block's assertions. A
`snapshot(...).match()` is computed as nf-test computes it (a file: `name:md5,<md5>`; a folder:
the list of its files, sorted; everything else as JSON) and compared with the test's entry in
the `.nf.test.snap` file beside it: a difference fails the test, so a stale snapshot cannot be
shipped. With NOFONE_UPDATE_SNAPSHOTS=1 the entry is (re)written instead.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import nfflow as nff

nfg = nff.nfg
REPO = nff.REPO
UPDATE = os.environ.get("NOFONE_UPDATE_SNAPSHOTS") == "1"


@dataclass
class Command:
    """One line of nf-test's DSL: `name args` or `name(args) { block }`."""

    name: str
    args: list
    block: list | None  # tokens inside the braces


@dataclass
class TestCase:
    name: str
    options: str = ""
    profiles: list[str] = field(default_factory=list)
    setup: list[Command] = field(default_factory=list)
    params: list | None = None       # statements of `when { params { ... } }`
    inputs: str | None = None        # the code of `when { process/workflow { """...""" } }`
    then: list = field(default_factory=list)

    @property
    def stub(self) -> bool:
        return "-stub" in self.options.split()


@dataclass
class Suite:
    path: Path
    kind: str                        # process, workflow, pipeline
    name: str
    script: str
    target: str | None               # the process or workflow under test
    config: str | None
    profiles: list[str]
    tests: list[TestCase]

    def snapshot_file(self) -> Path:
        return self.path.with_name(self.path.name + ".snap")


def _commands(tokens: list) -> list[Command]:
    commands = []
    for statement in nfg.split_statements(tokens):
        name = statement[0].value
        rest = statement[1:]
        block = None
        if rest and rest[-1].kind == "op" and rest[-1].value == "}":
            depth, start = 0, None
            for k in range(len(rest) - 1, -1, -1):
                if rest[k].kind == "op" and rest[k].value == "}":
                    depth += 1
                elif rest[k].kind == "op" and rest[k].value == "{":
                    depth -= 1
                    if depth == 0:
                        start = k
                        break
            block, rest = rest[start + 1:-1], rest[:start]
        if rest and rest[0].kind == "op" and rest[0].value == "(":
            rest = rest[1:-1]
        args = [nfg.evaluate(nfg.parse_expression(part), {}) for part in _split_commas(rest)] if rest else []
        commands.append(Command(name, args, block))
    return commands


def _split_commas(tokens: list) -> list[list]:
    parts, current, depth = [], [], 0
    for tok in tokens:
        if tok.kind == "op" and tok.value in "([{":
            depth += 1
        elif tok.kind == "op" and tok.value in ")]}":
            depth -= 1
        if depth == 0 and tok.kind == "op" and tok.value == ",":
            parts.append(current)
            current = []
        else:
            current.append(tok)
    return [*parts, current] if current else parts


def _code(block: list) -> str:
    """The string literal of `process { '''...''' }` (nf-test writes it with double quotes)."""
    strings = [t for t in block if t.kind != "nl"]
    if len(strings) != 1 or strings[0].kind != "str":
        raise nfg.GroovyError("expected one string literal in the block")
    return strings[0]


def parse(path: Path) -> Suite:
    text = nfg.strip_comments(path.read_text())
    m = re.search(r"\bnextflow_(process|workflow|pipeline)\s*\{", text)
    body = text[m.end():nfg.brace_end(text, m.end() - 1) - 1]
    top = _commands(nfg.tokenize(body))
    single = {c.name: c.args[0] for c in top if c.args and c.block is None}
    tests = []
    for command in (c for c in top if c.name == "test"):
        case = TestCase(command.args[0])
        for inner in _commands(command.block):
            if inner.name == "options":
                case.options = inner.args[0]
            elif inner.name == "profile":
                case.profiles.append(inner.args[0])
            elif inner.name == "setup":
                case.setup = [c for c in _commands(inner.block) if c.name == "run"]
            elif inner.name == "when":
                for part in _commands(inner.block):
                    if part.name == "params":
                        case.params = nfg.parse_block(part.block)
                    elif part.name in ("process", "workflow"):
                        case.inputs = _code(part.block)
            elif inner.name == "then":
                case.then = nfg.parse_block(inner.block)
        tests.append(case)
    return Suite(path, m.group(1), single.get("name", path.name), single["script"], single.get(m.group(1)),
                 single.get("config"), [c.args[0] for c in top if c.name == "profile"], tests)


# ---------------------------------------------------------------------------------------------
# Snapshots, as nf-test writes and compares them
# ---------------------------------------------------------------------------------------------


def serialize(value):
    """nf-test's JSON of a snapshot value: files by name and md5, folders as their sorted files."""
    if isinstance(value, nff.NFPath):
        value = value.path
    if isinstance(value, str):
        candidate = Path(value) if Path(value).is_absolute() else REPO / value
        if value and candidate.exists():
            value = candidate
    if isinstance(value, Path):
        if not value.exists():
            raise AssertionError(f"snapshot: path {value} not found")
        if value.is_dir():
            return [serialize(p) for p in sorted(value.iterdir(), key=lambda p: str(p))]
        return f"{value.name}:md5,{hashlib.md5(value.read_bytes()).hexdigest()}"
    if isinstance(value, (list, tuple)):
        return [serialize(v) for v in value]
    if isinstance(value, dict):
        return {str(k): serialize(v) for k, v in value.items()}
    return value


class SnapshotStore:
    def __init__(self, path: Path):
        self.path = path
        self.entries = json.loads(path.read_text()) if path.exists() else {}
        self.used: set[str] = set()

    def match(self, name: str, content: list) -> bool:
        self.used.add(name)
        stored = self.entries.get(name)
        if UPDATE and (stored is None or stored["content"] != content):
            self.entries[name] = {
                "content": content,
                "meta": {"written_by": "pytest tests/test_nextflow_pipeline.py (tests/nextflow/nftest.py)"},
                "timestamp": datetime.datetime.now().isoformat(timespec="seconds"),
            }
            ordered = {k: self.entries[k] for k in sorted(self.entries)}  # content keeps its own order
            self.path.write_text(json.dumps(ordered, indent=4) + "\n")
            return True
        if stored is None:
            raise AssertionError(f"{self.path.name}: no snapshot '{name}' (run with NOFONE_UPDATE_SNAPSHOTS=1 "
                                 "and commit it)")
        if json.dumps(stored["content"]) != json.dumps(content):
            raise AssertionError(f"{self.path.name}: snapshot '{name}' is stale\n  stored: "
                                 f"{json.dumps(stored['content'])}\n  now:    {json.dumps(content)}\n"
                                 "(if the change is intended: NOFONE_UPDATE_SNAPSHOTS=1, and commit the .snap)")
        return True


class Snapshot:
    def __init__(self, store: SnapshotStore, test: str, values: tuple):
        self.store, self.test, self.values = store, test, values

    def groovy_call(self, name: str, args: list, kwargs: dict):
        if name != "match":
            raise nfg.GroovyError(f"snapshot(...).{name}()")
        return self.store.match(args[0] if args else self.test, [serialize(v) for v in self.values])


# ---------------------------------------------------------------------------------------------
# Running a test
# ---------------------------------------------------------------------------------------------


def _as_nf_test_value(value):
    """Channel items as nf-test shows them in `process.out`: paths as strings."""
    if isinstance(value, nff.NFPath):
        return str(value.path)
    if isinstance(value, (list, tuple)):
        return [_as_nf_test_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_nf_test_value(v) for k, v in value.items()}
    return value


class Trace:
    def __init__(self, session: nff.Session):
        self.session = session

    def groovy_call(self, name: str, args: list, kwargs: dict):
        if name in ("succeeded", "tasks"):
            return [{"name": t.trace_name} for t in self.session.tasks]
        if name == "failed":
            return []
        raise nfg.GroovyError(f"workflow.trace.{name}()")


def _assert_all(*closures):
    failures = []
    for closure in closures:
        try:
            closure()
        except AssertionError as failure:
            failures.append(str(failure))
    if failures:
        raise AssertionError(f"{len(failures)} of {len(closures)} assertions failed:\n" + "\n".join(failures))


def _input_list(code: str, scope: dict) -> list:
    """`input[0] = ...` lines, run: the inputs they set."""
    inputs: list = []
    nfg.run_body(nfg.parse_block(nfg.tokenize(nfg.strip_comments(code))), {**scope, "input": inputs})
    return inputs


def run(suite: Suite, case: TestCase, tmp: Path, store: SnapshotStore | None = None, *,
        launch: Path | None = None, cache: bool = False, extra_config: tuple[Path, ...] = ()) -> nff.Session:
    """One test of a suite, in `tmp` (launched from `launch`, as nf-test launches every test from
    one folder): raises AssertionError (a failed `then`) or PipelineError. With `cache`, tasks
    already run in this process with the same script and inputs are reused (-resume);
    `extra_config`: further config files (as `-c`)."""
    launch = launch or tmp / "launch"
    output_dir = tmp / "output"
    for folder in (launch, output_dir):
        folder.mkdir(parents=True, exist_ok=True)
    here = suite.path.parent
    scope = {"baseDir": str(REPO), "projectDir": str(REPO), "outputDir": str(output_dir),
             "launchDir": str(launch), "moduleDir": str(here)}
    params: dict = {}
    if case.params:
        param_scope = dict(scope)
        for statement in case.params:
            nfg.execute(statement, param_scope)
            params[statement[1]] = param_scope[statement[1]]
    config = (here / suite.config,) if suite.config else ()
    session = nff.Session(tmp / "work", params=params, profiles=tuple(suite.profiles + case.profiles),
                          main_config=config[0] if config else REPO / "nextflow.config", stub=case.stub,
                          launch_dir=launch, cache=cache, config_files=extra_config)
    nff.Active.session = session
    code_scope = dict(session.globals)
    code_scope.update(scope)
    for step in case.setup:
        target = step.args[0]
        block = _commands(step.block)
        script = next(c.args[0] for c in block if c.name == "script")
        component = session.script(here / script)[target]
        code = next((_code(c.block) for c in block if c.name in ("process", "workflow")), None)
        inputs = _input_list(nfg.interpolate(code.quote, code.value, code_scope), code_scope) if code else []
        component(*inputs)
        code_scope[target] = component
    if suite.kind == "pipeline":
        session.run_main(here / suite.script)
        then = {"workflow": {"success": True, "trace": Trace(session)}}
    else:
        component = session.script(here / suite.script)[suite.target]
        inputs = (_input_list(nfg.interpolate(case.inputs.quote, case.inputs.value, code_scope), code_scope)
                  if case.inputs else [])
        outputs = component(*inputs)
        out = {emit: [_as_nf_test_value(v) for v in channel.items] for emit, channel in outputs.channels.items()}
        then = {suite.kind: {"success": True, "out": out}}
    then_scope = {**scope, **then, "params": session.params,
                  "path": lambda value: nff.NFPath(nfg.gstr(value)),
                  "assertAll": _assert_all,
                  "snapshot": lambda *values: Snapshot(store or SnapshotStore(suite.snapshot_file()), case.name,
                                                       values)}
    nfg.run_body(case.then, then_scope)
    return session


def snapshot_names(suite: Suite) -> set[str]:
    """The tests of a suite that take a snapshot."""
    return {case.name for case in suite.tests if any("snapshot" in repr(s) for s in case.then)}
