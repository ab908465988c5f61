"""STT, LLM, TTS and VAD providers behind small streaming interfaces.

`base` holds the interfaces, `errors` the error tree, `deadline` the progress deadline that
turns a silent stall into an error, and `fakes` the deterministic test doubles. Adapters live
in the sub-packages `stt`, `llm`, `tts` and `vad`, one module per provider; import them from
their modules, so loading one engine never imports another.
"""

from switchboard.providers.base import LanguageModel, SpeechToText, TextToSpeech, Vad
from switchboard.providers.deadline import ProgressDeadline
from switchboard.providers.errors import (
    ModelNotInstalled,
    ProviderError,
    ProviderRejected,
    ProviderStalled,
    ProviderUnavailable,
)

__all__ = [
    "LanguageModel",
    "ModelNotInstalled",
    "ProgressDeadline",
    "ProviderError",
    "ProviderRejected",
    "ProviderStalled",
    "ProviderUnavailable",
    "SpeechToText",
    "TextToSpeech",
    "Vad",
]
