"""One task, as Nextflow runs it (tests only): config, staging, script, outputs, publishing.

Part of tests/nextflow/nfflow.py's small Nextflow: the task's directives and ext.args from the
configs (withName beats withLabel), task.cpus from its label capped by process.resourceLimits,
inputs linked under their stageAs names, the `script:` or `stub:` block run with bash, the
declared outputs collected (path, val, eval) and published as its publishDir says.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nfgroovy as nfg
from nfvalues import NFPath, PipelineError, _key, as_path

REPO = Path(__file__).resolve().parents[2]


_READ: dict[tuple, tuple] = {}


def _read(path: Path, profiles: tuple[str, ...]) -> tuple:
    """A config file's settings, read once per file version and profiles."""
    key = (path.resolve(), path.stat().st_mtime_ns, profiles)
    if key not in _READ:
        _READ[key] = tuple(nfg.read_config(path, profiles))
    return _READ[key]


class Config:
    """nextflow.config with profiles (and further -c files), as the tasks of a run see it."""

    def __init__(self, profiles: tuple[str, ...] = (), extra: tuple[Path, ...] = (),
                 main: Path = REPO / "nextflow.config"):
        self.profiles = profiles
        self.settings = [s for path in (main, *extra) for s in _read(Path(path), tuple(profiles))]

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


def publish(task: Task, config: Config, scope: dict, launch_dir: Path) -> list[tuple[Path, Path]]:
    """Copy (or link) the task's path outputs as its publishDir setting says (a relative path:
    from the launch folder)."""
    options = config.value("publishDir", task.simple_name, labels_of(task.process), scope)
    if not options or options.get("enabled") is False:
        return []
    if not isinstance(options, dict):
        raise nfg.GroovyError(f"{task.simple_name}: publishDir must be a map here, not {options!r}")
    evaluated = {k: (v() if isinstance(v, nfg.Closure) and k != "saveAs" else v) for k, v in options.items()}
    target_root = Path(nfg.gstr(evaluated["path"]))
    target_root = target_root if target_root.is_absolute() else launch_dir / target_root
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
