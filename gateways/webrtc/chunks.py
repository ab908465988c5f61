"""`ChunkAssembler`: decoded caller audio in, 20 ms `AudioChunk`s on the stream's clock out.

Decoders hand over whatever their codec produced (Opus: 20 ms at 48 kHz, resampled to 16 kHz
by the leg; G.711: 10-30 ms; LiveKit: 10 ms), and the call actor wants 20 ms PCM16 frames at
the leg's rate stamped on one clock (protocols/media.py). The assembler keeps the remainder
between calls and stamps each chunk with the stream time of its first sample: the number of
samples delivered before it. `pad_silence` advances that clock across lost packets, so the
VAD's and the agent's times stay true to the caller's real time.
"""

from __future__ import annotations

from switchboard.protocols.audio import AudioChunk

MAX_GAP_SECONDS = 1.0  # a longer gap is a pause of the sender, not a loss: no padding


class ChunkAssembler:
    def __init__(self, sample_rate: int = 16000, *, frame_ms: int = 20) -> None:
        self.sample_rate = sample_rate
        self.frame_bytes = sample_rate * frame_ms // 1000 * 2
        self._buffer = bytearray()
        self._samples = 0  # samples already stamped into chunks

    @property
    def position(self) -> float:
        """Stream time just after the last chunk handed out."""
        return self._samples / self.sample_rate

    def push(self, pcm: bytes) -> list[AudioChunk]:
        """Add PCM16 mono at `sample_rate`; return the whole 20 ms chunks now available."""
        self._buffer += pcm
        size = self.frame_bytes
        if len(self._buffer) < size:
            return []
        chunks = []
        whole = len(self._buffer) // size
        for i in range(whole):
            chunks.append(AudioChunk(pcm=bytes(self._buffer[i * size:(i + 1) * size]),
                                     sample_rate=self.sample_rate,
                                     timestamp=self._samples / self.sample_rate))
            self._samples += size // 2
        del self._buffer[:whole * size]
        return chunks

    def pad_silence(self, seconds: float) -> list[AudioChunk]:
        """Stand in for `seconds` of lost audio (up to MAX_GAP_SECONDS) with silence."""
        if seconds <= 0 or seconds > MAX_GAP_SECONDS:
            return []
        return self.push(bytes(2 * int(seconds * self.sample_rate)))
