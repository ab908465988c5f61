"""The SIP config file: a node's SIP gateway settings and trunks in YAML.

`load_sip_config(path)` parses and validates the file (format: configs/sip.example.yaml) into
a `protocols.sip_config.SipConfig`. A bad file raises `SipConfigError`, whose text starts with
`file:line:column` (YAML syntax errors from pyyaml's mark; schema errors mapped back from
msgspec's `$.trunks[0].proxy_port` path to the YAML node). Texts never quote values: the file
holds passwords.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import yaml
from switchboard.protocols.sip_config import SipConfig
from switchboard.protocols.tenants import dec_hook

__all__ = ["SipConfigError", "load_sip_config", "parse_sip_config"]


class SipConfigError(ValueError):
    """The SIP config file is invalid; `line` and `column` are 1-based (0 when unknown)."""

    def __init__(self, source: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{source}:{line}:{column}: {message}")
        self.line = line
        self.column = column


class _SipFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: int = 1
    sip: SipConfig = SipConfig()


def load_sip_config(path: str | Path) -> SipConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SipConfigError(str(path), 0, 0, "cannot read the SIP config file "
                             f"({exc.strerror or type(exc).__name__})") from None
    return parse_sip_config(text, source=str(path))


def parse_sip_config(text: str, *, source: str = "<sip config>") -> SipConfig:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        raise SipConfigError(source, line, col, f"YAML syntax: {exc.problem or 'invalid'}") \
            from None
    except yaml.YAMLError as exc:
        raise SipConfigError(source, 0, 0, f"YAML: {type(exc).__name__}") from None
    if root is None:
        return SipConfig()
    try:
        return msgspec.convert(data, _SipFile, dec_hook=dec_hook).sip
    except msgspec.ValidationError as exc:
        message = str(exc)
        found = re.search(r" - at `(\$[^`]*)`$", message)
        what = message[: found.start()] if found else message
        node, readable = _find(root, found.group(1) if found else "$")
        unknown = re.match(r"Object contains unknown field `([^`]*)`", what)
        if unknown is not None and isinstance(node, yaml.MappingNode):
            node = next((k for k, _ in node.value if k.value == unknown.group(1)), node)
        where = f"{readable}: " if readable else ""
        raise SipConfigError(source, node.start_mark.line + 1, node.start_mark.column + 1,
                             f"{where}{what}") from None


def _find(root: yaml.Node, path: str) -> tuple[yaml.Node, str]:
    """The deepest YAML node along a msgspec path, and that path's readable form."""
    node, walked = root, ""
    for key, index in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]", path):
        child: yaml.Node | None = None
        if key and isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == key), None)
        elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            child = node.value[int(index)]
        if child is None:
            break
        node, walked = child, walked + (f".{key}" if key else f"[{index}]")
    return node, walked.lstrip(".")
