"""LLM adapters, one module each (cloud, OpenAI-compatible, local GGUF, the flow agent).

None yet: the scripted `providers.fakes.FakeLanguageModel` implements the interface for tests.
"""
