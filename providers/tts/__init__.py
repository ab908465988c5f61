"""Text-to-speech adapters, one module each: `piper` (embedded default), `espeak` (fallback).

`segment` cuts text into sentences and audio into frames for them. Import from the modules:
engines load only when used.
"""
