"""Silero VAD v6 on onnxruntime: the default voice-activity detector.

Weights: `silero_vad/data/silero_vad.onnx` (2.3 MB) inside the PyPI wheel `silero-vad==6.2.3`
(Silero Team, MIT licence). Install it with `pip install --no-deps silero-vad==6.2.3`: its
Python API imports torch (several GB), which Switchboard never installs, so this module reads
only the ONNX file and runs it with onnxruntime. Nothing is fetched at run time.

The model takes fixed windows (512 samples at 16 kHz, 256 at 8 kHz) plus the last 64/32
samples of the previous window as context, and carries a recurrent state between windows.
`SileroVad` buffers whatever frame size the media leg delivers (20 ms is usual) into those
windows. One `SileroVadModel` (the onnxruntime session, thread-safe) serves every stream;
each stream opens its own `SileroVad` for its state.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np
from switchboard.providers.errors import ModelNotInstalled, ProviderRejected

PACKAGE = "silero-vad"
PACKAGE_VERSION = "6.2.3"
_WINDOW = {16000: 512, 8000: 256}
_CONTEXT = {16000: 64, 8000: 32}


def bundled_model_path() -> Path:
    """Where the silero-vad wheel put its ONNX model (without importing the torch-bound API)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotInstalled(
            "the Silero VAD model is not installed; run "
            f"`pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}` (--no-deps keeps torch out), "
            "or use the webrtc VAD",
            provider="silero",
        ) from None
    return Path(str(dist.locate_file("silero_vad/data/silero_vad.onnx")))


class SileroVadModel:
    """The loaded ONNX session; cheap to share across streams and threads."""

    def __init__(self, session: Any) -> None:
        self._session = session

    @classmethod
    def load(cls, path: Path | None = None, *, threads: int = 1) -> SileroVadModel:
        """Load the bundled model; one intra-op thread, since a window takes ~0.1 ms."""
        try:
            import onnxruntime
        except ImportError:
            raise ModelNotInstalled(
                "onnxruntime is not installed; run `pip install onnxruntime`", provider="silero"
            ) from None
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(path or bundled_model_path()), sess_options=opts,
            providers=["CPUExecutionProvider"],
        )
        return cls(session)

    def open(self, sample_rate: int = 16000) -> SileroVad:
        """A new detector, with fresh state, for one audio stream."""
        return SileroVad(self, sample_rate)

    def run(self, window: np.ndarray, state: np.ndarray, sample_rate: int) -> tuple[float, Any]:
        out, new_state = self._session.run(
            None, {"input": window, "state": state, "sr": np.array(sample_rate, dtype=np.int64)}
        )
        return float(out[0, 0]), new_state


class SileroVad:
    """Speech probability of one stream; implements `providers.base.Vad`."""

    def __init__(self, model: SileroVadModel, sample_rate: int = 16000) -> None:
        if sample_rate not in _WINDOW:
            raise ProviderRejected(
                f"Silero VAD runs at 8000 or 16000 Hz, not {sample_rate}; resample the "
                "stream first or use the webrtc VAD (8/16/32/48 kHz)",
                provider="silero",
            )
        self._model = model
        self._rate = sample_rate
        self._window = _WINDOW[sample_rate]
        self._context_size = _CONTEXT[sample_rate]
        self.reset()

    @property
    def sample_rate(self) -> int:
        return self._rate

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(self._context_size, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._probability = 0.0

    def speech_probability(self, pcm: bytes) -> float:
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        buffered = np.concatenate((self._pending, samples)) if self._pending.size else samples
        start = 0
        while buffered.size - start >= self._window:
            window = buffered[start : start + self._window]
            model_input = np.concatenate((self._context, window))[np.newaxis, :]
            self._probability, self._state = self._model.run(model_input, self._state, self._rate)
            self._context = window[-self._context_size :]
            start += self._window
        self._pending = buffered[start:].copy()
        return self._probability
