"""Values as Nextflow scripts see them (tests only): files, channels, a process's outputs.

Part of tests/nextflow/nfflow.py's small Nextflow. A channel is the list of everything it will
emit (`value` for a value channel): process calls run their tasks at once, so every operator
works on complete lists, in program order.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nfgroovy as nfg


class Active:
    """The run that collectFile writes for and channel.topic() reads (set by nfflow.Session)."""

    session = None


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
            return Channel([args[0](v) for v in items], self.value)
        if name == "flatMap":
            return Channel([x for v in items for x in (args[0](v) or [])])
        if name == "filter":
            return Channel([v for v in items if nfg.truth(args[0](v))])
        if name == "first":
            return Channel(items[:1], value=True)
        if name == "mix":
            return Channel(items + [x for other in args for x in other.items])
        if name == "unique":
            return Channel([v for k, v in enumerate(items) if v not in items[:k]])
        if name == "flatten":
            return Channel(nfg.call_method(items, "flatten", [], False))
        if name in ("collect", "toList"):  # collect emits nothing for an empty channel, toList []
            return Channel([list(items)] if items or name == "toList" else [], value=True)
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
        session = Active.session
        folder = session.resolve(kwargs["storeDir"]) if kwargs.get("storeDir") else session.work / "collect-file"
        folder.mkdir(parents=True, exist_ok=True)
        if args and isinstance(args[0], nfg.Closure):
            files: dict[str, list[str]] = {}
            for item in self.items:
                name, text = args[0](item)
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
            return Channel(Active.session.topics.get(args[0], []))
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
