"""YAML config files whose errors name a line: the part the tenants, providers, SIP and flow
loaders share.

Each loader composes the YAML node tree (which keeps every node's line and column), refuses
repeated keys, lets msgspec validate the plain data, then maps msgspec's `... - at `$.path``
back to the node at that path. This module holds those steps once; the file-specific rules and
hints stay in each loader, which passes its own `YamlFileError` subclass to raise.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple, TypeVar

import yaml

__all__ = ["SchemaProblem", "YamlFileError", "compose", "error_at", "find", "key_node",
           "line_of", "pos", "refuse_repeated_keys", "schema_error", "schema_problem"]


class YamlFileError(ValueError):
    """A config file is invalid; `line` and `column` are 1-based (0 when unknown). The text
    reads `source:line:column: message`."""

    def __init__(self, source: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{source}:{line}:{column}: {message}")
        self.source = source
        self.line = line
        self.column = column
        self.message = message


E = TypeVar("E", bound=YamlFileError)

_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
_AT = re.compile(r"^(?P<what>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_UNKNOWN = re.compile(r"Object contains unknown field `([^`]*)`")


def read_text(path: Path, error: type[YamlFileError], what: str) -> str:
    """The file's text, or `error` naming why it cannot be read (`what`: "the tenants file")."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(str(path), 0, 0, f"cannot read {what} "
                    f"({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError as exc:
        raise error(str(path), 0, 0, f"{what} is not UTF-8 text (byte {exc.start}); save it "
                    "as UTF-8") from None


def compose(text: str, source: str, error: type[YamlFileError]) -> yaml.Node | None:
    """The node tree (None for an empty file); a syntax error raises `error` at pyyaml's mark."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise error(source, line, col, f"YAML syntax: {problem}") from None
    except yaml.YAMLError as exc:
        raise error(source, 0, 0, f"YAML: {type(exc).__name__}") from None


def refuse_repeated_keys(node: yaml.Node, source: str, error: type[YamlFileError]) -> None:
    """Raise `error` at the second of two equal keys in one mapping (YAML keeps the last one
    silently)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, yaml.Node] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    first = seen[key.value].start_mark.line + 1
                    raise error(source, *pos(key), f"key `{key.value}` repeats the one on "
                                f"line {first}; keep one")
                seen[key.value] = key
            refuse_repeated_keys(value, source, error)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            refuse_repeated_keys(item, source, error)


def pos(node: yaml.Node) -> tuple[int, int]:
    """The node's 1-based line and column."""
    return node.start_mark.line + 1, node.start_mark.column + 1


def find(root: yaml.Node, path: str, *, top: str = "") -> tuple[yaml.Node, str]:
    """The deepest node along a msgspec path (`$.tenants[0].limits`), and that path's readable
    form up to it (`top` when not even the first step exists)."""
    node, walked = root, []
    for match in _STEP.finditer(path):
        key, index = match.group(1), match.group(2)
        child = _child(node, key, int(index) if index is not None else None)
        if child is None:
            break
        node = child
        walked.append(f".{key}" if key is not None else f"[{index}]")
    return node, "".join(walked).lstrip(".") or top


def _child(node: yaml.Node, key: str | None, index: int | None) -> yaml.Node | None:
    if key is not None and isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    if index is not None and isinstance(node, yaml.SequenceNode) and index < len(node.value):
        return node.value[index]
    return None


def key_node(mapping: yaml.Node, key: str) -> yaml.Node | None:
    """The key node (not its value) `key` in a mapping node."""
    if isinstance(mapping, yaml.MappingNode):
        for k, _ in mapping.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return k
    return None


def line_of(root: yaml.Node, path: str) -> int:
    """The line of the deepest node along a msgspec path."""
    return pos(find(root, path)[0])[0]


def error_at(error: type[E], root: yaml.Node, source: str, path: str, message: str, *,
             top: str = "") -> E:
    """`error` at the node of a msgspec path, its text `readable path: message`."""
    node, readable = find(root, path, top=top)
    return error(source, *pos(node), f"{readable}: {message}")


class SchemaProblem(NamedTuple):
    """A msgspec ValidationError placed in the YAML tree."""

    what: str  # msgspec's message without its ` - at `$...`` tail
    path: str  # msgspec's path (`$` when it gave none), after the loader's prefix
    node: yaml.Node  # the deepest node along it; for an unknown field, that field's key
    readable: str  # the path up to `node`, without `$.`


def schema_problem(message: str, root: yaml.Node, *, prefix: str = "$",
                   top: str = "") -> SchemaProblem:
    """Split msgspec's `... - at `$.path`` message and find its node. `prefix`: where the
    validated data sits in the file (`$.flow` when nested under a `flow:` key)."""
    match = _AT.match(message)
    what = match.group("what") if match else message
    path = prefix + ((match.group("path") if match else None) or "$")[1:]
    node, readable = find(root, path, top=top)
    unknown = _UNKNOWN.match(what)
    if unknown:  # point at the misspelt key itself
        key = key_node(node, unknown.group(1))
        if key is not None:
            node = key
    return SchemaProblem(what, path, node, readable)


def schema_error(error: type[E], source: str, problem: SchemaProblem,
                 what: str | None = None) -> E:
    """`error` at the problem's node: `readable path: what` (just `what` at the top level);
    `what` defaults to msgspec's text, a loader passes its own to add a hint."""
    text = problem.what if what is None else what
    where = f"{problem.readable}: " if problem.readable else ""
    return error(source, *pos(problem.node), f"{where}{text}")
