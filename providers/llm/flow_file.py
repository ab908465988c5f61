"""Flow scripts in YAML (configs/flows/demo.yaml): load, validate, and name the line of a mistake.

`load_flow(path)` returns a `protocols.flow.FlowScript` or raises `FlowFileError`, whose text
starts with `file:line:column`, the way storage/tenants_file.py reports the tenants file:

- YAML syntax errors carry pyyaml's mark, and repeated keys are refused (YAML keeps the last
  one silently);
- schema errors from msgspec (`... - at $.intents[2].slots[0].kind`) are mapped back to the
  YAML node at that path;
- rules across fields (flow_engine.check_script: unique names and keys, placeholders naming
  real slots, a transfer target where one is needed) name their node the same way.

Texts of the script are the tenant's, not personal data, but errors still quote paths, not
values, so they read the same for every script.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import yaml
from switchboard.protocols.flow import FlowScript
from switchboard.providers.llm.flow_engine import check_script


class FlowFileError(ValueError):
    """The flow script is invalid; `line` and `column` are 1-based (0 when unknown)."""

    def __init__(self, source: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{source}:{line}:{column}: {message}")
        self.source = source
        self.line = line
        self.column = column


def load_flow(path: str | Path) -> FlowScript:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowFileError(str(path), 0, 0, f"cannot read the flow script "
                            f"({exc.strerror or type(exc).__name__})") from None
    return parse_flow(text, source=str(path))


def parse_flow(text: str, *, source: str = "<flow>") -> FlowScript:
    """Validate a YAML script; the script may also sit under a top-level `flow:` key."""
    root = _compose(text, source)
    if root is None:
        raise FlowFileError(source, 1, 1, "the file is empty: a flow script needs `greeting:` "
                            "and `intents:` (see configs/flows/demo.yaml)")
    _refuse_repeated_keys(root, source)
    data = yaml.SafeLoader(text).get_single_data()
    prefix = "$"
    if isinstance(data, dict) and set(data) == {"flow"}:
        data, prefix = data["flow"], "$.flow"
    try:
        script = msgspec.convert(data, FlowScript)
    except msgspec.ValidationError as exc:
        raise _schema_error(str(exc), root, source, prefix) from None
    for path, message in check_script(script):
        node, readable = _find(root, prefix + path[1:])
        raise FlowFileError(source, *_pos(node), f"{readable}: {message}")
    return script


def _compose(text: str, source: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise FlowFileError(source, line, col, f"YAML syntax: {problem}") from None
    except yaml.YAMLError as exc:
        raise FlowFileError(source, 0, 0, f"YAML: {type(exc).__name__}") from None


def _refuse_repeated_keys(node: yaml.Node, source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, yaml.Node] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    first = seen[key.value].start_mark.line + 1
                    raise FlowFileError(source, *_pos(key), f"key `{key.value}` repeats the "
                                        f"one on line {first}; keep one")
                seen[key.value] = key
            _refuse_repeated_keys(value, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_repeated_keys(item, source)


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
_AT = re.compile(r"^(?P<what>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_UNKNOWN = re.compile(r"Object contains unknown field `([^`]*)`")


def _find(root: yaml.Node, path: str) -> tuple[yaml.Node, str]:
    """The deepest node along a msgspec path (`$.intents[0].slots`), and its readable path."""
    node, walked = root, []
    for match in _STEP.finditer(path):
        key, index = match.group(1), match.group(2)
        child = _child(node, key, int(index) if index is not None else None)
        if child is None:
            break
        node = child
        walked.append(f".{key}" if key is not None else f"[{index}]")
    return node, "".join(walked).lstrip(".") or "(top level)"


def _child(node: yaml.Node, key: str | None, index: int | None) -> yaml.Node | None:
    if key is not None and isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    if index is not None and isinstance(node, yaml.SequenceNode) and index < len(node.value):
        return node.value[index]
    return None


def _schema_error(message: str, root: yaml.Node, source: str, prefix: str) -> FlowFileError:
    match = _AT.match(message)
    what = match.group("what") if match else message
    path = prefix + ((match.group("path") if match else None) or "$")[1:]
    node, readable = _find(root, path)
    unknown = _UNKNOWN.match(what)
    if unknown and isinstance(node, yaml.MappingNode):  # point at the misspelt key itself
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == unknown.group(1):
                node = key
    if readable.endswith(".dtmf"):  # YAML reads `1` as a number, `#` as a comment, `*` as an alias
        what += '; write the keys (0-9, *, A-D, or a lone #) in quotes, e.g. dtmf: "1"'
    return FlowFileError(source, *_pos(node), f"{readable}: {what}")
