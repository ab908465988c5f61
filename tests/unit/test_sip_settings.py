"""The SIP gateway's node settings: the example file loads, mistakes name their line, the
`--sip-*` flags of `up` and `node` give the right config, and the config becomes the user
agent's (trunks with their secrets, TLS, flood limits), refusing settings that cannot work."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from switchboard.gateways.sip.settings import codec_preferences, user_agent_config
from switchboard.protocols.sip_config import FloodSettings, SipConfig, SipTrunkConfig
from switchboard.protocols.tenants import Secret
from switchboard.storage.sip_file import SipConfigError, load_sip_config, parse_sip_config
from switchboard.supervisor.sip_cli import add_sip_options, sip_config_from_args

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).parents[2] / "configs" / "sip.example.yaml"


def test_the_example_file_loads_and_hides_its_passwords() -> None:
    config = load_sip_config(EXAMPLE)
    carrier = config.trunks[0]
    assert (carrier.name, carrier.proxy, carrier.username) == ("default", "sip.carrier.example",
                                                              "switchboard")
    assert carrier.password == Secret("change-me")
    assert "change-me" not in repr(config)


@pytest.mark.parametrize(("text", "where", "what"), [
    ("sip:\n  port: many\n", "2:9", "sip.port: Expected `int`"),
    ("sip:\n  trunks:\n    - name: a\n      proxi: b\n", "4:7", "unknown field `proxi`"),
    ("sip:\n  trunks:\n    - name: a b\n", "3:13", "sip.trunks[0].name"),
    ("sip:\n  flood: {rate: 0}\n", "2:17", "sip.flood.rate"),
    ("sip: [\n", "2:1", "YAML syntax"),
])
def test_mistakes_name_their_line(text: str, where: str, what: str) -> None:
    with pytest.raises(SipConfigError) as caught:
        parse_sip_config(text, source="sip.yaml")
    assert str(caught.value).startswith(f"sip.yaml:{where}: ")
    assert what in str(caught.value)


def test_a_password_never_appears_in_an_error() -> None:
    with pytest.raises(SipConfigError) as caught:
        parse_sip_config("sip:\n  trunks:\n    - name: a\n      password: 42\n")
    assert "42" not in str(caught.value).split(": ", 1)[1]


def flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sip_options(parser)
    return parser.parse_args(list(argv))


def test_up_answers_on_5060_or_any_free_port_with_a_direct_trunk() -> None:
    config = sip_config_from_args(flags(), "up")
    assert config is not None
    assert (config.host, config.port, config.any_port_if_busy) == ("127.0.0.1", 5060, True)
    assert [t.name for t in config.trunks] == ["default"] and not config.trunks[0].proxy
    pinned = sip_config_from_args(flags("--sip-port", "5080"), "up")
    assert pinned is not None and (pinned.port, pinned.any_port_if_busy) == (5080, False)
    assert sip_config_from_args(flags("--no-sip"), "up") is None


def test_a_node_runs_sip_only_when_asked(tmp_path: Path) -> None:
    assert sip_config_from_args(flags(), "node") is None
    config = sip_config_from_args(flags("--sip-port", "0", "--sip-advertise", "203.0.113.5"),
                                  "node")
    assert config is not None
    assert (config.host, config.port, config.advertised_host) == ("0.0.0.0", 0, "203.0.113.5")
    path = tmp_path / "sip.yaml"
    path.write_text("sip:\n  port: 5070\n  trunks: [{name: carrier, proxy: 192.0.2.1}]\n")
    from_file = sip_config_from_args(flags("--sip-config", str(path), "--sip-host", "10.0.0.2"),
                                     "node")
    assert from_file is not None and (from_file.port, from_file.host) == (5070, "10.0.0.2")
    assert [t.name for t in from_file.trunks] == ["carrier"]


def test_the_config_becomes_the_user_agents() -> None:
    config = SipConfig(
        host="10.0.0.2", port=5070, advertised_host="203.0.113.5", codecs=["PCMA", "PCMU"],
        flood=FloodSettings(rate=10, burst=20, action="drop"),
        trunks=[SipTrunkConfig(name="carrier", proxy="192.0.2.1", transport="tcp",
                               username="sb", password=Secret("pw"), networks=["192.0.2.0/24"]),
                SipTrunkConfig(name="pbx", inbound_users={"pbx": Secret("pbx-pw")})])
    ua = user_agent_config(config, port=0)
    assert (ua.transport.host, ua.transport.port) == ("10.0.0.2", 0)
    assert ua.transport.advertised_host == "203.0.113.5"
    carrier, pbx = ua.trunks
    assert (carrier.proxy_host, carrier.transport, carrier.networks) == ("192.0.2.1", "TCP",
                                                                         ("192.0.2.0/24",))
    assert carrier.credentials is not None and carrier.credentials.password == "pw"
    assert pbx.inbound_users == {"pbx": "pbx-pw"} and pbx.proxy_host is None
    assert ua.flood is not None and (ua.flood.rate, ua.flood.action) == (10, "drop")
    assert [c.name for c in codec_preferences(config)] == ["PCMA", "PCMU"]
    assert user_agent_config(SipConfig(flood=FloodSettings(enabled=False))).flood is None


@pytest.mark.parametrize(("config", "fix"), [
    (SipConfig(tls_cert="cert.pem"), "tls_key"),
    (SipConfig(rtp_port_min=30000, rtp_port_max=20000), "rtp_port_max"),
    (SipConfig(udp=False, tcp=False), "udp, tcp or TLS"),
    (SipConfig(trunks=[SipTrunkConfig(name="t", password=Secret("pw"))]), "username"),
])
def test_settings_that_cannot_work_are_refused(config: SipConfig, fix: str) -> None:
    with pytest.raises(ValueError, match=fix):
        user_agent_config(config)
