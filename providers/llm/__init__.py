"""LLM adapters behind `providers.base.LanguageModel`, one module each:

- `flow`: the *flow agent*, the demo agent's default brain. Not a model: it follows the
  tenant's script (protocols/flow.py; `flow_file` loads YAML, `flow_engine` is the state
  machine, `flow_match` the fuzzy intent matcher, `flow_slots` and `flow_when` the slot
  extractors).
- `openai_compat`: OpenAI Chat Completions and compatible servers (vLLM, TGI, ...), via the
  official `openai` SDK.
- `anthropic_messages`: the Anthropic Messages API, via the official `anthropic` SDK.
- `llama_local`: a GGUF model in-process through llama-cpp-python, the optional
  `[local-llm]` extra.

`api_errors` maps HTTP failures to `ProviderError(retryable=...)`; `tool_calls` assembles
streamed tool-call fragments. Import from the modules, so that loading one engine never
imports another (the package itself imports none of them).
"""

__all__: list[str] = []
