"""The language models a node offers besides its embedded ones: cloud and self-hosted LLMs.

Node configuration, not tenant configuration, like `sip_config`: a tenant's agent names
providers in its failover order (`providers: {llm: [openai, llama-local]}`), and every name
must be one the node offers: an embedded provider (supervisor/brains.py) or an `LlmProvider`
declared here. The file (`configs/providers.example.yaml`, loaded by
`storage.providers_file`) holds no keys: `api_key_env` names the environment variable that
does, read once when the node starts. Keys live in `Secret`s, so these structs can be logged
whole.

Two adapters (providers/llm/): `openai-compatible` speaks OpenAI's Chat Completions (OpenAI,
vLLM, TGI, llama.cpp's server, LiteLLM), `anthropic` the Anthropic Messages API.

Schema evolution follows msgspec's rules (new fields have defaults, types never change);
unknown keys are refused so a typo is an error, not a default.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from switchboard.protocols.tenants import Id, Secret

LlmAdapter = Literal["openai-compatible", "anthropic"]
EnvName = Annotated[str, msgspec.Meta(
    pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
    description="the name of an environment variable (letters, digits, _), not the key")]
BaseUrl = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s]+$",
                                      description="an http:// or https:// URL")]
Millis = Annotated[float, msgspec.Meta(gt=0)]


class LlmProviderConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One language model the node offers, under the name agents use in their failover order.

    `base_url` None is the vendor's own API (which needs `api_key_env`); a self-hosted server
    may need no key. `first_token_ms` / `stall_ms` (None: the node's LLM defaults) are the
    progress deadline of this provider's streams: raise `first_token_ms` for models that
    think before they speak. `extra_body` passes request fields the SDK does not know (e.g.
    vLLM's `top_k`).
    """

    name: Id
    adapter: LlmAdapter
    model: Annotated[str, msgspec.Meta(min_length=1)]
    base_url: BaseUrl | None = None
    api_key_env: EnvName | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 512
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    first_token_ms: Millis | None = None
    stall_ms: Millis | None = None
    extra_body: dict[str, Any] = {}
    v: int = 1


class ProvidersConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The providers file: its format `version` (only 1 exists) and the LLMs it declares."""

    version: int = 1
    llm: list[LlmProviderConfig] = []


class LlmProvider(msgspec.Struct, frozen=True, kw_only=True):
    """A declared LLM with its key read from the environment: what the node registers.

    `source` says where it was declared (`providers.yaml:7`, `$OPENAI_API_KEY`), for logs.
    Never encoded: it exists only in the node's memory.
    """

    config: LlmProviderConfig
    api_key: Secret | None = None
    source: str = ""

    @property
    def name(self) -> str:
        return self.config.name
