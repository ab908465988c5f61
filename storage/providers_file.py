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
from switchboard.storage.yaml_lines import (
    YamlFileError,
    compose,
    error_at,
    line_of,
    read_text,
    refuse_repeated_keys,
    schema_error,
    schema_problem,
)

__all__ = ["ENV_DEFAULTS", "ProvidersFileError", "load_providers", "parse_providers",
           "providers_from_environment"]

# (name, adapter, key variable, model) a node offers with no file when the variable is set.
# Small, fast models: a spoken turn cannot wait for a large one's first token.
ENV_DEFAULTS: tuple[tuple[str, LlmAdapter, str, str], ...] = (
    ("openai", "openai-compatible", "OPENAI_API_KEY", "gpt-4.1-mini"),
    ("anthropic", "anthropic", "ANTHROPIC_API_KEY", "claude-haiku-4-5"),
)


class ProvidersFileError(YamlFileError):
    """The providers file is invalid; `line` and `column` are 1-based (0 when unknown)."""


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
    text = read_text(path, ProvidersFileError, "the providers file")
    return parse_providers(text, source=str(path), environ=environ, reserved=reserved)


def parse_providers(text: str, *, source: str = "<providers>",
                    environ: Mapping[str, str] | None = None,
                    reserved: Collection[str] = ()) -> list[LlmProvider]:
    root = compose(text, source, ProvidersFileError)
    if root is None:
        raise ProvidersFileError(source, 1, 1, "the file is empty: declare `llm:` (see "
                                 "configs/providers.example.yaml)")
    refuse_repeated_keys(root, source, ProvidersFileError)
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
        seen[config.name] = line_of(root, f"{here}.name")
        out.append(_resolve_key(config, root, source, here, env))
    return out


def _resolve_key(config: LlmProviderConfig, root: yaml.Node, source: str, here: str,
                 env: Mapping[str, str]) -> LlmProvider:
    line = line_of(root, here)
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


# -- YAML nodes and lines (shared: storage/yaml_lines.py) --------------------------------------


_KEY_FIELDS = ("api_key", "key", "token", "secret", "password")
_UNKNOWN = re.compile(r"Object contains unknown field `([^`]*)`")


def _schema_error(message: str, root: yaml.Node, source: str) -> ProvidersFileError:
    problem = schema_problem(message, root)
    what, path = problem.what, problem.path
    unknown = _UNKNOWN.match(what)
    if unknown and unknown.group(1) in _KEY_FIELDS:
        what = (f"`{unknown.group(1)}`: keys never go in this file; put the key in an "
                "environment variable and name it with `api_key_env: <VARIABLE>`")
    if path.endswith(".api_key_env") and "regex" in what:
        what += " (name the environment variable that holds the key, not the key itself)"
    elif path.endswith(".adapter"):
        what += " (`openai-compatible` or `anthropic`)"
    return schema_error(ProvidersFileError, source, problem, what)


def _at(root: yaml.Node, source: str, path: str, message: str) -> ProvidersFileError:
    return error_at(ProvidersFileError, root, source, path, message)
