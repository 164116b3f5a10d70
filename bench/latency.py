"""2. Latency added by the framework, measured against the server's own send times.

- text: the server sends a first content delta that by itself completes a speakable chunk; latency is
  from that chunk being written to the socket (server process) to the TTS sink's ``speak`` starting.
- tool: from the chunk carrying a tool call's last argument bytes being written to the tool's body
  starting to run.

Server and client are separate processes; both stamp ``time.perf_counter()``, which on Linux is the
system-wide CLOCK_MONOTONIC (checked by ``bench.server.shared_clock``). Chunks are 20 ms apart so each
one arrives in its own read, as in a real stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio

from bench.contenders import MESSAGES, our_client, sdk_client
from bench.scenarios import LATENCY_TOOL_LAST_ARGUMENT_CHUNK, scenario
from bench.server import ServerProcess
from bench.stats import Summary, percentile, summarize
from voiceagent.agent import Agent
from voiceagent.testing.sinks import RecordingSink
from voiceagent.tools import tool
from voiceagent.turn import TurnConfig

CHUNK_DELAY = 0.02


@dataclass(frozen=True)
class LatencyResult:
    reps: int
    ours_text_ms: Summary  # first content byte sent -> sink.speak() starts
    ours_text_p90_ms: float
    ours_tool_ms: Summary  # last argument byte sent -> tool body starts
    ours_tool_p90_ms: float
    sdk_text_ms: Summary  # reference: the same byte -> the typed SDK stream hands over the delta


async def _run(base_url: str, reps: int) -> dict[str, dict[str, float]]:
    """Client-side event times per request tag."""
    times: dict[str, dict[str, float]] = {"text": {}, "tool": {}, "sdk": {}}
    tool_started: list[float] = []

    @tool
    async def get_weather(city: str, unit: str) -> str:
        """Current weather for a city."""
        tool_started.append(time.perf_counter())
        return f"{city}: 21 degrees {unit}, sunny."

    llm = our_client(base_url)
    sdk = sdk_client(base_url)
    config = TurnConfig(filler=None)
    try:
        for rep in range(reps + 1):  # rep 0 warms up and is dropped
            tag = f"lat-text-{rep}"
            llm.model = scenario(tag, "latency-text", delay=CHUNK_DELAY).model
            sink = RecordingSink()
            agent = Agent(llm=llm, sink=sink, system_prompt="bench", config=config)
            await agent.respond("Hi")
            times["text"][tag] = next(c.at for c in sink.calls if c.kind == "speak_start")

            tag = f"lat-tool-{rep}"
            llm.model = scenario(tag, "latency-tool", delay=CHUNK_DELAY).model
            agent = Agent(
                llm=llm, sink=RecordingSink(), system_prompt="bench", tools=[get_weather], config=config
            )
            tool_started.clear()
            result = await agent.respond("Weather?")
            if len(tool_started) != 1 or result.error:
                raise RuntimeError(f"tool latency run went wrong: {result.error or tool_started}")
            times["tool"][tag] = tool_started[0]

            tag = f"lat-sdk-{rep}"
            model = scenario(tag, "latency-text", delay=CHUNK_DELAY).model
            create: Any = sdk.chat.completions.create
            stream = await create(model=model, messages=MESSAGES, stream=True)
            async with stream:
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content and tag not in times["sdk"]:
                        times["sdk"][tag] = time.perf_counter()
    finally:
        await llm.aclose()
        await sdk.close()
    return times


def measure_latency(server: ServerProcess, *, reps: int = 20) -> LatencyResult:
    server.send_log()  # start from an empty log
    times = anyio.run(_run, server.base_url, reps)
    sent = server.send_log()

    def deltas(kind: str, chunk_index: int) -> list[float]:
        return [
            (at - sent[tag][chunk_index]) * 1000
            for tag, at in times[kind].items()
            if not tag.endswith("-0")  # warm-up
        ]

    text = deltas("text", 0)
    tool_ms = deltas("tool", LATENCY_TOOL_LAST_ARGUMENT_CHUNK)
    return LatencyResult(
        reps=reps,
        ours_text_ms=summarize(text),
        ours_text_p90_ms=percentile(text, 90),
        ours_tool_ms=summarize(tool_ms),
        ours_tool_p90_ms=percentile(tool_ms, 90),
        sdk_text_ms=summarize(deltas("sdk", 0)),
    )
