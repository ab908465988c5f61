"""Benchmark: the offline LLM options on this machine: the flow agent and, if installed, the local
GGUF model (llama-cpp-python + the packaged SmolLM2-135M Q4_1).

  flow:   time to first token of the flow agent on the demo script (configs/flows/demo.yaml),
          over a scripted booking-and-questions conversation repeated 50 times, each turn
          replaying from the memo (the usual case) and, separately, from a cold agent (a
          restarted call actor replays the whole transcript).
  gguf:   load time; time to first token with a ~300-token system prompt, cold (first request)
          and warm (system prompt in the KV cache, a new question; and the same question again,
          the lower bound); decode tokens per second.

Prints the figures, writes bench/results/llm.json, ends with one line
`flow_ttft_p50_ms=... flow_ttft_p99_ms=... [gguf_ttft_cold_ms=... gguf_ttft_warm_ms=...
gguf_tok_s=...]`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from switchboard.protocols.llm import ChatMessage, LlmFinish, LlmText, ToolSpec
from switchboard.providers.llm.flow import FlowAgent

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "llm.json"
TOOLS = [ToolSpec(name="transfer", description="t"), ToolSpec(name="hang_up", description="h")]
TURNS = ["hi, what time do you close on sunday", "I'd like to book a table for four tomorrow",
         "half past seven", "is there parking", "my name is Anna", "yes please",
         "do you have vegan dishes", "no thanks"]
SYSTEM = ("You are the phone assistant of The Olive Tree, a restaurant at 12 Harbour Street. "
          "We are open every day from noon to ten in the evening, until eleven on Fridays and "
          "Saturdays. Answer in one or two short sentences, politely. ") * 5
QUESTIONS = ["What time do you close?", "Where are you?", "Do you have vegan food?",
             "Can I book a table for two tonight?", "Is there parking?"]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def first_token_ms(agent: FlowAgent, messages: list[ChatMessage]) -> tuple[float, str]:
    started = time.perf_counter()
    stream = agent.stream(messages, TOOLS)
    await anext(stream)
    elapsed = (time.perf_counter() - started) * 1000
    text = "".join([e.text async for e in stream if isinstance(e, LlmText)])
    return elapsed, text


async def bench_flow() -> dict[str, Any]:
    script = FlowAgent.from_file(ROOT / "configs" / "flows" / "demo.yaml").script
    warm: list[float] = []
    cold: list[float] = []
    for _ in range(50):
        agent = FlowAgent(script, today=lambda: dt.date(2026, 11, 25))
        messages: list[ChatMessage] = []
        for turn in ["", *TURNS]:
            if turn:
                messages.append(ChatMessage(role="user", content=turn))
            elapsed, text = await first_token_ms(agent, messages)
            warm.append(elapsed)
            restarted = FlowAgent(script, today=lambda: dt.date(2026, 11, 25))
            cold.append((await first_token_ms(restarted, messages))[0])
            messages.append(ChatMessage(role="assistant", content=text))
    return {"turns": len(warm), "ttft_ms_p50": statistics.median(warm),
            "ttft_ms_p99": pct(warm, 0.99), "ttft_ms_max": max(warm),
            "replay_ttft_ms_p50": statistics.median(cold), "replay_ttft_ms_p99": pct(cold, 0.99)}


async def bench_gguf() -> dict[str, Any]:
    from switchboard.providers.llm.llama_local import LlamaLocalModel

    started = time.perf_counter()
    llm = LlamaLocalModel.load(max_tokens=64)
    load_s = time.perf_counter() - started
    system = ChatMessage(role="system", content=SYSTEM)
    ttfts: list[float] = []
    rates: list[float] = []
    prompt_tokens = 0
    for question in QUESTIONS * 2:
        started = time.perf_counter()
        first = 0.0
        count = 0
        async for event in llm.stream([system, ChatMessage(role="user", content=question)]):
            if isinstance(event, LlmFinish) and not prompt_tokens:
                prompt_tokens = event.input_tokens
            if isinstance(event, LlmText):
                if count == 0:
                    first = time.perf_counter()
                count += 1
        end = time.perf_counter()
        ttfts.append((first - started) * 1000)
        if count > 1:
            rates.append((count - 1) / (end - first))
    llm.close()
    new = ttfts[1:len(QUESTIONS)]  # system prompt cached, a new question
    repeated = ttfts[len(QUESTIONS):]  # the whole prompt cached: the lower bound
    return {"load_s": load_s, "first_prompt_tokens": prompt_tokens,
            "ttft_ms_cold": ttfts[0], "ttft_ms_warm_p50": statistics.median(new),
            "ttft_ms_warm_max": max(new), "ttft_ms_repeat_p50": statistics.median(repeated),
            "decode_tok_s_p50": statistics.median(rates)}


async def main() -> None:
    results: dict[str, Any] = {"cpus": os.cpu_count(), "flow": await bench_flow()}
    has_llama = importlib.util.find_spec("llama_cpp") is not None
    if has_llama:
        results["gguf"] = await bench_gguf()
    print(json.dumps(results, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    flow = results["flow"]
    line = f"flow_ttft_p50_ms={flow['ttft_ms_p50']:.2f} flow_ttft_p99_ms={flow['ttft_ms_p99']:.2f}"
    if has_llama:
        gguf = results["gguf"]
        line += (f" gguf_ttft_cold_ms={gguf['ttft_ms_cold']:.0f}"
                 f" gguf_ttft_warm_ms={gguf['ttft_ms_warm_p50']:.0f}"
                 f" gguf_tok_s={gguf['decode_tok_s_p50']:.0f}")
    print(line)


if __name__ == "__main__":
    asyncio.run(main())
