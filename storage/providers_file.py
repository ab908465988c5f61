"""The providers file: the cloud and self-hosted LLMs a node offers, in YAML, keys from the env.

`load_providers(path)` parses and validates the file (format: configs/providers.example.yaml)
into `protocols.providers_config.LlmProvider`s, each with its key read from the environment
variable its `api_key_env` names. `providers_from_environment()` is what a node offers with
no file: `openai` when OPENAI_API_KEY is set, `anthropic` when ANTHROPIC_API_KEY is.

A bad file raises `ProvidersFileError`, whose text starts with `file:line:column`: YAML syntax
(pyyaml's mark), schema errors (msgspec's `$.llm[0].model` path mapped back to the YAML
node), repeated keys and names, a name an embedded provider already has, a vendor API without
`api_key_env`, a key written into the file, and an environment variable that is not set.
Texts name keys, provider and variable names, never values: the key is not ours to print.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path

import msgspec
import yaml
from switchboard.protocols.providers_config import (
    LlmAdapter,
    LlmProvider,
    LlmProviderConfig,
    ProvidersConfig,
)
from switchboard.protocols.tenants import Secret

__all__ = ["ENV_DEFAULTS", "ProvidersFileError", "load_providers", "parse_providers",
           "providers_from_environment"]

# (name, adapter, key variable, model) a node offers with no file when the variable is set.
# Small, fast models: a spoken turn cannot wait for a large one's first token.
ENV_DEFAULTS: tuple[tuple[str, LlmAdapter, str, str], ...] = (
    ("openai", "openai-compatible", "OPENAI_API_KEY", "gpt-4.1-mini"),
    ("anthropic", "anthropic", "ANTHROPIC_API_KEY", "claude-haiku-4-5"),
)


class ProvidersFileError(ValueError):
    """The providers file is invalid; `line` and `column` are 1-based (0 when unknown)."""

    def __init__(self, source: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{source}:{line}:{column}: {message}")
        self.source = source
        self.line = line
        self.column = column


def providers_from_environment(environ: Mapping[str, str] | None = None) -> list[LlmProvider]:
    """The vendors whose key variable is set (`ENV_DEFAULTS`), with their default models."""
    env = os.environ if environ is None else environ
    return [LlmProvider(config=LlmProviderConfig(name=name, adapter=adapter, model=model,
                                                 api_key_env=variable),
                        api_key=Secret(env[variable]), source=f"${variable}")
            for name, adapter, variable, model in ENV_DEFAULTS if env.get(variable)]


def load_providers(path: str | Path, *, environ: Mapping[str, str] | None = None,
                   reserved: Collection[str] = ()) -> list[LlmProvider]:
    """Read and validate the file; `reserved`: names the node's embedded providers have."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProvidersFileError(str(path), 0, 0, "cannot read the providers file "
                                 f"({exc.strerror or type(exc).__name__})") from None
    return parse_providers(text, source=str(path), environ=environ, reserved=reserved)


def parse_providers(text: str, *, source: str = "<providers>",
                    environ: Mapping[str, str] | None = None,
                    reserved: Collection[str] = ()) -> list[LlmProvider]:
    root = _compose(text, source)
    if root is None:
        raise ProvidersFileError(source, 1, 1, "the file is empty: declare `llm:` (see "
                                 "configs/providers.example.yaml)")
    _check_duplicate_keys(root, source)
    try:
        parsed = msgspec.convert(yaml.SafeLoader(text).get_single_data(), ProvidersConfig)
    except msgspec.ValidationError as exc:
        raise _schema_error(str(exc), root, source) from None
    env = os.environ if environ is None else environ
    out: list[LlmProvider] = []
    seen: dict[str, int] = {}
    for index, config in enumerate(parsed.llm):
        here = f"$.llm[{index}]"
        if config.name in reserved:
            raise _at(root, source, f"{here}.name", f"`{config.name}` is an embedded provider "
                      "of the node; choose another name")
        if config.name in seen:
            raise _at(root, source, f"{here}.name", f"provider name `{config.name}` is "
                      f"already declared on line {seen[config.name]}; names must be unique")
        seen[config.name] = _pos(_find(root, f"{here}.name")[0])[0]
        out.append(_resolve_key(config, root, source, here, env))
    return out


def _resolve_key(config: LlmProviderConfig, root: yaml.Node, source: str, here: str,
                 env: Mapping[str, str]) -> LlmProvider:
    line = _pos(_find(root, here)[0])[0]
    if config.api_key_env is None:
        if config.base_url is None:
            raise _at(root, source, here, f"provider `{config.name}` calls the vendor's API, "
                      "which needs a key: add `api_key_env: <VARIABLE>` naming the environment "
                      "variable that holds it (or set `base_url` for a self-hosted server)")
        return LlmProvider(config=config, source=f"{source}:{line}")
    value = env.get(config.api_key_env, "")
    if not value:
        raise _at(root, source, f"{here}.api_key_env", f"environment variable "
                  f"{config.api_key_env} is not set (or is empty); export it where the node "
                  f"starts, or remove provider `{config.name}`")
    return LlmProvider(config=config, api_key=Secret(value), source=f"{source}:{line}")


# -- YAML nodes and lines (as in tenants_file.py) ------------------------------------------------


def _compose(text: str, source: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise ProvidersFileError(source, line, col, f"YAML syntax: {problem}") from None
    except yaml.YAMLError as exc:
        raise ProvidersFileError(source, 0, 0, f"YAML: {type(exc).__name__}") from None


def _check_duplicate_keys(node: yaml.Node, source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, yaml.Node] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    first = seen[key.value].start_mark.line + 1
                    raise ProvidersFileError(source, *_pos(key), f"key `{key.value}` repeats "
                                             f"the one on line {first}; keep one")
                seen[key.value] = key
            _check_duplicate_keys(value, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicate_keys(item, source)


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def _find(root: yaml.Node, path: str) -> tuple[yaml.Node, str]:
    """The deepest node along a msgspec path (`$.llm[0].model`), and its readable form."""
    node, walked = root, []
    for match in _STEP.finditer(path):
        key, index = match.group(1), match.group(2)
        child = _child(node, key, int(index) if index is not None else None)
        if child is None:
            break
        node = child
        walked.append(f".{key}" if key is not None else f"[{index}]")
    return node, "".join(walked).lstrip(".")


def _child(node: yaml.Node, key: str | None, index: int | None) -> yaml.Node | None:
    if key is not None and isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    if index is not None and isinstance(node, yaml.SequenceNode) and index < len(node.value):
        return node.value[index]
    return None


_AT = re.compile(r"^(?P<what>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_KEY_FIELDS = ("api_key", "key", "token", "secret", "password")


def _schema_error(message: str, root: yaml.Node, source: str) -> ProvidersFileError:
    match = _AT.match(message)
    what = match.group("what") if match else message
    path = (match.group("path") if match else None) or "$"
    node, readable = _find(root, path)
    unknown = re.match(r"Object contains unknown field `([^`]*)`", what)
    if unknown:
        for key, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if isinstance(key, yaml.ScalarNode) and key.value == unknown.group(1):
                node = key
        if unknown.group(1) in _KEY_FIELDS:
            what = (f"`{unknown.group(1)}`: keys never go in this file; put the key in an "
                    "environment variable and name it with `api_key_env: <VARIABLE>`")
    if path.endswith(".api_key_env") and "regex" in what:
        what += " (name the environment variable that holds the key, not the key itself)"
    elif path.endswith(".adapter"):
        what += " (`openai-compatible` or `anthropic`)"
    where = f"{readable}: " if readable else ""
    return ProvidersFileError(source, *_pos(node), f"{where}{what}")


def _at(root: yaml.Node, source: str, path: str, message: str) -> ProvidersFileError:
    node, readable = _find(root, path)
    return ProvidersFileError(source, *_pos(node), f"{readable}: {message}")

