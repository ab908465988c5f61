"""G.711, G.722 and resampling: bit-exactness, round trips, frame sizes, continuity."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from switchboard.gateways.sip.codecs import (
    G722,
    PCMA,
    PCMU,
    AudioDecoder,
    AudioEncoder,
    Codec,
    Resampler,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)

pytestmark = pytest.mark.unit

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop  # the reference G.711 in CPython up to 3.12
    except ImportError:  # Python 3.13 removed it
        audioop = None

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)


def tone(freq: float, rate: int, seconds: float = 0.2, amplitude: float = 8000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype(np.int16)


def dominant_frequency(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[np.argmax(spectrum)])


def snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    noise = reference.astype(np.float64) - decoded.astype(np.float64)
    signal = np.sum(reference.astype(np.float64) ** 2)
    return float(10 * np.log10(signal / max(float(np.sum(noise**2)), 1e-9)))


@pytest.mark.skipif(audioop is None, reason="audioop (reference G.711) not in this Python")
def test_g711_tables_are_bit_exact_with_audioop() -> None:
    raw = ALL_PCM.tobytes()
    assert ulaw_encode(ALL_PCM) == audioop.lin2ulaw(raw, 2)
    assert alaw_encode(ALL_PCM) == audioop.lin2alaw(raw, 2)
    codes = bytes(range(256))
    assert ulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes, 2)
    assert alaw_decode(codes).tobytes() == audioop.alaw2lin(codes, 2)


def test_g711_known_values() -> None:
    # ITU-T G.711: silence is 0xFF in µ-law and 0xD5 in A-law.
    zero = np.zeros(4, np.int16)
    assert ulaw_encode(zero) == b"\xff" * 4 and alaw_encode(zero) == b"\xd5" * 4
    assert ulaw_decode(b"\x00\x80").tolist() == [-32124, 32124]
    assert alaw_decode(b"\xd5\x55").tolist() == [8, -8]


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.int16, st.integers(0, 400)))
def test_g711_decode_encode_is_identity_on_codes(pcm: np.ndarray) -> None:
    for encode, decode in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        codes = encode(pcm)
        assert len(codes) == len(pcm)
        assert encode(decode(codes)) == codes  # every code decodes to a value encoding to it
        error = np.abs(decode(codes).astype(np.int32) - pcm.astype(np.int32))
        # Quantisation error is bounded by the segment step (≤ 1/16 of the magnitude + 1 step).
        assert np.all(error <= np.abs(pcm.astype(np.int32)) // 16 + 1024)


@pytest.mark.parametrize("codec", [PCMU, PCMA, G722])
@pytest.mark.parametrize("rate", [8000, 16000])
def test_encoder_decoder_frames_and_quality(codec: Codec, rate: int) -> None:
    encoder, decoder = AudioEncoder(codec, rate), AudioDecoder(codec, rate)
    source = tone(440, rate, seconds=0.4)
    frames = source.reshape(-1, rate // 50)
    payloads = [encoder.encode(frame) for frame in frames]
    assert all(len(p) == 160 for p in payloads)  # 64 kbit/s × 20 ms for all three
    decoded = np.concatenate([decoder.decode(p) for p in payloads])
    assert decoded.dtype == np.int16 and len(decoded) == len(source)
    assert abs(dominant_frequency(decoded[rate // 10 :], rate) - 440) < 10
    assert decoder.conceal().shape == (rate // 50,)
    assert len(encoder.silence()) == 160
    if codec is not G722 and rate == 8000:
        assert snr_db(source, decoded) > 30  # G.711 is ~38 dB on a clean tone


def test_g722_carries_wideband_audio_that_g711_cannot() -> None:
    source = tone(6000, 16000, seconds=0.4)
    encoder, decoder = AudioEncoder(G722, 16000), AudioDecoder(G722, 16000)
    decoded = np.concatenate([decoder.decode(encoder.encode(f)) for f in source.reshape(-1, 320)])
    assert abs(dominant_frequency(decoded[1600:], 16000) - 6000) < 50
    narrow_enc, narrow_dec = AudioEncoder(PCMU, 16000), AudioDecoder(PCMU, 16000)
    through_pcmu = np.concatenate(
        [narrow_dec.decode(narrow_enc.encode(f)) for f in source.reshape(-1, 320)]
    )
    assert np.abs(through_pcmu[1600:]).max() < 400  # 6 kHz is filtered out at 8 kHz


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 8000)])
def test_resampler_keeps_tone_and_is_continuous_across_frames(src: int, dst: int) -> None:
    resampler = Resampler(src, dst)
    source = tone(1000, src, seconds=0.5)
    out = np.concatenate([resampler.process(f) for f in source.reshape(-1, src // 50)])
    assert len(out) == len(source) * dst // src
    reference = tone(1000, dst, seconds=0.5)
    steady = slice(dst // 10, None)
    # Same tone after a fixed delay: compare with the best-aligned reference.
    delays = range(40)
    best = max(snr_db(reference[steady][: -40], out[steady][d : len(out[steady]) - 40 + d])
               for d in delays)  # fmt: skip
    assert best > 35


def test_downsampling_rejects_aliases() -> None:
    resampler = Resampler(16000, 8000)
    out = np.concatenate([resampler.process(f) for f in tone(6000, 16000).reshape(-1, 320)])
    assert np.abs(out[400:]).max() < 20  # 6 kHz would alias to 2 kHz at full strength


def test_resampler_rejects_other_rates() -> None:
    with pytest.raises(ValueError, match="8000 and 16000"):
        Resampler(8000, 48000)
