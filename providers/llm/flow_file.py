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

from pathlib import Path

import msgspec
import yaml
from switchboard.protocols.flow import FlowScript
from switchboard.providers.llm.flow_engine import check_script
from switchboard.storage.yaml_lines import (
    YamlFileError,
    compose,
    error_at,
    read_text,
    refuse_repeated_keys,
    schema_error,
    schema_problem,
)


class FlowFileError(YamlFileError):
    """The flow script is invalid; `line` and `column` are 1-based (0 when unknown)."""


def load_flow(path: str | Path) -> FlowScript:
    path = Path(path)
    text = read_text(path, FlowFileError, "the flow script")
    return parse_flow(text, source=str(path))


def parse_flow(text: str, *, source: str = "<flow>") -> FlowScript:
    """Validate a YAML script; the script may also sit under a top-level `flow:` key."""
    root = compose(text, source, FlowFileError)
    if root is None:
        raise FlowFileError(source, 1, 1, "the file is empty: a flow script needs `greeting:` "
                            "and `intents:` (see configs/flows/demo.yaml)")
    refuse_repeated_keys(root, source, FlowFileError)
    data = yaml.SafeLoader(text).get_single_data()
    prefix = "$"
    if isinstance(data, dict) and set(data) == {"flow"}:
        data, prefix = data["flow"], "$.flow"
    try:
        script = msgspec.convert(data, FlowScript)
    except msgspec.ValidationError as exc:
        raise _schema_error(str(exc), root, source, prefix) from None
    for path, message in check_script(script):
        raise error_at(FlowFileError, root, source, prefix + path[1:], message, top=_TOP)
    return script


_TOP = "(top level)"  # the readable path of an error at the script's root


def _schema_error(message: str, root: yaml.Node, source: str, prefix: str) -> FlowFileError:
    problem = schema_problem(message, root, prefix=prefix, top=_TOP)
    what = problem.what
    # YAML reads `1` as a number, `#` as a comment, `*` as an alias
    if problem.readable.endswith(".dtmf"):
        what += '; write the keys (0-9, *, A-D, or a lone #) in quotes, e.g. dtmf: "1"'
    return schema_error(FlowFileError, source, problem, what)
