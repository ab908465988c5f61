"""The tenants file: the shipped example loads and routes the demo number; every kind of
mistake is reported with the line (and column) where it is, and never quotes a phone number."""

from __future__ import annotations

from pathlib import Path

import pytest
from switchboard.protocols.tenants import Secret
from switchboard.storage.tenants_file import TenantsFileError, load_tenants, parse_tenants

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).parents[2] / "configs" / "tenants.example.yaml"

GOOD = """\
tenants:
  - id: acme
    numbers:
      - number: "+15550200"
        agent: front
    limits:
      max_concurrent_calls: 2
    agents:
      - id: front
        brain: echo
  - id: globex
    numbers:
      - number: "+15550300"
        agent: desk
    agents:
      - id: desk
"""


def error_of(text: str, **kwargs: object) -> TenantsFileError:
    with pytest.raises(TenantsFileError) as caught:
        parse_tenants(text, source="tenants.yaml", **kwargs)  # type: ignore[arg-type]
    return caught.value


def test_the_example_file_declares_the_demo_tenant_agent_and_number() -> None:
    directory = load_tenants(EXAMPLE, brains={"echo", "flow"})
    route = directory.route("+15550100")
    assert route is not None and (route.tenant_id, route.agent_id) == ("demo", "demo")
    tenant = directory.tenant("demo")
    assert tenant is not None
    agent = tenant.agent("demo")
    assert agent is not None and agent.brain == "flow"
    assert Path(agent.flow).is_file()  # resolved against the file's folder
    assert agent.providers.stt == ["whisper"] and agent.providers.tts[0] == "piper"
    echo_route = directory.route("+15550101")
    assert echo_route is not None and echo_route.agent_id == "echo"
    echo = tenant.agent("echo")
    assert echo is not None and echo.brain == "echo" and echo.greeting
    assert Path(echo.greeting_audio).is_file()
    assert tenant.limits.max_concurrent_calls > 0 and tenant.limits.calls_per_minute > 0


def test_a_flow_agent_needs_an_existing_script(tmp_path: Path) -> None:
    text = "tenants:\n  - id: acme\n    agents:\n      - id: bot\n        brain: flow\n"
    assert error_of(text).line == 5
    missing = text + "        flow: nowhere.yaml\n"
    error = error_of(missing, base_dir=tmp_path)
    assert error.line == 6 and "flow script does not exist" in str(error)


def test_tool_names_must_not_repeat() -> None:
    text = ("tenants:\n  - id: acme\n    agents:\n      - id: bot\n        tools:\n"
            "          - {name: transfer, description: d, url: 'http://x/y'}\n")
    error = error_of(text)
    assert error.line == 6 and "already used" in str(error)


def test_numbers_route_in_any_common_spelling() -> None:
    directory = load_tenants(EXAMPLE)
    for spelling in ("+15550100", "15550100", "tel:+1-555-0100", "sip:+15550100@host;user=phone"):
        route = directory.route(spelling)
        assert route is not None and route.tenant_id == "demo", spelling
    assert directory.route("+15559999") is None


def test_the_web_token_secret_never_shows_in_a_printed_config() -> None:
    tenant = load_tenants(EXAMPLE).tenant("demo")
    assert tenant is not None and isinstance(tenant.web_token_secret, Secret)
    secret = tenant.web_token_secret.reveal()
    for text in (repr(tenant), str(tenant), f"{tenant.web_token_secret}", repr([tenant])):
        assert secret not in text
    assert tenant.web_token_secret == Secret(secret)


def test_a_valid_file_gives_every_tenant() -> None:
    tenants = parse_tenants(GOOD)
    assert [t.id for t in tenants] == ["acme", "globex"]
    assert tenants[0].limits.max_concurrent_calls == 2
    assert tenants[1].agents[0].brain == "echo"  # the default brain


def test_a_yaml_syntax_error_names_its_line() -> None:
    error = error_of("tenants:\n  - id: acme\n    numbers: [\n      - x\n")
    assert error.line == 4
    assert str(error).startswith("tenants.yaml:4:")


def test_a_wrong_type_deep_in_the_file_names_the_line_of_that_value() -> None:
    text = GOOD.replace("max_concurrent_calls: 2", "max_concurrent_calls: lots")
    error = error_of(text)
    assert (error.line, error.column) == (7, 29)
    assert "tenants[0].limits.max_concurrent_calls" in str(error)
    assert "Expected `int`" in str(error)


def test_an_unknown_key_names_the_line_of_the_key() -> None:
    error = error_of(GOOD.replace("        brain: echo", "        brian: echo"))
    assert error.line == 10
    assert "unknown field `brian`" in str(error)


def test_a_missing_required_field_names_the_object() -> None:
    error = error_of(GOOD.replace("      - id: desk\n", "      - name: Desk\n"))
    assert error.line == 16
    assert "tenants[1].agents[0]" in str(error) and "`id`" in str(error)


def test_an_unquoted_number_gets_a_hint_and_no_number_is_quoted() -> None:
    error = error_of(GOOD.replace('"+15550300"', "+15550300"))
    assert error.line == 13
    assert "quote phone numbers" in str(error)
    assert "15550300" not in str(error)


def test_a_number_not_in_e164_is_refused_at_its_line() -> None:
    error = error_of(GOOD.replace('"+15550300"', '"555-0300"'))
    assert error.line == 13 and "E.164" in str(error)
    assert "555-0300" not in str(error)


def test_a_number_in_two_tenants_names_both_places() -> None:
    error = error_of(GOOD.replace('"+15550300"', '"+15550200"'))
    assert error.line == 13
    assert "tenants[0].numbers[0]" in str(error) and "line 4" in str(error)
    assert "15550200" not in str(error)


def test_a_number_routed_to_an_unknown_agent_is_an_error_at_that_line() -> None:
    error = error_of(GOOD.replace("        agent: desk", "        agent: nobody"))
    assert error.line == 14 and "nobody" in str(error)


def test_duplicate_tenant_ids_name_both_lines() -> None:
    error = error_of(GOOD.replace("  - id: globex", "  - id: acme"))
    assert error.line == 11 and "line 2" in str(error)


def test_a_repeated_key_is_an_error_rather_than_the_last_one_winning() -> None:
    error = error_of(GOOD.replace("    limits:\n", "    limits:\n      calls_per_minute: 5\n"
                                                   "      calls_per_minute: 6\n"))
    assert error.line == 8 and "line 7" in str(error)


def test_a_brain_this_node_cannot_run_is_an_error_at_its_line() -> None:
    error = error_of(GOOD.replace("brain: echo", "brain: llm"), brains={"echo"})
    assert error.line == 10 and "llm" in str(error)


def test_a_missing_greeting_wav_is_an_error_at_its_line(tmp_path: Path) -> None:
    text = GOOD.replace("        brain: echo", "        greeting_audio: nothing.wav")
    error = error_of(text, base_dir=tmp_path)
    assert error.line == 10 and "greeting WAV" in str(error)


def test_an_empty_or_unreadable_file_says_so(tmp_path: Path) -> None:
    assert error_of("").line == 1
    with pytest.raises(TenantsFileError, match="cannot read"):
        load_tenants(tmp_path / "absent.yaml")


def test_an_llm_agent_must_name_its_models() -> None:
    text = "tenants:\n  - id: acme\n    agents:\n      - id: bot\n        brain: llm\n"
    error = error_of(text)
    assert error.line == 5 and "providers" in str(error)
    assert parse_tenants(text + "        providers: {llm: [openai]}\n")[0].agents[0].brain == "llm"
