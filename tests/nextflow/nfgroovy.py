"""A reader for the small subset of Groovy that nofone's Nextflow files use (tests only).

Nextflow cannot run where the tests run, so the tests read the pipeline with this module: it
parses each process (directives, inputs, outputs, `script:` and `stub:`), reads the configs
(params, `withName`/`withLabel` selectors, profiles, includes), and evaluates Groovy with test
values: expressions (GStrings, ternaries, lists, maps, closures such as `ext.args = { ... }`),
and the statements of workflow bodies, functions and nf-test blocks (`def`, assignments to
names, indexes and properties, `if`/`else`, `return`, `assert`). tests/nextflow/nfflow.py runs
the workflows with it. Anything outside the subset raises GroovyError, which is the cue to keep
the Nextflow files simple (or to extend this reader).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class GroovyError(Exception):
    """Syntax or semantics outside the subset this reader understands."""


# ---------------------------------------------------------------------------------------------
# Lexing
# ---------------------------------------------------------------------------------------------

_OPS = sorted(
    ["<=>", "==~", "?.", "?:", "*.", "->", "==", "!=", "<=", ">=", "&&", "||", "..", "=~", "<<",
     "+", "-", "*", "/", "%", "!", "?", ":", ".", ",", "(", ")", "[", "]", "{", "}", "=", "<",
     ">", "|", ";"],
    key=len, reverse=True,
)
_QUOTES = ('"""', "'''", '"', "'")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"\d+(\.\d+)?([eE][+-]?\d+)?")


@dataclass
class Token:
    kind: str  # id, num, str, op, nl, eof
    value: Any
    start: int
    end: int
    quote: str = ""


def _string_end(text: str, i: int) -> int:
    """Index just after the string literal that starts at text[i]."""
    quote = next(q for q in _QUOTES if text.startswith(q, i))
    j = i + len(quote)
    while j < len(text):
        if text[j] == "\\":
            j += 2
            continue
        if text.startswith(quote, j):
            return j + len(quote)
        if len(quote) == 1 and text[j] == "\n":
            raise GroovyError(f"line break in a {quote}-string at offset {i}")
        if quote[0] == '"' and text.startswith("${", j):
            j = brace_end(text, j + 1)
            continue
        j += 1
    raise GroovyError(f"unterminated string at offset {i}")


def brace_end(text: str, i: int) -> int:
    """text[i] is '{': the index just after its matching '}', skipping strings and comments."""
    depth = 0
    j = i
    while j < len(text):
        c = text[j]
        if c in "'\"":
            j = _string_end(text, j)
            continue
        if text.startswith("//", j):
            j = text.find("\n", j) if "\n" in text[j:] else len(text)
            continue
        if text.startswith("/*", j):
            j = text.index("*/", j) + 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    raise GroovyError(f"unbalanced braces from offset {i}")


def strip_comments(text: str) -> str:
    """The text with // and /* */ comments blanked out (line breaks kept); strings untouched."""
    out = []
    j = 0
    while j < len(text):
        c = text[j]
        if c in "'\"":
            end = _string_end(text, j)
            out.append(text[j:end])
            j = end
        elif text.startswith("//", j):
            end = text.find("\n", j)
            end = len(text) if end < 0 else end
            out.append(" " * (end - j))
            j = end
        elif text.startswith("/*", j):
            end = text.index("*/", j) + 2
            out.append("".join("\n" if ch == "\n" else " " for ch in text[j:end]))
            j = end
        else:
            out.append(c)
            j += 1
    return "".join(out)


def tokenize(text: str) -> list[Token]:
    """Tokens of comment-free Groovy text; line breaks become (collapsed) 'nl' tokens."""
    tokens: list[Token] = []
    j = 0
    n = len(text)
    while j < n:
        c = text[j]
        if c == "\n":
            if not tokens or tokens[-1].kind != "nl":
                tokens.append(Token("nl", "\n", j, j + 1))
            j += 1
        elif c in " \t\r":
            j += 1
        elif c == "\\" and text.startswith("\\\n", j):
            j += 2
        elif text.startswith("//", j) or text.startswith("/*", j):
            raise GroovyError("comments must be stripped before tokenizing")
        elif c in "'\"":
            end = _string_end(text, j)
            quote = next(q for q in _QUOTES if text.startswith(q, j))
            tokens.append(Token("str", text[j + len(quote):end - len(quote)], j, end, quote))
            j = end
        elif c.isdigit():
            m = _NUMBER.match(text, j)
            raw = m.group()
            value = float(raw) if ("." in raw or "e" in raw.lower()) else int(raw)
            tokens.append(Token("num", value, j, m.end()))
            j = m.end()
        elif c.isalpha() or c == "_":
            m = _IDENT.match(text, j)
            tokens.append(Token("id", m.group(), j, m.end()))
            j = m.end()
        else:
            op = next((o for o in _OPS if text.startswith(o, j)), None)
            if op is None:
                raise GroovyError(f"unexpected character {c!r} at offset {j}")
            tokens.append(Token("op", op, j, j + len(op)))
            j += len(op)
    tokens.append(Token("eof", None, n, n))
    return tokens


def split_statements(tokens: list[Token]) -> list[list[Token]]:
    """Top-level statements: split at line breaks (and ';') outside brackets, braces and parens,
    except where a line ends with an operator or the next line continues one."""
    statements: list[list[Token]] = []
    current: list[Token] = []
    depth = 0
    continuing = {".", "?.", "?", ":", "?:", "&&", "||", "+", "*.", "->"}
    for k, tok in enumerate(tokens):
        if tok.kind == "eof":
            break
        if tok.kind == "op" and tok.value in "([{":
            depth += 1
        elif tok.kind == "op" and tok.value in ")]}":
            depth -= 1
        if depth == 0 and (tok.kind == "nl" or (tok.kind == "op" and tok.value == ";")):
            ends_with_op = current and current[-1].kind == "op" and current[-1].value in continuing | {",", "="}
            following = next((t for t in tokens[k + 1:] if t.kind != "nl"), None)
            next_continues = following is not None and following.kind == "op" and following.value in continuing
            if tok.kind == "nl" and (ends_with_op or next_continues):
                continue
            if current:
                statements.append(current)
            current = []
            continue
        if tok.kind != "nl" or depth > 0:
            current.append(tok)
    if current:
        statements.append(current)
    return statements


# ---------------------------------------------------------------------------------------------
# Parsing expressions (to tuples: the AST)
# ---------------------------------------------------------------------------------------------


class Parser:
    """Recursive descent over tokens; line breaks are skipped inside () and []."""

    def __init__(self, tokens: list[Token]):
        self.tokens = [t for t in tokens if t.kind != "eof"] + [Token("eof", None, 0, 0)]
        self.i = 0
        self.nested = 0  # open ( and [

    # -- token helpers --
    def _index(self, skip_nl: bool) -> int:
        j = self.i
        if skip_nl or self.nested:
            while self.tokens[j].kind == "nl":
                j += 1
        return j

    def peek(self, skip_nl: bool = False) -> Token:
        return self.tokens[self._index(skip_nl)]

    def take(self, skip_nl: bool = False) -> Token:
        j = self._index(skip_nl)
        self.i = j + 1
        return self.tokens[j]

    def is_op(self, value: str, skip_nl: bool = False) -> bool:
        tok = self.peek(skip_nl)
        return tok.kind == "op" and tok.value == value

    def expect(self, value: str) -> Token:
        tok = self.take(skip_nl=True)
        if tok.kind != "op" or tok.value != value:
            raise GroovyError(f"expected {value!r}, found {tok.value!r}")
        return tok

    def at_end(self) -> bool:
        return self.peek(skip_nl=True).kind == "eof"

    # -- expressions --
    def expression(self):
        return self.ternary()

    def ternary(self):
        cond = self.binary(0)
        if self.is_op("?", skip_nl=True):
            self.take(skip_nl=True)
            yes = self.expression()
            self.expect(":")
            no = self.expression()
            return ("?", cond, yes, no)
        if self.is_op("?:", skip_nl=True):
            self.take(skip_nl=True)
            return ("?:", cond, self.expression())
        return cond

    _LEVELS = (("||",), ("&&",), ("==", "!=", "<", ">", "<=", ">=", "<=>", "=~", "==~", "in"),
               ("..",), ("<<",), ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int):
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            tok = self.peek()
            ops = self._LEVELS[level]
            if (tok.kind == "op" and tok.value in ops) or (tok.kind == "id" and tok.value == "in" and "in" in ops):
                self.take()
                right = self.binary(level + 1)
                left = ("bin", tok.value, left, right)
            else:
                return left

    def unary(self):
        if self.is_op("!"):
            self.take()
            return ("not", self.unary())
        if self.is_op("-"):
            self.take()
            return ("neg", self.unary())
        return self.postfix(self.primary())

    def postfix(self, node):
        while True:
            tok = self.peek()
            if tok.kind == "nl":
                after = self.peek(skip_nl=True)
                if after.kind == "op" and after.value in (".", "?."):
                    self.take(skip_nl=True)
                    tok = after
                    self.i -= 1
                else:
                    return node
            if tok.kind == "op" and tok.value in (".", "?.", "*."):
                self.take()
                name = self.take(skip_nl=True)
                if name.kind != "id":
                    raise GroovyError(f"expected a name after {tok.value!r}")
                if self.is_op("("):
                    args, kwargs = self.call_args()
                    if self.is_op("{"):
                        args.append(self.primary())
                    node = ("method", tok.value, node, name.value, args, kwargs)
                elif self.is_op("{"):
                    node = ("method", tok.value, node, name.value, [self.primary()], {})
                else:
                    node = ("prop", tok.value, node, name.value)
            elif tok.kind == "op" and tok.value == "[":
                self.take()
                self.nested += 1
                index = self.expression()
                self.expect("]")
                self.nested -= 1
                node = ("index", node, index)
            elif tok.kind == "op" and tok.value == "(" and node[0] == "var":
                args, kwargs = self.call_args()
                node = ("call", node[1], args, kwargs)
            else:
                return node

    def call_args(self) -> tuple[list, dict]:
        self.expect("(")
        self.nested += 1
        args, kwargs = self.items(")")
        self.expect(")")
        self.nested -= 1
        return args, kwargs

    def items(self, closing: str) -> tuple[list, dict]:
        """Comma-separated expressions and `name: value` pairs, up to `closing` (not consumed)."""
        args: list = []
        kwargs: dict = {}
        while not self.is_op(closing, skip_nl=True) and not self.at_end():
            tok = self.peek(skip_nl=True)
            after = self.tokens[self._index(True) + 1]
            if tok.kind in ("id", "str") and after.kind == "op" and after.value == ":":
                self.take(skip_nl=True)
                self.take()
                kwargs[tok.value] = self.expression()
            else:
                args.append(self.expression())
            if not self.is_op(",", skip_nl=True):
                break
            self.take(skip_nl=True)
        return args, kwargs

    def primary(self):
        tok = self.take(skip_nl=bool(self.nested))
        if tok.kind == "str":
            return ("str", tok.quote, tok.value)
        if tok.kind == "num":
            return ("const", tok.value)
        if tok.kind == "id":
            if tok.value in ("true", "false"):
                return ("const", tok.value == "true")
            if tok.value == "null":
                return ("const", None)
            if tok.value == "new":
                name = [self.take().value]
                while self.is_op("."):
                    self.take()
                    name.append(self.take().value)
                args, kwargs = self.call_args()
                return ("new", ".".join(name), args, kwargs)
            return ("var", tok.value)
        if tok.kind == "op" and tok.value == "(":
            self.nested += 1
            node = self.expression()
            self.expect(")")
            self.nested -= 1
            return node
        if tok.kind == "op" and tok.value == "[":
            self.nested += 1
            if self.is_op(":"):
                self.take()
                self.expect("]")
                self.nested -= 1
                return ("map", {})
            args, kwargs = self.items("]")
            self.expect("]")
            self.nested -= 1
            if kwargs and args:
                raise GroovyError("a list literal mixes values and key: value pairs")
            return ("map", kwargs) if kwargs else ("list", args)
        if tok.kind == "op" and tok.value == "{":
            return self.closure()
        raise GroovyError(f"unexpected {tok.value!r} in an expression")

    def closure(self):
        """After '{': optional `a, b ->`, then statements up to '}'."""
        saved = self.nested
        self.nested = 0
        params: list[str] = []
        j = self._index(True)
        names = []
        while (self.tokens[j].kind == "id" and self.tokens[j + 1].kind == "op"
               and self.tokens[j + 1].value in (",", "->")):
            names.append(self.tokens[j].value)
            if self.tokens[j + 1].value == "->":
                params = names
                self.i = j + 2
                break
            j += 2
        body = self.statements_until_brace()
        self.nested = saved
        return ("closure", params, body)

    def statement(self):
        tok = self.peek(skip_nl=True)
        if tok.kind == "id" and tok.value == "def":
            self.take(skip_nl=True)
            name = self.take()
            self.expect("=")
            return ("def", name.value, self.expression())
        if tok.kind == "id" and tok.value == "if":
            return self.if_statement()
        if tok.kind == "id" and tok.value == "return":
            self.take(skip_nl=True)
            ends = self.peek().kind in ("nl", "eof") or (self.peek().kind == "op" and self.peek().value in ("}", ";"))
            return ("return", None if ends else self.expression())
        if tok.kind == "id" and tok.value == "assert":
            self.take(skip_nl=True)
            condition = self.expression()
            message = None
            if self.is_op(":"):
                self.take()
                message = self.expression()
            return ("assert", condition, message, tok.start)
        after = self.tokens[min(self._index(True) + 1, len(self.tokens) - 1)]
        if tok.kind == "id" and after.kind == "op" and after.value == "=":
            self.take(skip_nl=True)
            self.take()
            return ("def", tok.value, self.expression())
        node = self.expression()
        if self.is_op("="):
            self.take()
            if node[0] not in ("index", "prop"):
                raise GroovyError("assignment to something that is neither a name, an index nor a property")
            return ("set", node, self.expression())
        return ("expr", node)

    def block(self) -> list:
        """`{ statements }`: the statements."""
        self.expect("{")
        saved = self.nested
        self.nested = 0
        body = self.statements_until_brace()
        self.nested = saved
        return body

    def statements_until_brace(self) -> list:
        """Statements up to the closing '}' (consumed)."""
        body = []
        while not self.is_op("}", skip_nl=True):
            if self.at_end():
                raise GroovyError("unterminated block or closure")
            if self.peek().kind == "nl" or self.is_op(";"):
                self.take()
                continue
            body.append(self.statement())
        self.expect("}")
        return body

    def if_statement(self):
        self.take(skip_nl=True)  # if
        self.expect("(")
        self.nested += 1
        condition = self.expression()
        self.expect(")")
        self.nested -= 1
        body = self.block()
        orelse: list = []
        following = self.peek(skip_nl=True)
        if following.kind == "id" and following.value == "else":
            self.take(skip_nl=True)
            nxt = self.peek(skip_nl=True)
            orelse = [self.if_statement()] if nxt.kind == "id" and nxt.value == "if" else self.block()
        return ("if", condition, body, orelse)


def parse_expression(tokens: list[Token]):
    parser = Parser(tokens)
    node = parser.expression()
    if not parser.at_end():
        raise GroovyError(f"unexpected {parser.peek(skip_nl=True).value!r} after an expression")
    return node


def parse_statements(tokens: list[Token]) -> list:
    return [Parser(statement).statement() for statement in split_statements(tokens)]


def parse_block(tokens: list[Token]) -> list:
    """Statements in order, `if ... else ...` across lines included (a workflow's or a
    function's body)."""
    parser = Parser(tokens)
    body = []
    while not parser.at_end():
        if parser.peek().kind == "nl" or parser.is_op(";"):
            parser.take()
            continue
        body.append(parser.statement())
    return body


# ---------------------------------------------------------------------------------------------
# Evaluating
# ---------------------------------------------------------------------------------------------


class PathList(list):
    """Staged input files: renders like Nextflow, space-separated names (empty when none)."""

    def __str__(self) -> str:
        return " ".join(str(p) for p in self)


@dataclass
class Unit:
    """A Nextflow MemoryUnit or Duration: amount in base units (bytes, milliseconds)."""

    amount: float
    kind: str

    def __mul__(self, other):
        return Unit(self.amount * other, self.kind)

    __rmul__ = __mul__


_UNITS = {"B": (1, "memory"), "KB": (1024, "memory"), "MB": (1024**2, "memory"),
          "GB": (1024**3, "memory"), "TB": (1024**4, "memory"),
          "ms": (1, "duration"), "s": (1000, "duration"), "m": (60_000, "duration"),
          "min": (60_000, "duration"), "h": (3_600_000, "duration"), "d": (86_400_000, "duration")}


@dataclass
class Closure:
    params: list[str]
    body: list
    scope: dict

    def __call__(self, *args, **extra):
        scope = dict(self.scope)
        scope.update(extra)
        if len(self.params) > 1 and len(args) == 1 and isinstance(args[0], (list, tuple)):
            args = tuple(args[0])  # Groovy spreads one list over several parameters
        if self.params:
            for name, value in zip(self.params, args):
                scope[name] = value
        elif args:
            scope["it"] = args[0]
        return run_body(self.body, scope)


class Return(Exception):
    """`return` inside a closure or function body."""

    def __init__(self, value):
        self.value = value


def run_body(body: list, scope: dict):
    """The statements of a closure or function; the value of `return`, else of the last one."""
    result = None
    try:
        for statement in body:
            result = execute(statement, scope)
    except Return as done:
        return done.value
    return result


def truth(value) -> bool:
    """Groovy truth."""
    if isinstance(value, Unit):
        return value.amount != 0
    return bool(value)


def gstr(value) -> str:
    """How Groovy renders a value in a GString."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, PathList):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(gstr(v) for v in value) + "]"
    if isinstance(value, dict):
        return "[" + ", ".join(f"{k}:{gstr(v)}" for k, v in value.items()) + "]" if value else "[:]"
    if isinstance(value, float):
        text = repr(value)
        return text.upper().replace("E-0", "E-") if "e" in text else text
    return str(value)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "\\": "\\", "'": "'",
            '"': '"', "$": "$", "/": "/"}


def interpolate(quote: str, raw: str, scope: dict) -> str:
    """The value of a string literal: escapes, and for double quotes ${expr} and $name.path."""
    out = []
    j = 0
    double = quote[0] == '"'
    while j < len(raw):
        c = raw[j]
        if c == "\\":
            nxt = raw[j + 1]
            if nxt not in _ESCAPES:
                raise GroovyError(f"unsupported escape \\{nxt} in a string")
            out.append(_ESCAPES[nxt])
            j += 2
        elif c == "$" and double:
            if raw.startswith("${", j):
                end = brace_end(raw, j + 1)
                node = parse_expression(tokenize(raw[j + 2:end - 1]))
                out.append(gstr(evaluate(node, scope)))
                j = end
            else:
                m = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*").match(raw, j + 1)
                if not m:
                    raise GroovyError(f"bare '$' in a GString (escape it as \\$): ...{raw[max(0, j - 20):j + 20]}...")
                parts = m.group().split(".")
                value = lookup(scope, parts[0])
                for part in parts[1:]:
                    value = get_property(value, part, safe=False)
                out.append(gstr(value))
                j = m.end()
        else:
            out.append(c)
            j += 1
    return "".join(out)


def lookup(scope: dict, name: str):
    if name not in scope:
        raise GroovyError(f"unknown variable {name!r}")
    return scope[name]


def get_property(value, name: str, safe: bool):
    if value is None:
        if safe:
            return None
        raise GroovyError(f"property {name!r} of null")
    if isinstance(value, dict):
        return value.get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and name in _UNITS:
        factor, kind = _UNITS[name]
        return Unit(value * factor, kind)
    if hasattr(value, "groovy_get"):
        return value.groovy_get(name)
    if isinstance(value, Path):
        return {"name": value.name, "baseName": value.stem, "parent": value.parent}[name]
    if hasattr(value, name):
        return getattr(value, name)
    raise GroovyError(f"no property {name!r} on {type(value).__name__}")


def call_method(target, name: str, args: list, safe: bool, kwargs: dict | None = None):
    if target is None:
        if safe:
            return None
        raise GroovyError(f"method {name}() on null")
    if hasattr(target, "groovy_call"):
        return target.groovy_call(name, args, kwargs or {})
    if kwargs:  # Groovy passes named arguments as a leading map
        args = [kwargs, *args]
    if name == "toString" and not args:
        return gstr(target)
    if isinstance(target, (list, tuple)):
        if name == "join":
            return (args[0] if args else "").join(gstr(v) for v in target)
        if name == "findAll":
            test = args[0] if args else truth
            return [v for v in target if truth(test(v))]
        if name == "collect":
            return [args[0](v) for v in target]
        if name == "each":
            for v in target:
                args[0](v)
            return target
        if name in ("any", "every"):
            test = args[0] if args else truth
            return (any if name == "any" else all)(truth(test(v)) for v in target)
        if name == "find":
            return next((v for v in target if truth(args[0](v))), None)
        if name == "contains":
            return args[0] in target
        if name == "size":
            return len(target)
        if name == "isEmpty":
            return not target
        if name in ("first", "last"):
            return target[0 if name == "first" else -1]
        if name == "get":
            return target[args[0]]
        if name in ("toList", "asList"):
            return list(target)
        if name == "flatten":
            return _flatten(target)
        if name == "unique":
            return [v for k, v in enumerate(target) if v not in target[:k]]
    if isinstance(target, str):
        if name == "equals":
            return target == args[0]
        simple = {"trim": str.strip, "toLowerCase": str.lower, "toUpperCase": str.upper,
                  "toString": str, "size": len, "isEmpty": lambda s: not s}
        if name in simple and not args:
            return simple[name](target)
        if name in ("endsWith", "startsWith", "contains"):
            return {"endsWith": target.endswith, "startsWith": target.startswith,
                    "contains": target.__contains__}[name](args[0])
        if name == "tokenize":
            return [part for part in re.split("[" + re.escape(args[0] if args else " \t\n") + "]", target) if part]
        if name == "replace":
            return target.replace(args[0], args[1])
    if isinstance(target, Closure) and name == "call":
        return target(*args)
    if isinstance(target, int) and name == "intdiv":
        return target // args[0]
    if isinstance(target, dict):
        if name == "get":
            return target.get(args[0])
        if name == "containsKey":
            return args[0] in target
        if name == "keySet":
            return list(target)
        if name == "size":
            return len(target)
    raise GroovyError(f"method {name}() on {type(target).__name__} is outside the supported subset")


def _flatten(values) -> list:
    out = []
    for v in values:
        out.extend(_flatten(v) if isinstance(v, (list, tuple)) else [v])
    return out


def _binary(op: str, left, right):
    if op == "<<":
        if not isinstance(left, list):
            raise GroovyError("<< on something other than a list")
        left.append(right)
        return left
    if op == "+":
        if isinstance(left, dict):
            return {**left, **right}
        if isinstance(left, str):
            return left + gstr(right)
        if isinstance(left, list):
            return [*left, *right] if isinstance(right, list) else [*left, right]
        return left + right
    if op == "-":
        if isinstance(left, list):
            return [v for v in left if v not in (right if isinstance(right, list) else [right])]
        return left - right
    if op == "*":
        return left * right
    if op == "/":
        return left / right
    if op == "%":
        return left % right
    if op == "==":
        return left == right
    if op == "!=":
        return left != right
    if op in ("<", ">", "<=", ">="):
        a = left.amount if isinstance(left, Unit) else left
        b = right.amount if isinstance(right, Unit) else right
        return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
    if op == "<=>":
        return (left > right) - (left < right)
    if op == "in":
        return left in right
    if op == "..":
        return list(range(left, right + 1))
    if op in ("=~", "==~"):
        return bool((re.search if op == "=~" else re.fullmatch)(right, left))
    raise GroovyError(f"operator {op}")


def evaluate(node, scope: dict):
    kind = node[0]
    if kind == "const":
        return node[1]
    if kind == "str":
        return interpolate(node[1], node[2], scope)
    if kind == "var":
        return lookup(scope, node[1])
    if kind == "list":
        return [evaluate(v, scope) for v in node[1]]
    if kind == "map":
        return {k: evaluate(v, scope) for k, v in node[1].items()}
    if kind == "closure":
        return Closure(node[1], node[2], scope)
    if kind == "not":
        return not truth(evaluate(node[1], scope))
    if kind == "neg":
        return -evaluate(node[1], scope)
    if kind == "?":
        return evaluate(node[2] if truth(evaluate(node[1], scope)) else node[3], scope)
    if kind == "?:":
        value = evaluate(node[1], scope)
        return value if truth(value) else evaluate(node[2], scope)
    if kind == "bin":
        op = node[1]
        if op == "&&":
            return truth(evaluate(node[2], scope)) and truth(evaluate(node[3], scope))
        if op == "||":
            return truth(evaluate(node[2], scope)) or truth(evaluate(node[3], scope))
        return _binary(op, evaluate(node[2], scope), evaluate(node[3], scope))
    if kind == "prop":
        target = evaluate(node[2], scope)
        if node[1] == "*.":
            return [get_property(v, node[3], safe=False) for v in target]
        return get_property(target, node[3], safe=node[1] == "?.")
    if kind == "method":
        target = evaluate(node[2], scope)
        args = [evaluate(a, scope) for a in node[4]]
        kwargs = {k: evaluate(v, scope) for k, v in node[5].items()}
        if node[1] == "*.":
            return [call_method(v, node[3], args, safe=False, kwargs=kwargs) for v in target]
        return call_method(target, node[3], args, safe=node[1] == "?.", kwargs=kwargs)
    if kind == "index":
        container, key = evaluate(node[1], scope), evaluate(node[2], scope)
        if isinstance(container, dict):
            return container.get(key)  # Groovy: null for a missing key
        if hasattr(container, "groovy_index"):
            return container.groovy_index(key)
        return container[key]
    if kind == "call":
        function = scope.get(node[1])
        if callable(function):
            return function(*[evaluate(a, scope) for a in node[2]],
                            **{k: evaluate(v, scope) for k, v in node[3].items()})
        raise GroovyError(f"call of unknown function {node[1]}()")
    raise GroovyError(f"cannot evaluate {kind}")


def execute(statement, scope: dict):
    """Run a statement in `scope` (assignments update it); returns the statement's value."""
    kind = statement[0]
    if kind == "def":
        scope[statement[1]] = evaluate(statement[2], scope)
        return scope[statement[1]]
    if kind == "if":
        branch = statement[2] if truth(evaluate(statement[1], scope)) else statement[3]
        result = None
        for inner in branch:
            result = execute(inner, scope)
        return result
    if kind == "return":
        raise Return(None if statement[1] is None else evaluate(statement[1], scope))
    if kind == "assert":
        if not truth(evaluate(statement[1], scope)):
            message = gstr(evaluate(statement[2], scope)) if statement[2] is not None else ""
            raise AssertionError(f"assert failed: {describe(statement[1])} {message}".strip())
        return None
    if kind == "set":
        target, value = statement[1], evaluate(statement[2], scope)
        container = evaluate(target[1] if target[0] == "index" else target[2], scope)
        key = evaluate(target[2], scope) if target[0] == "index" else target[3]
        if hasattr(container, "groovy_set"):
            container.groovy_set(key, value)
        elif isinstance(container, list) and isinstance(key, int):
            container.extend([None] * (key + 1 - len(container)))
            container[key] = value
        else:
            container[key] = value
        return value
    return evaluate(statement[1], scope)


def describe(node) -> str:
    """A short rendering of an expression, for assertion messages."""
    kind = node[0]
    if kind == "var":
        return node[1]
    if kind == "const":
        return repr(node[1])
    if kind == "str":
        return f"{node[1]}{node[2]}{node[1]}"
    if kind == "prop":
        return f"{describe(node[2])}{node[1]}{node[3]}"
    if kind == "method":
        return f"{describe(node[2])}{node[1]}{node[3]}(...)"
    if kind == "call":
        return f"{node[1]}(...)"
    if kind == "bin":
        return f"{describe(node[2])} {node[1]} {describe(node[3])}"
    if kind == "not":
        return f"!{describe(node[1])}"
    if kind == "index":
        return f"{describe(node[1])}[{describe(node[2])}]"
    return kind


def value_of(node, scope: dict):
    """A config value: closures (dynamic directives, ext.args) are called in `scope`."""
    value = evaluate(node, scope)
    return value() if isinstance(value, Closure) else value


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------

SECTIONS = ("input", "output", "when", "script", "shell", "exec", "stub")


@dataclass
class Element:
    """One item of an input or output declaration: `path x`, or `val(meta)` inside a tuple."""

    qualifier: str
    node: Any
    options: dict = field(default_factory=dict)

    @property
    def name(self) -> str | None:
        return self.node[1] if self.node[0] == "var" else None


@dataclass
class Declaration:
    qualifier: str
    elements: list[Element]
    options: dict

    @property
    def emit(self) -> str | None:
        node = self.options.get("emit")
        return node[1] if node else None

    @property
    def optional(self) -> bool:
        node = self.options.get("optional")
        return bool(node and node[1])


@dataclass
class Process:
    name: str
    path: Path
    directives: list[tuple[str, list, dict]]
    inputs: list[Declaration]
    outputs: list[Declaration]
    script: list
    stub: list | None

    def directive(self, name: str) -> list[tuple[list, dict]]:
        return [(args, kwargs) for d, args, kwargs in self.directives if d == name]

    def directive_values(self, name: str, scope: dict) -> list:
        return [evaluate(args[0], scope) for args, _ in self.directive(name)]


def _command(tokens: list[Token]) -> tuple[str, list, dict]:
    """`name arg, key: value, ...` or `name(arg, key: value)`."""
    parser = Parser(tokens)
    name = parser.take()
    if name.kind != "id":
        raise GroovyError(f"expected a directive or qualifier, found {name.value!r}")
    if parser.is_op("("):
        args, kwargs = parser.call_args()
    else:
        args, kwargs = parser.items("\0")
    if not parser.at_end():
        raise GroovyError(f"unexpected {parser.peek(skip_nl=True).value!r} in `{name.value} ...`")
    return name.value, args, kwargs


def _declaration(tokens: list[Token]) -> Declaration:
    qualifier, args, kwargs = _command(tokens)
    if qualifier == "tuple":
        elements = []
        for arg in args:
            if arg[0] != "call":
                raise GroovyError("tuple elements must be qualifier(...) calls")
            elements.append(Element(arg[1], arg[2][0], arg[3]))
        return Declaration("tuple", elements, kwargs)
    if not args:
        return Declaration(qualifier, [], kwargs)
    return Declaration(qualifier, [Element(qualifier, args[0], kwargs)], kwargs)


def parse_processes(path: Path) -> list[Process]:
    text = strip_comments(Path(path).read_text())
    processes = []
    for m in re.finditer(r"(?m)^\s*process\s+([A-Za-z_][A-Za-z0-9_]*)\s*\{", text):
        end = brace_end(text, m.end() - 1)
        body = tokenize(text[m.end():end - 1])
        section = "directives"
        parts: dict[str, list[list[Token]]] = {"directives": []}
        for statement in split_statements(body):
            if (statement[0].kind == "id" and statement[0].value in SECTIONS and len(statement) > 1
                    and statement[1].kind == "op" and statement[1].value == ":"):
                section = statement[0].value
                parts.setdefault(section, [])
                statement = statement[2:]
                if not statement:
                    continue
            parts.setdefault(section, []).append(statement)
        processes.append(Process(
            name=m.group(1),
            path=Path(path),
            directives=[_command(s) for s in parts["directives"]],
            inputs=[_declaration(s) for s in parts.get("input", [])],
            outputs=[_declaration(s) for s in parts.get("output", [])],
            script=[Parser(s).statement() for s in parts.get("script", [])],
            stub=[Parser(s).statement() for s in parts["stub"]] if "stub" in parts else None,
        ))
    return processes


def render(block: list, scope: dict) -> str:
    """The bash script of a `script:` or `stub:` block, indentation stripped like Nextflow."""
    result = None
    for statement in block:
        result = execute(statement, scope)
    if not isinstance(result, str):
        raise GroovyError("a script block must end with a string")
    return textwrap.dedent(result).strip("\n") + "\n"


def expand_stage_names(pattern: str | None, names: list[str]) -> list[str]:
    """Nextflow's names for staged input files (TaskProcessor.expandWildcards)."""
    if not pattern or pattern == "*":
        return list(names)
    if "*" not in pattern and "?" not in pattern and len(names) > 1:
        pattern += "*"

    def fill(text: str, index: int, strip: bool) -> str:
        text = text.replace("*", "" if strip else str(index))
        return re.sub(r"\?+", lambda m: str(index).rjust(len(m.group()), "0"), text)

    staged = []
    for index, source in enumerate(names, start=1):
        parent, _, base = pattern.rpartition("/")
        base = source if base in ("*", "") else fill(base, index, strip=len(names) <= 1)
        staged.append(f"{fill(parent, index, strip=False)}/{base}" if parent else base)
    return staged


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------


@dataclass
class Setting:
    """One `a.b.c = value` of a config, with the selectors (withName/withLabel) it sits under."""

    name: str
    node: Any
    selectors: tuple[tuple[str, str], ...]
    source: Path


def read_config(path: Path, profiles: tuple[str, ...] = ()) -> list[Setting]:
    """Every assignment of a config file in order, includes and the named profiles spliced in."""
    path = Path(path)
    tokens = tokenize(strip_comments(path.read_text()))
    settings: list[Setting] = []
    _walk(split_statements(tokens), path, (), (), profiles, settings, in_profiles=False)
    return settings


def _walk(statements, source: Path, prefix: tuple, selectors: tuple, profiles, settings, in_profiles):
    for statement in statements:
        first = statement[0]
        if first.kind == "id" and first.value == "includeConfig":
            target = evaluate(parse_expression(statement[1:]), {"projectDir": source.parent})
            settings.extend(read_config(source.parent / target, profiles))
            continue
        j = 0
        name = []
        while j < len(statement) and statement[j].kind in ("id", "str"):
            name.append(statement[j].value)
            j += 1
            if j < len(statement) and statement[j].kind == "op" and statement[j].value == ".":
                j += 1
            else:
                break
        rest = statement[j:]
        if not rest:
            raise GroovyError(f"{source}: incomplete statement {name}")
        op = rest[0]
        if op.kind == "op" and op.value == "=":
            settings.append(Setting(".".join([*prefix, *name]), parse_expression(rest[1:]), selectors, source))
        elif op.kind == "op" and op.value == "{":
            inner = split_statements(rest[1:-1])
            if in_profiles:
                if name[0] in profiles:
                    _walk(inner, source, (), (), profiles, settings, in_profiles=False)
            elif name == ["profiles"] and not prefix:
                _walk(inner, source, (), (), profiles, settings, in_profiles=True)
            else:
                _walk(inner, source, (*prefix, *name), selectors, profiles, settings, in_profiles=False)
        elif op.kind == "op" and op.value == ":" and name[-1] in ("withName", "withLabel"):
            pattern = rest[1].value
            if not (rest[2].kind == "op" and rest[2].value == "{"):
                raise GroovyError(f"{source}: expected '{{' after {name[-1]}: {pattern}")
            _walk(split_statements(rest[3:-1]), source, prefix, (*selectors, (name[-1], pattern)),
                  profiles, settings, in_profiles=False)
        else:
            # a command such as `id 'nf-schema@2.2.1'` (plugins): recorded as a setting
            args = Parser(rest).items("\0")[0]
            settings.append(Setting(".".join([*prefix, *name]), args[0] if args else None, selectors, source))


def selector_matches(selector: tuple[str, str], name: str, labels: list[str]) -> bool:
    kind, pattern = selector
    negate = pattern.startswith("!")
    pattern = pattern.lstrip("!")
    if kind == "withName":
        hit = re.fullmatch(pattern, name) is not None or re.fullmatch(pattern, name.split(":")[-1]) is not None
    else:
        hit = any(re.fullmatch(pattern, label) for label in labels)
    return hit != negate


def process_setting(settings: list[Setting], directive: str, name: str, labels: list[str]) -> Setting | None:
    """The setting Nextflow applies for `process.<directive>` of a process: withName beats
    withLabel beats none; within one kind, the last one read wins."""
    best = None
    best_rank = -1
    for setting in settings:
        if setting.name != f"process.{directive}":
            continue
        if not all(selector_matches(s, name, labels) for s in setting.selectors):
            continue
        kinds = {kind for kind, _ in setting.selectors}
        rank = 2 if "withName" in kinds else (1 if "withLabel" in kinds else 0)
        if rank >= best_rank:
            best, best_rank = setting, rank
    return best


def config_params(settings: list[Setting]) -> dict[str, Setting]:
    """params.<name> -> its last assignment."""
    return {s.name.split(".", 1)[1]: s for s in settings if s.name.startswith("params.") and s.name.count(".") == 1}
