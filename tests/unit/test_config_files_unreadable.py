"""Every config loader (storage/yaml_lines.py read_text) turns an unreadable or non-UTF-8 file
into its own line-numbered error, never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from switchboard.providers.llm.flow_file import FlowFileError, load_flow
from switchboard.storage.providers_file import ProvidersFileError, load_providers
from switchboard.storage.sip_file import SipConfigError, load_sip_config
from switchboard.storage.tenants_file import TenantsFileError, load_tenants

pytestmark = pytest.mark.unit

LOADERS: list[tuple[Callable[[Path], Any], type[ValueError], str]] = [
    (load_tenants, TenantsFileError, "the tenants file"),
    (load_providers, ProvidersFileError, "the providers file"),
    (load_sip_config, SipConfigError, "the SIP config file"),
    (load_flow, FlowFileError, "the flow script"),
]


@pytest.mark.parametrize(("load", "error", "what"), LOADERS)
def test_a_file_that_is_not_utf8_gets_a_clear_error(
        tmp_path: Path, load: Callable[[Path], Any], error: type[ValueError], what: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"version: 1\n# caf\xe9 in Latin-1\n")
    with pytest.raises(error, match=f"{what} is not UTF-8 text \\(byte 16\\)"):
        load(path)


@pytest.mark.parametrize(("load", "error", "what"), LOADERS)
def test_a_missing_file_names_itself(
        tmp_path: Path, load: Callable[[Path], Any], error: type[ValueError], what: str) -> None:
    with pytest.raises(error, match=f"cannot read {what}"):
        load(tmp_path / "missing.yaml")
