"""Audio codecs of the RTP leg: G.711 µ-law/A-law, G.722, and 8 kHz ↔ 16 kHz resampling.

Everything works on whole 20 ms frames of numpy int16 PCM and never loops per sample in
Python: G.711 is two lookup tables (65,536 entries to encode, 256 to decode) built once at
import from the ITU G.711 segment rules, bit-exact with CPython's `audioop`; G.722 is the
`G722` C extension (sippy/libg722, bit-exact ITU G.722 at 64 kbit/s); resampling is a
polyphase FIR in numpy with its state carried across frames, so one frame in gives one frame
out with a fixed 2 ms delay (soxr's block-based streams emit bursts every 60-100 ms, which a
20 ms pipeline cannot use).

`AudioEncoder`/`AudioDecoder` bundle codec and resampler for the PCM rate the call actor
wants (8 kHz or 16 kHz). G.722 can run its 8 kHz mode directly, with no resampler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import G722 as _g722  # the PyPI distribution `G722` (sippy/libg722)
import numpy as np
import numpy.typing as npt

__all__ = [
    "CODECS",
    "G722",
    "PCMA",
    "PCMU",
    "AudioDecoder",
    "AudioEncoder",
    "Codec",
    "Pcm",
    "Resampler",
    "alaw_decode",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]

Pcm = npt.NDArray[np.int16]
FRAME_MS = 20


@dataclass(frozen=True, slots=True)
class Codec:
    """What SDP and RTP need to know about a codec (RFC 3551 §6, table 4)."""

    name: str  # the rtpmap encoding name
    payload_type: int  # static payload type
    clock_rate: int  # RTP timestamp rate (G.722 says 8000, RFC 3551 §4.5.2)
    sample_rate: int  # rate of the PCM it carries

    @property
    def samples_per_frame(self) -> int:
        """PCM samples in one 20 ms frame at the codec's own rate."""
        return self.sample_rate * FRAME_MS // 1000

    @property
    def timestamp_step(self) -> int:
        """RTP timestamp increment per 20 ms frame (160 for all three codecs)."""
        return self.clock_rate * FRAME_MS // 1000


PCMU = Codec("PCMU", 0, 8000, 8000)
PCMA = Codec("PCMA", 8, 8000, 8000)
G722 = Codec("G722", 9, 8000, 16000)
CODECS: dict[str, Codec] = {c.name: c for c in (PCMU, PCMA, G722)}


def _ulaw_tables() -> tuple[npt.NDArray[np.uint8], Pcm]:
    # ITU-T G.711 µ-law on the 14-bit magnitude, bias 33, eight segments, all bits inverted.
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), 8159) + 0x21
    seg = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), mag)
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0xF))
    encode = np.empty(65536, np.uint8)
    encode[np.arange(-32768, 32768) & 0xFFFF] = (code ^ mask).astype(np.uint8)
    u = ~np.arange(256) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    decode = np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)
    return encode, decode


def _alaw_tables() -> tuple[npt.NDArray[np.uint8], Pcm]:
    # ITU-T G.711 A-law on the 13-bit magnitude, even bits inverted (XOR 0x55).
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]), mag)
    quant = np.where(seg < 2, mag >> 1, mag >> np.maximum(seg, 1)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (seg << 4) | quant)
    encode = np.empty(65536, np.uint8)
    encode[np.arange(-32768, 32768) & 0xFFFF] = (code ^ mask).astype(np.uint8)
    a = np.arange(256) ^ 0x55
    seg_d = (a & 0x70) >> 4
    t = ((a & 0x0F) << 4) + np.where(seg_d == 0, 8, 0x108)
    t = np.where(seg_d > 1, t << np.maximum(seg_d - 1, 0), t)
    decode = np.where(a & 0x80, t, -t).astype(np.int16)
    return encode, decode


_ULAW_ENCODE, _ULAW_DECODE = _ulaw_tables()
_ALAW_ENCODE, _ALAW_DECODE = _alaw_tables()


def ulaw_encode(pcm: Pcm) -> bytes:
    """µ-law bytes of int16 PCM: one table lookup per sample, in C (`take`: a third
    cheaper than fancy indexing for a 20 ms frame)."""
    return _ULAW_ENCODE.take(pcm.view(np.uint16)).tobytes()


def ulaw_decode(payload: bytes) -> Pcm:
    """int16 PCM of µ-law bytes."""
    return _ULAW_DECODE.take(np.frombuffer(payload, np.uint8))


def alaw_encode(pcm: Pcm) -> bytes:
    """A-law bytes of int16 PCM."""
    return _ALAW_ENCODE.take(pcm.view(np.uint16)).tobytes()


def alaw_decode(payload: bytes) -> Pcm:
    """int16 PCM of A-law bytes."""
    return _ALAW_DECODE.take(np.frombuffer(payload, np.uint8))


def _kaiser_lowpass(taps: int, cutoff: float) -> npt.NDArray[np.float64]:
    """Windowed-sinc low-pass; `cutoff` as a fraction of the sampling rate."""
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(taps, 8.0)
    return np.asarray(h / h.sum(), dtype=np.float64)


# 65 taps at 16 kHz (odd: a whole-sample 2 ms delay), cut at 3.7 kHz: -1 dB at 3.4 kHz,
# below -80 dB from 4.6 kHz, where images and aliases fall.
_LOWPASS = _kaiser_lowpass(65, 0.23)


class Resampler:
    """Streaming 2:1 or 1:2 resampler for 8 kHz ↔ 16 kHz, stateful across frames."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if {from_rate, to_rate} != {8000, 16000}:
            raise ValueError("Resampler converts between 8000 and 16000 Hz only")
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._up = to_rate > from_rate
        self._taps: tuple[npt.NDArray[np.float32], ...]
        if self._up:
            # Polyphase split of the zero-stuffed interpolator: even and odd output samples,
            # both as long (the odd phase of an odd-length filter ends with a zero tap).
            odd = np.append(_LOWPASS[1::2], 0.0)
            self._taps = (2 * _LOWPASS[0::2]).astype(np.float32), (2 * odd).astype(np.float32)
        else:
            self._taps = (_LOWPASS.astype(np.float32),)
        self._history = len(self._taps[0]) - 1
        self._buffer = np.zeros(self._history, np.float32)  # grows to history + frame once

    def process(self, pcm: Pcm) -> Pcm:
        """Resample one frame; output length is exactly twice or half the input."""
        if not len(pcm):
            return np.zeros(0, np.int16)
        h = self._history
        if len(self._buffer) != h + len(pcm):
            self._buffer = np.concatenate((self._buffer[-h:], np.zeros(len(pcm), np.float32)))
        else:
            self._buffer[:h] = self._buffer[-h:]
        buf = self._buffer
        buf[h:] = pcm
        if self._up:
            out = np.empty(2 * len(pcm), np.float32)
            out[0::2] = np.convolve(buf, self._taps[0], "valid")
            out[1::2] = np.convolve(buf, self._taps[1], "valid")
        else:
            out = np.convolve(buf, self._taps[0], "valid")[::2]
        return np.clip(out, -32768, 32767, out=out).astype(np.int16)


class _Encode(Protocol):
    def __call__(self, pcm: Pcm, /) -> bytes: ...


class _Decode(Protocol):
    def __call__(self, payload: bytes, /) -> Pcm: ...


class AudioEncoder:
    """PCM frames at `pcm_rate` → RTP payloads of `codec`; one instance per stream (G.722
    and the resampler keep state)."""

    def __init__(self, codec: Codec, pcm_rate: int) -> None:
        self.codec = codec
        self.pcm_rate = pcm_rate
        self.samples_per_frame = pcm_rate * FRAME_MS // 1000
        self._resampler: Resampler | None = None
        self._encode: _Encode
        if codec.name == "G722":
            self._encode = _g722.G722(pcm_rate, 64000).encode  # 8 kHz mode: no resampling
        else:
            self._encode = ulaw_encode if codec.name == "PCMU" else alaw_encode
            if pcm_rate != codec.sample_rate:
                self._resampler = Resampler(pcm_rate, codec.sample_rate)
        self._silence: bytes | None = None

    def encode(self, pcm: Pcm) -> bytes:
        """Encode one 20 ms frame of int16 PCM."""
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        return self._encode(pcm)

    def silence(self) -> bytes:
        """A silent frame; G.711 silence is a constant, G.722 must run through the encoder
        so the far end's adaptive decoder stays in step."""
        if self.codec.name == "G722":
            return self.encode(np.zeros(self.samples_per_frame, np.int16))
        if self._silence is None:
            zeros = np.zeros(self.codec.samples_per_frame, np.int16)
            self._silence = self._encode(zeros)
        return self._silence


class AudioDecoder:
    """RTP payloads of `codec` → PCM frames at `pcm_rate`; one instance per stream."""

    def __init__(self, codec: Codec, pcm_rate: int) -> None:
        self.codec = codec
        self.pcm_rate = pcm_rate
        self.samples_per_frame = pcm_rate * FRAME_MS // 1000
        self._resampler: Resampler | None = None
        self._decode: _Decode
        if codec.name == "G722":
            # use_numpy=True: decode() returns an int16 ndarray (needs G722-numpy).
            self._decode = _g722.G722(pcm_rate, 64000, use_numpy=True).decode
        else:
            self._decode = ulaw_decode if codec.name == "PCMU" else alaw_decode
            if pcm_rate != codec.sample_rate:
                self._resampler = Resampler(codec.sample_rate, pcm_rate)

    def decode(self, payload: bytes) -> Pcm:
        """Decode one RTP payload (any whole number of samples)."""
        pcm = self._decode(payload)
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        return pcm

    def conceal(self, samples: int | None = None) -> Pcm:
        """A frame for a lost packet: silence, which keeps the actor's timeline intact (a
        real PLC would repeat and fade the last frame; VAD and STT do not need it).
        `samples` defaults to 20 ms; pass the size of the peer's frames if it uses another
        ptime."""
        return np.zeros(samples or self.samples_per_frame, np.int16)
