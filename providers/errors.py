"""Errors of the STT, LLM, TTS and VAD providers.

    ProviderError                 base; `retryable` says whether another try (or provider) may work
    ├── ProviderUnavailable       could not reach or start the provider; retryable
    ├── ProviderStalled           no progress within the stream's deadline; retryable (fail over)
    ├── ProviderRejected          the provider refused this input or configuration; not retryable
    └── ModelNotInstalled         an embedded model or its engine is missing; not retryable

A pool retries or fails over on `retryable` errors within the turn and reports the others.
Messages name the cause and the fix. They never quote transcripts, prompts or a vendor's error
text, which may echo what the caller said (CONVENTIONS.md, personal data).
"""

from __future__ import annotations


class ProviderError(Exception):
    """A provider failed; `provider` names it (e.g. "whisper", "piper")."""

    retryable: bool = False

    def __init__(self, message: str, *, provider: str = "", retryable: bool | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        if retryable is not None:
            self.retryable = retryable


class ProviderUnavailable(ProviderError):
    retryable = True


class ProviderStalled(ProviderError):
    """Raised by `ProgressDeadline` when an owed item did not arrive in time."""

    retryable = True

    def __init__(self, message: str, *, provider: str = "", waited_ms: float = 0.0) -> None:
        super().__init__(message, provider=provider)
        self.waited_ms = waited_ms


class ProviderRejected(ProviderError):
    retryable = False


class ModelNotInstalled(ProviderError):
    retryable = False
