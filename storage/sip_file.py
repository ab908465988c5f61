"""The SIP config file: a node's SIP gateway settings and trunks in YAML.

`load_sip_config(path)` parses and validates the file (format: configs/sip.example.yaml) into
a `protocols.sip_config.SipConfig`. A bad file raises `SipConfigError`, whose text starts with
`file:line:column` (YAML syntax errors from pyyaml's mark; schema errors mapped back from
msgspec's `$.trunks[0].proxy_port` path to the YAML node). Texts never quote values: the file
holds passwords.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import yaml
from switchboard.protocols.sip_config import SipConfig
from switchboard.protocols.tenants import dec_hook
from switchboard.storage.yaml_lines import YamlFileError, read_text, schema_error, schema_problem

__all__ = ["SipConfigError", "load_sip_config", "parse_sip_config"]


class SipConfigError(YamlFileError):
    """The SIP config file is invalid; `line` and `column` are 1-based (0 when unknown)."""


class _SipFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: int = 1
    sip: SipConfig = SipConfig()


def load_sip_config(path: str | Path) -> SipConfig:
    path = Path(path)
    text = read_text(path, SipConfigError, "the SIP config file")
    return parse_sip_config(text, source=str(path))


def parse_sip_config(text: str, *, source: str = "<sip config>") -> SipConfig:
    # Not yaml_lines.compose: this file's syntax errors quote pyyaml's problem alone, and a
    # constructor error from safe_load becomes a SipConfigError too.
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
        raise schema_error(SipConfigError, source, schema_problem(str(exc), root)) from None
