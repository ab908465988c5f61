"""Speech-to-text adapters, one module each: `whisper` (embedded default, Whisper tiny.en).

Import from the module (`switchboard.providers.stt.whisper`): engines load only when used.
"""
