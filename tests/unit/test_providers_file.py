"""The node's LLM providers: the providers file loads (the example too), each mistake names
its line, a key comes only from the environment variable the file names and never shows in a
repr, an error or a log line; with no file the vendors' key variables offer `openai` and
`anthropic`; a tenant naming a provider the node does not offer stops the node before it
connects, and the command line says why and exits 2."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import pytest
from switchboard.actors.provider_registry import ProviderRegistry
from switchboard.protocols.tenants import Secret, TenantConfig, dec_hook
from switchboard.providers.errors import ProviderRejected
from switchboard.storage.providers_file import (
    ProvidersFileError,
    load_providers,
    parse_providers,
    providers_from_environment,
)
from switchboard.supervisor import brains, cli
from switchboard.supervisor.node import Node, NodeConfig

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).parents[2] / "configs" / "providers.example.yaml"
KEY = "sk-test-0123456789abcdefSECRET"
OTHER_KEY = "sk-ant-test-9876543210SECRET"
UNREACHABLE_NATS = ["nats://127.0.0.1:1"]  # a node that got this far would fail to connect

GOOD = """\
version: 1
llm:
  - name: openai
    adapter: openai-compatible
    model: gpt-4.1-mini
    api_key_env: SB_TEST_OPENAI_KEY
  - name: local-vllm
    adapter: openai-compatible
    base_url: http://10.0.0.5:8000/v1
    model: Qwen/Qwen2.5-7B-Instruct
    first_token_ms: 3500
    extra_body: {top_k: 20}
  - name: claude
    adapter: anthropic
    model: claude-haiku-4-5
    api_key_env: SB_TEST_ANTHROPIC_KEY
    temperature: 0.4
"""
ENV = {"SB_TEST_OPENAI_KEY": KEY, "SB_TEST_ANTHROPIC_KEY": OTHER_KEY}


def error_of(text: str, environ: dict[str, str] | None = None) -> ProvidersFileError:
    with pytest.raises(ProvidersFileError) as caught:
        parse_providers(text, source="providers.yaml", environ=ENV if environ is None else environ,
                        reserved=brains.EMBEDDED)
    return caught.value


def test_a_good_file_gives_each_provider_with_its_key_from_the_environment() -> None:
    providers = parse_providers(GOOD, source="providers.yaml", environ=ENV)
    assert [(p.name, p.config.adapter, p.config.model) for p in providers] == [
        ("openai", "openai-compatible", "gpt-4.1-mini"),
        ("local-vllm", "openai-compatible", "Qwen/Qwen2.5-7B-Instruct"),
        ("claude", "anthropic", "claude-haiku-4-5")]
    assert providers[0].api_key == Secret(KEY) and providers[2].api_key == Secret(OTHER_KEY)
    assert providers[1].api_key is None  # a self-hosted server configured without a key
    assert providers[1].config.base_url == "http://10.0.0.5:8000/v1"
    assert providers[1].config.extra_body == {"top_k": 20}
    assert [p.source for p in providers] == ["providers.yaml:3", "providers.yaml:7",
                                             "providers.yaml:13"]


def test_the_example_file_loads_when_its_key_variables_are_set() -> None:
    providers = load_providers(EXAMPLE, environ={"OPENAI_API_KEY": KEY,
                                                 "ANTHROPIC_API_KEY": OTHER_KEY},
                               reserved=brains.EMBEDDED)
    assert [p.name for p in providers] == ["openai", "anthropic", "vllm"]
    assert KEY not in repr(providers) and OTHER_KEY not in str(providers)


@pytest.mark.parametrize(("text", "line", "column", "says"), [
    ("llm:\n  - name: a\n    adapter: openai-compatible\n   model: m\n", 4, 4, "YAML syntax"),
    ("llm:\n  - name: a\n    adapter: openai-compatible\n    modle: m\n", 4, 5,
     "llm[0]: Object contains unknown field `modle`"),
    ("llm:\n  - name: a\n    adapter: openai\n    model: m\n", 3, 14,
     "llm[0].adapter: Invalid enum value 'openai' (`openai-compatible` or `anthropic`)"),
    ("llm:\n  - name: a\n    adapter: anthropic\n    model: m\n    max_tokens: lots\n", 5, 17,
     "llm[0].max_tokens: Expected `int`, got `str`"),
    ("llm:\n  - name: a b\n    adapter: anthropic\n    model: m\n", 2, 11, "llm[0].name"),
    ("llm:\n  - name: a\n    adapter: anthropic\n    model: m\n", 2, 5,
     "provider `a` calls the vendor's API, which needs a key: add `api_key_env"),
    (("llm:\n  - name: llama-local\n    adapter: anthropic\n    model: m\n"
      "    base_url: http://h:1\n"), 2, 11, "`llama-local` is an embedded provider"),
    (("llm:\n  - {name: a, adapter: anthropic, model: m, base_url: 'http://h:1'}\n"
      "  - {name: a, adapter: anthropic, model: m, base_url: 'http://h:2'}\n"), 3, 12,
     "provider name `a` is already declared on line 2"),
    ("llm:\n  - name: a\n    name: b\n", 3, 5, "key `name` repeats the one on line 2"),
    ("", 1, 1, "the file is empty"),
])
def test_a_mistake_names_its_line(text: str, line: int, column: int, says: str) -> None:
    error = error_of(text)
    assert (error.line, error.column) == (line, column), str(error)
    assert str(error).startswith(f"providers.yaml:{line}:{column}: ")
    assert says in str(error)


def test_an_unset_key_variable_is_an_error_naming_the_variable_and_its_line() -> None:
    error = error_of(GOOD, environ={"SB_TEST_OPENAI_KEY": KEY, "SB_TEST_ANTHROPIC_KEY": ""})
    assert (error.line, error.column) == (16, 18)
    assert "llm[2].api_key_env: environment variable SB_TEST_ANTHROPIC_KEY is not set" \
        in str(error)
    assert KEY not in str(error)


def test_a_key_written_into_the_file_is_refused_without_quoting_it() -> None:
    text = f"llm:\n  - name: a\n    adapter: anthropic\n    model: m\n    api_key: {KEY}\n"
    error = error_of(text)
    assert error.line == 5 and "keys never go in this file" in str(error)
    assert "api_key_env" in str(error) and KEY not in str(error)
    error = error_of(text.replace("api_key:", "api_key_env:"))  # the key where its name goes
    assert "name the environment variable that holds the key" in str(error)
    assert KEY not in str(error)


def test_an_unreadable_file_says_so() -> None:
    with pytest.raises(ProvidersFileError, match="cannot read the providers file"):
        load_providers("/nonexistent/providers.yaml")


def test_with_no_file_the_vendor_key_variables_offer_openai_and_anthropic() -> None:
    assert providers_from_environment({}) == []
    assert providers_from_environment({"OPENAI_API_KEY": ""}) == []
    both = providers_from_environment({"OPENAI_API_KEY": KEY, "ANTHROPIC_API_KEY": OTHER_KEY})
    assert [(p.name, p.config.adapter, p.source) for p in both] == [
        ("openai", "openai-compatible", "$OPENAI_API_KEY"),
        ("anthropic", "anthropic", "$ANTHROPIC_API_KEY")]
    assert all(p.config.model for p in both)
    only = brains.node_llm_providers(None, {"ANTHROPIC_API_KEY": OTHER_KEY})
    assert [p.name for p in only] == ["anthropic"]


def test_a_file_replaces_the_environment_defaults(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(GOOD)
    providers = brains.node_llm_providers(path, {**ENV, "ANTHROPIC_API_KEY": OTHER_KEY})
    assert [p.name for p in providers] == ["openai", "local-vllm", "claude"]


async def test_keys_never_show_in_reprs_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    providers = [*parse_providers(GOOD, environ=ENV),
                 *providers_from_environment({"ANTHROPIC_API_KEY": OTHER_KEY})]
    registry = ProviderRegistry()
    brains.add_llm_providers(registry, providers)
    models = [await registry.llm(p.name) for p in providers]
    assert "LLM provider claude: anthropic, model claude-haiku-4-5 at the vendor's API" \
        in caplog.text
    assert "LLM provider anthropic" in caplog.text and "$ANTHROPIC_API_KEY" in caplog.text
    shown = " ".join([caplog.text, repr(providers), str(providers), repr(models),
                      str(msgspec.structs.asdict(providers[0]))])
    assert KEY not in shown and OTHER_KEY not in shown
    await registry.aclose()


def test_failover_deadlines_come_from_the_file() -> None:
    settings = brains.failover_settings(parse_providers(GOOD, environ=ENV))
    assert settings.deadline("llm", "local-vllm").first_item_ms == 3500
    assert settings.deadline("llm", "local-vllm").stall_ms == 1000  # the node's default
    assert settings.deadline("llm", "openai") == settings.deadline("llm", "anything")


# -- tenants that name providers the node does not offer ----------------------------------


def _tenant(*agents: dict[str, object]) -> TenantConfig:
    return msgspec.convert({"id": "acme", "agents": list(agents)}, TenantConfig,
                           dec_hook=dec_hook)


LLM_AGENT = {"id": "sales", "brain": "llm",
             "providers": {"llm": ["openai", "llama-local"], "stt": ["whisper"]}}
TENANTS = """\
tenants:
  - id: acme
    agents:
      - id: sales
        brain: llm
        prompt: You sell olives.
        providers: {llm: [openai, llama-local]}
"""


def test_an_agent_naming_a_provider_the_node_lacks_is_refused_with_the_fix() -> None:
    offered = brains.offered_providers([])
    with pytest.raises(brains.UnknownProviderError) as caught:
        brains.check_failover_orders([_tenant(LLM_AGENT)], offered, source="tenants.yaml")
    text = str(caught.value)
    assert "tenants.yaml names providers this node does not offer: tenant acme, agent " \
        "sales: llm `openai`." in text
    assert "llm: llama-local" in text and "--providers file" in text
    assert "Fix: set OPENAI_API_KEY (offers `openai` when there is no --providers file)" in text


def test_orders_the_node_can_serve_pass() -> None:
    offered = brains.offered_providers(providers_from_environment({"OPENAI_API_KEY": KEY}))
    brains.check_failover_orders([_tenant(
        LLM_AGENT,
        {"id": "flow", "brain": "flow", "flow": "x.yaml", "providers": {"llm": ["nope"]}},
        {"id": "echo", "brain": "echo", "providers": {"stt": ["nope"]}},
    )], offered)  # a flow agent uses no LLM, an echo agent no provider at all
    with pytest.raises(brains.UnknownProviderError, match="tts `nope`"):
        brains.check_failover_orders([_tenant({**LLM_AGENT, "providers": {
            "llm": ["openai"], "tts": ["nope"]}})], offered)


async def test_a_node_stops_before_connecting_when_a_tenant_names_an_absent_provider(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(TENANTS)
    node = Node(NodeConfig(nats_urls=UNREACHABLE_NATS, tenants_file=tenants,
                           warm_up_models=False))
    with pytest.raises(brains.UnknownProviderError, match="agent sales: llm `openai`"):
        await node.start()
    assert node.transport is None
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # now the node offers `openai`: it would connect
    node = Node(NodeConfig(nats_urls=UNREACHABLE_NATS, tenants_file=tenants,
                           providers_file=tmp_path / "missing.yaml", warm_up_models=False))
    with pytest.raises(ProvidersFileError, match="missing.yaml:0:0: cannot read"):
        await node.start()


def test_the_command_line_reports_a_bad_providers_file_and_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SB_TEST_ANTHROPIC_KEY", raising=False)
    monkeypatch.setenv("SB_TEST_OPENAI_KEY", KEY)
    providers = tmp_path / "providers.yaml"
    providers.write_text(GOOD)
    code = cli.main(["node", "--nats", UNREACHABLE_NATS[0], "--providers", str(providers)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"switchboard: {providers}:16:18: llm[2].api_key_env: environment variable " \
        "SB_TEST_ANTHROPIC_KEY is not set" in err
    assert KEY not in err
    assert cli._parser().parse_args(["up", "--providers", "p.yaml"]).providers == "p.yaml"


async def test_a_name_the_registry_lacks_fails_the_turn_with_the_fix() -> None:
    with pytest.raises(ProviderRejected, match="give the node that provider .`--providers FILE`"):
        await ProviderRegistry().llm("openai")
