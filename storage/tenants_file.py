"""The tenants file: tenants, numbers, limits and agents declared in YAML, until the tenant API.

`load_tenants(path)` parses and validates the file (format: configs/tenants.example.yaml) and
returns a `StaticTenantDirectory`, the node-local `TenantDirectory` every node builds from the
same file. A bad file raises `TenantsFileError`, whose text starts with `file:line:column`:

- YAML syntax errors carry pyyaml's mark;
- schema errors (msgspec, e.g. `$.tenants[0].limits.max_concurrent_calls`) are mapped back to
  the YAML node at that path, found in the composed node tree;
- cross-field rules (unique ids, a number's agent exists, a number belongs to one tenant only,
  the brain is available, the greeting WAV and the flow script exist, a `flow` agent names
  its script, an `llm` agent its models, tool names are unique) name every place involved.

Error texts quote paths and line numbers, never the values: a number is a phone number.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path

import msgspec
import yaml
from switchboard.protocols.tenants import (
    AgentConfig,
    Route,
    TenantConfig,
    dec_hook,
    normalize_number,
)
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


class TenantsFileError(YamlFileError):
    """The tenants file is invalid; `line` and `column` are 1-based (0 when unknown)."""


class TenantsFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: int = 1
    tenants: list[TenantConfig] = []


class StaticTenantDirectory:
    """A `TenantDirectory` over a fixed list of tenants (from the file, or built in tests)."""

    def __init__(self, tenants: Iterable[TenantConfig]) -> None:
        self._tenants: dict[str, TenantConfig] = {}
        self._routes: dict[str, Route] = {}
        for tenant in tenants:
            if tenant.id in self._tenants:
                raise ValueError(f"tenant id {tenant.id!r} appears twice")
            self._tenants[tenant.id] = tenant
            for route in tenant.numbers:
                if route.number in self._routes:
                    raise ValueError(f"tenant {tenant.id!r} declares a number another tenant "
                                     "(or itself) already has")
                self._routes[route.number] = Route(tenant_id=tenant.id, agent_id=route.agent)

    def tenant(self, tenant_id: str) -> TenantConfig | None:
        return self._tenants.get(tenant_id)

    def route(self, number: str) -> Route | None:
        return self._routes.get(normalize_number(number))

    def tenants(self) -> list[TenantConfig]:
        return list(self._tenants.values())


def load_tenants(path: str | Path, *, brains: Collection[str] | None = None
                 ) -> StaticTenantDirectory:
    """Read, validate and index the tenants file. `brains`: the agent brains this node can
    run (None: do not check)."""
    path = Path(path)
    text = read_text(path, TenantsFileError, "the tenants file")
    tenants = parse_tenants(text, source=str(path), base_dir=path.parent, brains=brains)
    return StaticTenantDirectory(tenants)


def parse_tenants(text: str, *, source: str = "<tenants>", base_dir: Path | None = None,
                  brains: Collection[str] | None = None) -> list[TenantConfig]:
    """Validate the YAML text; relative `greeting_audio` and `flow` paths resolve against
    `base_dir`."""
    root = compose(text, source, TenantsFileError)
    if root is None:
        raise TenantsFileError(source, 1, 1, "the file is empty: declare `tenants:` "
                               "(see configs/tenants.example.yaml)")
    refuse_repeated_keys(root, source, TenantsFileError)
    data = yaml.SafeLoader(text).get_single_data()
    try:
        parsed = msgspec.convert(data, TenantsFile, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        raise _schema_error(str(exc), root, source) from None
    return _check_rules(parsed, root, source, base_dir, brains)


# -- YAML nodes and lines (shared: storage/yaml_lines.py) --------------------------------------


def _schema_error(message: str, root: yaml.Node, source: str) -> TenantsFileError:
    problem = schema_problem(message, root)
    what, path = problem.what, problem.path
    hint = ""
    if "got `int`" in what and path.endswith(".number"):
        hint = ' (quote phone numbers: YAML reads +15550100 as an integer; write "+15550100")'
    elif "matching regex" in what and path.endswith(".number"):
        hint = ' (E.164: + then country code and number, e.g. "+15550100")'
    return schema_error(TenantsFileError, source, problem, f"{what}{hint}")


def _at(root: yaml.Node, source: str, path: str, message: str) -> TenantsFileError:
    return error_at(TenantsFileError, root, source, path, message)


# -- rules across fields -----------------------------------------------------------------------


def _check_rules(parsed: TenantsFile, root: yaml.Node, source: str, base_dir: Path | None,
                 brains: Collection[str] | None) -> list[TenantConfig]:
    tenant_at: dict[str, str] = {}
    number_at: dict[str, str] = {}
    out: list[TenantConfig] = []
    for t, tenant in enumerate(parsed.tenants):
        here = f"$.tenants[{t}]"
        if tenant.id in tenant_at:
            raise _at(root, source, f"{here}.id", f"tenant id `{tenant.id}` is already used by "
                      f"{tenant_at[tenant.id][2:]} (line {line_of(root, tenant_at[tenant.id])})")
        tenant_at[tenant.id] = here
        agents: list[AgentConfig] = []
        agent_at: dict[str, str] = {}
        for a, agent in enumerate(tenant.agents):
            apath = f"{here}.agents[{a}]"
            if agent.id in agent_at:
                raise _at(root, source, f"{apath}.id", f"agent id `{agent.id}` is already used "
                          f"in this tenant (line {line_of(root, agent_at[agent.id])})")
            agent_at[agent.id] = apath
            if brains is not None and agent.brain not in brains:
                raise _at(root, source, f"{apath}.brain", f"brain `{agent.brain}` is not "
                          f"available on this node (available: {', '.join(sorted(brains))})")
            _check_tools(agent, root, source, apath)
            agent = _resolve_audio(agent, root, source, apath, base_dir)
            agents.append(_resolve_flow(agent, root, source, apath, base_dir))
        for n, route in enumerate(tenant.numbers):
            npath = f"{here}.numbers[{n}]"
            if route.agent not in agent_at:
                raise _at(root, source, f"{npath}.agent", f"agent `{route.agent}` is not one of "
                          "this tenant's agents")
            if route.number in number_at:
                first = number_at[route.number]
                raise _at(root, source, f"{npath}.number", "this number is already declared at "
                          f"{first[2:]} (line {line_of(root, first + '.number')}); a number "
                          "routes to exactly one tenant and agent")
            number_at[route.number] = npath
        out.append(msgspec.structs.replace(tenant, agents=agents))
    return out


def _resolve_audio(agent: AgentConfig, root: yaml.Node, source: str, apath: str,
                   base_dir: Path | None) -> AgentConfig:
    if not agent.greeting_audio:
        return agent
    audio = Path(agent.greeting_audio)
    if not audio.is_absolute() and base_dir is not None:
        audio = base_dir / audio
    if not audio.is_file():
        raise _at(root, source, f"{apath}.greeting_audio", "the greeting WAV does not exist "
                  "(a relative path is read from the tenants file's folder)")
    return msgspec.structs.replace(agent, greeting_audio=str(audio.resolve()))


def _resolve_flow(agent: AgentConfig, root: yaml.Node, source: str, apath: str,
                  base_dir: Path | None) -> AgentConfig:
    if not agent.flow:
        if agent.brain == "flow":
            raise _at(root, source, f"{apath}.brain", "brain `flow` needs the agent's `flow` "
                      "script (e.g. flow: flows/demo.yaml)")
        return agent
    flow = Path(agent.flow)
    if not flow.is_absolute() and base_dir is not None:
        flow = base_dir / flow
    if not flow.is_file():
        raise _at(root, source, f"{apath}.flow", "the flow script does not exist (a relative "
                  "path is read from the tenants file's folder)")
    return msgspec.structs.replace(agent, flow=str(flow.resolve()))


def _check_tools(agent: AgentConfig, root: yaml.Node, source: str, apath: str) -> None:
    if agent.brain == "llm" and not agent.providers.llm:
        raise _at(root, source, f"{apath}.brain", "brain `llm` needs the language models to "
                  "use: `providers: {llm: [name, ...]}` (names the node's providers know)")
    seen: set[str] = set(agent.builtin_tools)
    for t, tool in enumerate(agent.tools):
        if tool.name in seen:
            raise _at(root, source, f"{apath}.tools[{t}].name", f"tool name `{tool.name}` is "
                      "already used by a built-in tool or another tool of this agent")
        seen.add(tool.name)
