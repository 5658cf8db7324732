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

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema


def _load(name: str):
    """A sibling module by file path (tests/nextflow is not a package)."""
    if name not in sys.modules:
        import importlib.util

        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


nfg = _load("nfgroovy")

REPO = Path(__file__).resolve().parents[2]
NEXTFLOW_VERSION = "25.04.0"  # what `nextflow.version` says in these runs


class PipelineError(Exception):
    """What Nextflow would stop the run with: error(), a wiring mistake, a failed task."""


# ---------------------------------------------------------------------------------------------
# Files, channels
# ---------------------------------------------------------------------------------------------


class NFPath:
    """A file or folder as Nextflow scripts see it (java.nio.Path with Nextflow's extensions)."""

    def __init__(self, path):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def __str__(self) -> str:
        return str(self.path)

    __repr__ = __str__

    def __eq__(self, other) -> bool:
        return isinstance(other, NFPath) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    def groovy_get(self, name: str):
        path = self.path
        simple = {"name": path.name, "baseName": path.name.split(".")[0] if path.name.startswith(".")
                  else (path.name.rsplit(".", 1)[0] if "." in path.name else path.name),
                  "simpleName": path.name.split(".")[0], "extension": path.suffix.lstrip("."),
                  "parent": NFPath(path.parent)}
        if name in simple:
            return simple[name]
        if name == "text":
            return path.read_text()
        if name in ("json",):
            return json.loads(path.read_text())
        if name in ("readLines", "lines"):
            return path.read_text().splitlines()
        if name == "linesGzip":
            import gzip
            return gzip.decompress(path.read_bytes()).decode().splitlines()
        raise nfg.GroovyError(f"no property {name!r} on a path")

    def groovy_call(self, name: str, args: list, kwargs: dict):
        path = self.path
        if name == "resolve":
            return NFPath(path / str(args[0]))
        if name == "exists":
            return path.exists()
        if name == "isDirectory":
            return path.is_dir()
        if name == "isFile":
            return path.is_file()
        if name == "toUriString":
            return str(path)
        if name == "mkdirs":
            path.mkdir(parents=True, exist_ok=True)
            return True
        if name in ("getText", "readLines", "getName", "getBaseName"):
            return self.groovy_get({"getText": "text", "getName": "name", "getBaseName": "baseName"}.get(name, name))
        if name == "toString":
            return str(path)
        if name == "splitCsv":
            return split_csv(path, **kwargs)
        if name == "listFiles":
            return [NFPath(p) for p in sorted(path.iterdir())]
        if name == "md5":
            return hashlib.md5(path.read_bytes()).hexdigest()
        raise nfg.GroovyError(f"method {name}() on a path is outside the supported subset")


def as_path(value) -> Path:
    return value.path if isinstance(value, NFPath) else Path(value)


def split_csv(path: Path, header=False, sep=",", quote=None, strip=False, **_) -> list:
    """Nextflow's splitCsv on a file: rows as maps (header: true) or lists."""
    import csv

    with open(path, newline="") as handle:
        rows = list(csv.reader(handle, delimiter=sep, quotechar=quote or '"'))
    rows = [[c.strip() for c in r] if strip else r for r in rows if r]
    if not header:
        return rows
    names, body = rows[0], rows[1:]
    return [{n: (r[i] if i < len(r) else None) for i, n in enumerate(names)} for r in body]


def _call(closure, item):
    return closure(item)


class Channel:
    """A channel as the list of everything it will emit; `value` for a value channel."""

    def __init__(self, items=(), value: bool = False):
        self.items = list(items)
        self.value = value

    def __repr__(self) -> str:
        return f"Channel({'value ' if self.value else ''}{self.items!r})"

    def groovy_call(self, name: str, args: list, kwargs: dict):
        items = self.items
        if name == "map":
            return Channel([_call(args[0], v) for v in items], self.value)
        if name == "flatMap":
            return Channel([x for v in items for x in (_call(args[0], v) or [])])
        if name == "filter":
            return Channel([v for v in items if nfg.truth(_call(args[0], v))])
        if name == "first":
            return Channel(items[:1], value=True)
        if name == "mix":
            return Channel(items + [x for other in args for x in other.items])
        if name == "unique":
            return Channel([v for k, v in enumerate(items) if v not in items[:k]])
        if name == "flatten":
            return Channel(nfg.call_method(items, "flatten", [], False))
        if name in ("collect", "toList"):
            return Channel([list(items)], value=True) if items or name == "toList" else Channel([], value=True)
        if name == "join":
            return self._join(args[0])
        if name == "groupTuple":
            return self._group(kwargs.get("sort"))
        if name == "collectFile":
            return self._collect_file(args, kwargs)
        if name == "view":
            return self
        raise nfg.GroovyError(f"channel operator {name}() is outside the supported subset")

    def _tuples(self, operator: str, items: list) -> None:
        bad = [v for v in items if not isinstance(v, (list, tuple)) or len(v) < 2]
        if bad:
            raise PipelineError(f"{operator}: every item must be a tuple [key, ...], got {bad[0]!r}")

    def _join(self, other: Channel) -> Channel:
        self._tuples("join", self.items + other.items)
        right = {}
        for item in other.items:
            right.setdefault(_key(item[0]), []).append(item)
        joined = []
        for item in self.items:
            match = right.get(_key(item[0]))
            if not match:
                raise PipelineError(f"join: no item with key {item[0]!r} on the right ({[i[0] for i in other.items]}); "
                                    "Nextflow would drop it and the steps after would never run")
            joined.append([*item, *match.pop(0)[1:]])
        return Channel(joined)

    def _group(self, sort) -> Channel:
        self._tuples("groupTuple", self.items)
        groups: dict = {}
        keys = {}
        for item in self.items:
            groups.setdefault(_key(item[0]), []).append(item[1:])
            keys[_key(item[0])] = item[0]
        out = []
        for key, rows in groups.items():
            columns = [list(c) for c in zip(*rows)]
            if isinstance(sort, nfg.Closure):
                import functools
                columns = [sorted(c, key=functools.cmp_to_key(lambda a, b: sort(a, b))) for c in columns]
            out.append([keys[key], *columns])
        return Channel(out)

    def _collect_file(self, args, kwargs) -> Channel:
        session = Session.current
        folder = session.resolve(kwargs["storeDir"]) if kwargs.get("storeDir") else session.work / "collect-file"
        folder.mkdir(parents=True, exist_ok=True)
        if args and isinstance(args[0], nfg.Closure):
            files: dict[str, list[str]] = {}
            for item in self.items:
                name, text = _call(args[0], item)
                files.setdefault(nfg.gstr(name), []).append(nfg.gstr(text))
        else:
            files = {kwargs["name"]: [nfg.gstr(v) for v in self.items]}
        out = []
        for name, texts in files.items():
            if kwargs.get("sort"):
                texts = sorted(texts)
            newline = "\n" if kwargs.get("newLine") else ""
            (folder / name).write_text("".join(t + newline for t in texts))
            out.append(NFPath(folder / name))
        return Channel(out)


def _key(value):
    return json.dumps(value, sort_keys=True, default=str)


class ChannelFactory:
    """`channel.of(...)`, `channel.value(...)`, `channel.empty()`, `channel.topic(...)`."""

    def groovy_call(self, name: str, args: list, kwargs: dict):
        if name == "of":
            return Channel(args)
        if name == "value":
            return Channel(args[:1], value=True)
        if name == "empty":
            return Channel()
        if name == "topic":
            return Channel(Session.current.topics.get(args[0], []))
        raise nfg.GroovyError(f"channel.{name}() is outside the supported subset")


class Outputs:
    """`PROCESS.out` / `WORKFLOW.out`: its channels by emit name."""

    def __init__(self, owner: str, channels: dict[str, Channel]):
        self.owner = owner
        self.channels = channels

    def groovy_get(self, name: str):
        if name not in self.channels:
            raise PipelineError(f"{self.owner}.out.{name}: no such output (emits {sorted(self.channels)})")
        return self.channels[name]


class Log:
    def __init__(self):
        self.messages: list[tuple[str, str]] = []

    def groovy_call(self, name: str, args: list, kwargs: dict):
        self.messages.append((name, nfg.gstr(args[0]) if args else ""))


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


class Config:
    """nextflow.config with profiles (and further -c files), as the tasks of a run see it."""

    def __init__(self, profiles: tuple[str, ...] = (), extra: tuple[Path, ...] = (),
                 main: Path = REPO / "nextflow.config"):
        self.profiles = profiles
        self.settings = nfg.read_config(main, profiles)
        for path in extra:
            self.settings += nfg.read_config(path, profiles)

    def params(self, launch_dir: Path, overrides: dict | None = None) -> dict:
        """Every param's value, as the config leaves it (dynamic values get a test value), with
        command-line `overrides`, which the config's own params see."""
        values: dict = dict(overrides or {})
        scope = {"launchDir": str(launch_dir), "projectDir": str(REPO), "params": values}
        for name, setting in nfg.config_params(self.settings).items():
            if overrides and name in overrides:
                continue
            try:
                values[name] = nfg.evaluate(setting.node, scope)
            except nfg.GroovyError:
                values[name] = f"dynamic-{name}"  # e.g. trace_report_suffix: the launch time
        return values

    def setting(self, directive: str, name: str, labels: list[str]):
        return nfg.process_setting(self.settings, directive, name, labels)

    def value(self, directive: str, name: str, labels: list[str], scope: dict, default=None):
        setting = self.setting(directive, name, labels)
        return default if setting is None else nfg.value_of(setting.node, scope)

    def env(self) -> dict[str, str]:
        return {s.name.split(".", 1)[1]: nfg.evaluate(s.node, {}) for s in self.settings
                if s.name.startswith("env.") and not s.selectors}


def cli_env(config: Config | None = None) -> dict:
    """Each task's environment: bin/ first on PATH (as Nextflow puts it), the test's Python
    next, and nextflow.config's `env` scope."""
    env = dict(os.environ)
    env["PATH"] = f"{REPO / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update((config or Config()).env())
    return env


# ---------------------------------------------------------------------------------------------
# One task
# ---------------------------------------------------------------------------------------------


@dataclass
class Task:
    name: str                     # as task.process: NOFONE:NOFONE_DE
    process: nfg.Process
    index: int
    tag: str
    dir: Path
    script: str
    inputs: dict                  # input element name -> value
    outputs: dict                 # emit -> value (a tuple as a list)
    command: str = ""             # the rendered script: block (what a real run would run)
    stub: bool = False
    cached: bool = False
    seconds: float = 0.0
    published: list = field(default_factory=list)

    @property
    def simple_name(self) -> str:
        return self.process.name

    @property
    def trace_name(self) -> str:
        return f"{self.name} ({self.tag})" if self.tag else self.name


def labels_of(process: nfg.Process) -> list[str]:
    return process.directive_values("label", {})


def task_cpus(config: Config, process: nfg.Process, attempt: int) -> int:
    """The process's cpus at this attempt, capped by process.resourceLimits (the test profile)."""
    scope = {"task": {"attempt": attempt}}
    cpus = config.value("cpus", process.name, labels_of(process), scope, default=1)
    limits = config.value("resourceLimits", process.name, labels_of(process), scope)
    return min(cpus, limits["cpus"]) if limits and "cpus" in limits else cpus


def task_scope(config: Config, process: nfg.Process, params: dict, *, name: str | None = None,
               attempt: int = 1, index: int = 1, session_id: str = "test-session",
               launch_dir: str | None = None, extra_args: str = "") -> dict:
    """What a process's directives and script blocks see."""
    scope = {
        "params": params,
        "task": {"process": name or f"NOFONE:{process.name}", "attempt": attempt, "index": index,
                 "cpus": task_cpus(config, process, attempt), "ext": {}},
        "workflow": {"sessionId": session_id, "containerEngine": None, "launchDir": launch_dir},
        "projectDir": str(REPO),
        "moduleDir": str(process.path.parent),
    }
    args = config.value("ext.args", process.name, labels_of(process), scope)
    if args is not None:
        scope["task"]["ext"]["args"] = args
    if extra_args:  # a test's own options after the config's (the CLI keeps the last of an option)
        scope["task"]["ext"]["args"] = f"{scope['task']['ext'].get('args') or ''} {extra_args}".strip()
    return scope


def _files(value) -> list[Path]:
    if value in (None, []):
        return []
    if isinstance(value, (list, tuple)):
        return [as_path(v) for v in value]
    return [as_path(value)]


def check_inputs(process: nfg.Process, inputs: list) -> None:
    """Nextflow's checks of what a task receives: the tuple shapes and the path types."""
    if len(inputs) != len(process.inputs):
        raise PipelineError(f"{process.name}: {len(process.inputs)} inputs declared, called with {len(inputs)}")
    for k, (declaration, value) in enumerate(zip(process.inputs, inputs)):
        if declaration.qualifier == "tuple":
            if not isinstance(value, (list, tuple)) or len(value) != len(declaration.elements):
                raise PipelineError(f"{process.name}: input {k + 1} is a tuple of {len(declaration.elements)}, "
                                    f"got {value!r}")
            values = list(value)
        else:
            values = [value]
        for element, item in zip(declaration.elements, values):
            if element.qualifier == "path":
                items = item if isinstance(item, (list, tuple)) else [item]
                bad = [v for v in items if not isinstance(v, (NFPath, Path))]
                if bad:
                    raise PipelineError(f"{process.name}: path input '{element.name}' got {bad!r}, not files")


def stage_inputs(process: nfg.Process, inputs: list, scope: dict, task_dir: Path | None) -> dict:
    """Bind input values in `scope` and, with a task folder, link the files as Nextflow stages
    them (stageAs patterns expanded, e.g. 'inputs/*/*' -> inputs/<n>/<file name>). Returns the
    inputs by element name."""
    bound = {}
    for declaration, value in zip(process.inputs, inputs):
        values = list(value) if declaration.qualifier == "tuple" else [value]
        for element, item in zip(declaration.elements, values):
            bound[element.name] = item
            if element.qualifier == "val":
                scope[element.name] = item
                continue
            files = _files(item)
            pattern = element.options.get("stageAs")
            names = nfg.expand_stage_names(nfg.evaluate(pattern, scope) if pattern else None,
                                           [f.name for f in files])
            if len(set(names)) != len(names):
                raise PipelineError(f"{process.name}: staged names collide: {names}")
            if task_dir is not None:
                for source, staged in zip(files, names):
                    target = task_dir / staged
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to(source.resolve())
            scope[element.name] = nfg.PathList(names)
    return bound


# Tasks already run in this process, by what they ran and the content of what they read (as
# Nextflow's `cache 'deep'` under -resume): a Session(cache=True) reuses their folders
TASK_CACHE: dict[str, Path] = {}


def content_digest(path: Path) -> str:
    """md5 over a file's bytes, or over a folder's relative paths and file bytes."""
    digest = hashlib.md5()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(hashlib.md5(file.read_bytes()).digest())
    return digest.hexdigest()


def task_key(process: nfg.Process, script: str, stub: bool, inputs: list, scope: dict) -> str:
    parts = [process.name, str(stub), script]
    for declaration, value in zip(process.inputs, inputs):
        for element, item in zip(declaration.elements, list(value) if declaration.qualifier == "tuple" else [value]):
            if element.qualifier == "path":
                parts += [f"{element.name}={content_digest(f.resolve())}" for f in _files(item)]
            else:
                parts.append(f"{element.name}={_key(item)}")
    return hashlib.md5("\0".join(parts).encode()).hexdigest()


def run_bash(script: str, cwd: Path, env: dict, what: str) -> str:
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise PipelineError(f"{what} exited {result.returncode}\n--- script\n{script}\n"
                            f"--- stderr\n{result.stderr[-3000:]}")
    return result.stdout


def collect_outputs(process: nfg.Process, scope: dict, task_dir: Path, staged: set, env: dict,
                    mode: str) -> tuple[dict, list[tuple[str, object]]]:
    """Every declared output (a single path, or a list when a glob matches several), and the
    values sent to topics."""
    outputs, topics = {}, []
    for declaration in process.outputs:
        items = []
        for element in declaration.elements:
            if element.qualifier == "val":
                items.append(nfg.evaluate(element.node, scope))
            elif element.qualifier == "eval":
                command = nfg.evaluate(element.node, scope)
                items.append(run_bash(command, task_dir, env, f"{process.name} eval({command!r})").strip())
            elif element.qualifier == "path":
                pattern = nfg.evaluate(element.node, scope)
                if any(ch in pattern for ch in "*?[{"):
                    matches = sorted(p for p in task_dir.glob(pattern) if p.relative_to(task_dir) not in staged)
                else:
                    matches = [task_dir / pattern] if (task_dir / pattern).exists() else []
                if not matches and not declaration.optional:
                    found = sorted(str(p.relative_to(task_dir)) for p in task_dir.rglob("*"))
                    raise PipelineError(f"{process.name} ({mode}): declared output '{pattern}' (emit: "
                                        f"{declaration.emit}) was not created\n--- files\n{found}")
                paths = [NFPath(m) for m in matches]
                items.append(paths[0] if len(paths) == 1 else paths)
            else:
                raise nfg.GroovyError(f"{process.name}: output qualifier {element.qualifier}")
        value = items if declaration.qualifier == "tuple" else items[0]
        outputs[declaration.emit] = value
        topic = declaration.options.get("topic")
        if topic is not None:
            topics.append((topic[1] if topic[0] == "var" else nfg.evaluate(topic, scope), value))
    return outputs, topics


def glob_regex(pattern: str) -> re.Pattern:
    """A publishDir `pattern` as Java's glob matcher reads it: * and ? stay within a folder."""
    out, j = [], 0
    while j < len(pattern):
        c = pattern[j]
        if pattern.startswith("**", j):
            out.append(".*")
            j += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "{":
            end = pattern.index("}", j)
            out.append("(?:" + "|".join(re.escape(a) for a in pattern[j + 1:end].split(",")) + ")")
            j = end
        else:
            out.append(re.escape(c))
        j += 1
    return re.compile("".join(out) + r"\Z")


def publish(task: Task, config: Config, scope: dict) -> list[tuple[Path, Path]]:
    """Copy (or link) the task's path outputs as its publishDir setting says."""
    options = config.value("publishDir", task.simple_name, labels_of(task.process), scope)
    if not options or options.get("enabled") is False:
        return []
    if not isinstance(options, dict):
        raise nfg.GroovyError(f"{task.simple_name}: publishDir must be a map here, not {options!r}")
    evaluated = {k: (v() if isinstance(v, nfg.Closure) and k != "saveAs" else v) for k, v in options.items()}
    target_root = Session.current.resolve(evaluated["path"])
    mode = evaluated.get("mode", "symlink")
    matcher = glob_regex(evaluated["pattern"]) if evaluated.get("pattern") else None
    save_as = evaluated.get("saveAs")
    published = []
    for value in task.outputs.values():
        for item in (value if isinstance(value, list) else [value]):
            for path in (item if isinstance(item, list) else [item]):
                if not isinstance(path, NFPath):
                    continue
                relative = str(path.path.relative_to(task.dir))
                if matcher and not matcher.match(relative):
                    continue
                name = save_as(relative) if save_as else relative
                if name is None:
                    continue
                target = target_root / nfg.gstr(name)
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
                if mode in ("copy", "copyNoFollow", "move"):
                    (shutil.copytree if path.path.is_dir() else shutil.copy2)(path.path, target)
                else:
                    target.symlink_to(path.path.resolve())
                published.append((path.path, target))
    return published


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

    current: Session | None = None

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
        Session.current = self
        module = load_script(script, self)
        module["__entry__"]()
        return self

    def script(self, path: Path) -> dict:
        Session.current = self
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
        task.published = publish(task, self.config, scope)
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
