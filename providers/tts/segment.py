"""Cutting TTS input into sentences, and TTS output into short frames at the rate asked for.

Embedded engines synthesize a sentence at a time, so the first sentence plays while the next
is computed, and cancellation takes effect at the next sentence boundary. Output is cut into
~20 ms frames (one RTP packet's worth) so a barge-in can stop the agent within one frame.
Resampling uses libsoxr (the `soxr` wheel, LGPL-2.1): voices are 22.05 kHz, telephony wants
8 kHz and the STT 16 kHz, and a naive resampler aliases audibly.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
from switchboard.protocols.audio import SynthesisChunk

# A sentence ends at . ! ? ; : or a line break, followed by white space or the end of the text.
_SENTENCE_END = re.compile(r"[.!?;:\n]+[\"')\]]*(?=\s|$)")


def split_sentences(text: str) -> list[tuple[str, int]]:
    """The non-blank sentences of `text`, each with the offset just after it in `text`."""
    sentences: list[tuple[str, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        piece = text[start : match.end()].strip()
        if any(ch.isalnum() for ch in piece):
            sentences.append((piece, match.end()))
        start = match.end()
    tail = text[start:].strip()
    if any(ch.isalnum() for ch in tail):
        sentences.append((tail, len(text)))
    return sentences


def frames(pcm: bytes, sample_rate: int, frame_ms: float = 20.0) -> Iterator[bytes]:
    """Consecutive `frame_ms` slices of PCM16 mono (the last one may be shorter)."""
    size = max(int(sample_rate * frame_ms / 1000), 1) * 2
    for offset in range(0, len(pcm), size):
        yield pcm[offset : offset + size]


def to_pcm16(audio: np.ndarray, from_rate: int, to_rate: int) -> bytes:
    """Float audio in [-1, 1] at `from_rate` as PCM16 bytes at `to_rate` (soxr "HQ")."""
    if from_rate != to_rate:
        import soxr

        audio = soxr.resample(audio.astype(np.float32, copy=False), from_rate, to_rate, "HQ")
    pcm: bytes = (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()
    return pcm


def sentence_chunks(
    pcm: bytes, sample_rate: int, *, start: float, spoken: int, end: int, frame_ms: float = 20.0
) -> list[SynthesisChunk]:
    """One rendered sentence as frames starting at `start` seconds into the synthesis.

    Its text (up to offset `end`) counts as spoken only on its last frame; the others carry
    `spoken`, the offset reached by the sentences before it.
    """
    pieces = list(frames(pcm, sample_rate, frame_ms))
    chunks = []
    for number, piece in enumerate(pieces):
        chunks.append(SynthesisChunk(
            pcm=piece, sample_rate=sample_rate, timestamp=start,
            text_offset=end if number == len(pieces) - 1 else spoken,
        ))
        start += len(piece) / 2 / sample_rate
    return chunks
