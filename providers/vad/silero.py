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

Two things keep it cheap enough for hundreds of calls on one core (bench/sip_media.py):

- **A silence gate.** A window quieter than `GATE_DBOV` (-60 dBov RMS: a line's idle noise or
  comfort noise; speech on a phone line sits at -35 to -15 dBov) has probability 0 and skips
  the model, once the model itself has judged the stream silent (below `GATE_SETTLED`): the
  model's probability decays over a few windows after speech, and the gate must not end an
  utterance sooner than the model would. After `GATE_RESET_WINDOWS` gated windows in a row the recurrent state and context
  start afresh, as at the start of a stream, so the next utterance is judged as a first one.
- **Batching across calls.** One model run costs ~130-210 µs for one window but ~45 µs per
  window for eight, back to back (onnxruntime's per-call overhead dominates so small a
  model); between other work (caches cold) a run costs about three times that, so fewer,
  larger runs matter more still. A call
  actor's `BatchedSileroVad.push` queues a completed window on the loop's `SileroBatcher`,
  which runs every window queued within `BATCH_WAIT` (8 ms) as one call and resolves each
  stream's future; the caller's frame reaches the agent a few ms later (far inside the 20 ms
  the media path allows), with exactly the probability a lone run would give.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from switchboard.providers.errors import ModelNotInstalled, ProviderRejected

__all__ = ["BATCH_WAIT", "GATE_DBOV", "BatchedSileroVad", "SileroBatcher", "SileroVad",
           "SileroVadModel", "bundled_model_path"]

PACKAGE = "silero-vad"
PACKAGE_VERSION = "6.2.3"
_WINDOW = {16000: 512, 8000: 256}
_CONTEXT = {16000: 64, 8000: 32}
GATE_DBOV = -60.0
GATE_RESET_WINDOWS = 10   # 320 ms at 8 kHz and 16 kHz alike (32 ms windows)
GATE_SETTLED = 0.1        # the model must have judged the stream silent before the gate acts
BATCH_WAIT = 0.008        # seconds a window may wait for others to share its model run
_SCALE = np.float32(1 / 32768)
MAX_BATCH = 64            # windows per model run (~2.5 ms): longer would delay RTP sends


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

    def __init__(self, session: Any, *, gate_dbov: float | None = GATE_DBOV) -> None:
        self._session = session
        # Mean square (of float samples in [-1, 1)) below which a window is silence.
        self.gate_power = -1.0 if gate_dbov is None else 10 ** (gate_dbov / 10)
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SileroBatcher] = (
            weakref.WeakKeyDictionary())

    @classmethod
    def load(cls, path: Path | None = None, *, threads: int = 1,
             gate_dbov: float | None = GATE_DBOV) -> SileroVadModel:
        """Load the bundled model; one intra-op thread, since a window takes ~0.1 ms.
        `gate_dbov=None` runs the model on every window, silence included."""
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
        return cls(session, gate_dbov=gate_dbov)

    def open(self, sample_rate: int = 16000) -> SileroVad:
        """A new detector, with fresh state, for one audio stream (runs the model inline)."""
        return SileroVad(self, sample_rate)

    def open_batched(self, sample_rate: int = 16000) -> BatchedSileroVad:
        """A detector whose `push` shares model runs with the other streams on this loop."""
        return BatchedSileroVad(self, sample_rate)

    def batcher(self) -> SileroBatcher:
        """The running loop's batcher for this model."""
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            batcher = self._batchers[loop] = SileroBatcher(self, loop)
        return batcher

    def run(self, window: np.ndarray, state: np.ndarray, sample_rate: int) -> tuple[float, Any]:
        out, new_state = self.run_batch(window, state, sample_rate)
        return float(out[0, 0]), new_state

    def run_batch(self, windows: np.ndarray, states: np.ndarray, sample_rate: int
                  ) -> tuple[np.ndarray, np.ndarray]:
        """`windows` (B, context + window), `states` (2, B, 128) -> probabilities (B, 1) and
        the new states (2, B, 128)."""
        out, new_states = self._session.run(
            None, {"input": windows, "state": states,
                   "sr": np.array(sample_rate, dtype=np.int64)})
        return out, new_states


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
        self._gate = model.gate_power * self._window
        self.reset()

    @property
    def sample_rate(self) -> int:
        return self._rate

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._buf = np.zeros((1, self._context_size + self._window), dtype=np.float32)
        self._fill = 0  # samples of the current window in _buf (after the context)
        self._probability = 0.0
        self._gated = 0

    def speech_probability(self, pcm: bytes) -> float:
        self._feed(pcm, defer_last=False)
        return self._probability

    def _feed(self, pcm: bytes, *, defer_last: bool) -> np.ndarray | None:
        """Buffer `pcm` and judge the windows it completes, in order: gated ones are 0, the
        others run the model, except the last one when `defer_last` (its model input is
        returned, for the batcher). Samples go straight into the model's input layout
        (context, then window), so a frame costs one numpy operation."""
        samples = np.frombuffer(pcm, dtype=np.int16)
        buf, context, size = self._buf, self._context_size, self._window
        deferred = None
        taken, total = 0, samples.size
        while taken < total:
            count = min(size - self._fill, total - taken)
            at = context + self._fill
            np.multiply(samples[taken : taken + count], _SCALE, out=buf[0, at : at + count])
            self._fill += count
            taken += count
            if self._fill < size:
                break
            self._fill = 0
            window = buf[0, context:]
            if self._probability < GATE_SETTLED and float(np.dot(window, window)) < self._gate:
                self._probability = 0.0
                self._gated += 1
                if self._gated >= GATE_RESET_WINDOWS:
                    if self._gated == GATE_RESET_WINDOWS:
                        self._state = np.zeros((2, 1, 128), dtype=np.float32)
                    buf[0, :context] = 0.0
                else:
                    buf[0, :context] = window[-context:]
                continue
            self._gated = 0
            model_input = buf.copy()
            buf[0, :context] = window[-context:]
            if defer_last and total - taken < size:  # no later window in this feed
                deferred = model_input
            else:
                self._probability, self._state = self._model.run(model_input, self._state,
                                                                 self._rate)
        return deferred


class BatchedSileroVad(SileroVad):
    """A `SileroVad` whose windows run in the loop's `SileroBatcher` when fed by `push`.

    `speech_probability` still runs inline (for callers that cannot wait); a stream is fed
    by one of the two, and by `push` only once its previous future resolved."""

    def reset(self) -> None:
        super().reset()
        self._in_flight = False

    def push(self, pcm: bytes) -> float | asyncio.Future[float]:
        """Feed `pcm`: the latest probability when no window needs the model, else a future
        of it, resolved by the batcher within a few ms."""
        if self._in_flight:
            raise RuntimeError("BatchedSileroVad.push before the previous window's result: "
                               "await each future before feeding the next frame")
        deferred = self._feed(pcm, defer_last=True)
        if deferred is None:
            return self._probability
        self._in_flight = True
        return self._model.batcher().submit(self, deferred)

    def _resolved(self, probability: float, state: np.ndarray) -> None:
        self._in_flight = False
        self._probability, self._state = probability, np.ascontiguousarray(state)

    def _failed(self) -> None:
        self._in_flight = False


class SileroBatcher:
    """Runs the windows that streams on one loop queue within `BATCH_WAIT` as one model call
    per sample rate (the `sr` input is one value per call)."""

    def __init__(self, model: SileroVadModel, loop: asyncio.AbstractEventLoop, *,
                 wait: float = BATCH_WAIT, max_batch: int = MAX_BATCH) -> None:
        self._model = model
        self._loop = loop
        self._wait = wait
        self._max = max_batch
        self._queues: dict[int, list[tuple[BatchedSileroVad, np.ndarray,
                                           asyncio.Future[float]]]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self.runs = 0
        self.windows = 0

    def submit(self, vad: BatchedSileroVad, model_input: np.ndarray) -> asyncio.Future[float]:
        rate = vad.sample_rate
        future: asyncio.Future[float] = self._loop.create_future()
        queue = self._queues.setdefault(rate, [])
        queue.append((vad, model_input, future))
        if len(queue) >= self._max:
            self._flush(rate)
        elif rate not in self._timers:
            self._timers[rate] = self._loop.call_later(self._wait, self._flush, rate)
        return future

    def _flush(self, rate: int) -> None:
        timer = self._timers.pop(rate, None)
        if timer is not None:
            timer.cancel()
        batch = self._queues.pop(rate, [])
        if not batch:
            return
        try:
            windows = np.concatenate([entry[1] for entry in batch])
            states = np.concatenate([entry[0]._state for entry in batch], axis=1)
            out, new_states = self._model.run_batch(windows, states, rate)
        except Exception as exc:  # noqa: BLE001 - every waiting stream gets the error
            for vad, _, future in batch:
                vad._failed()
                if not future.done():
                    future.set_exception(exc)
            return
        self.runs += 1
        self.windows += len(batch)
        for i, (vad, _, future) in enumerate(batch):
            probability = float(out[i, 0])
            vad._resolved(probability, new_states[:, i : i + 1, :])
            if not future.done():  # cancelled: the stream's reader went away
                future.set_result(probability)
