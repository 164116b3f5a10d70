"""6. LiveKit Agents 1.8 (``livekit-plugins-openai``'s ``LLM``) on the same server and byte-identical streams.

Two measurements, against the same bench server as every other contender:

- **CPU per 1,000 tokens, paced** (a read per token): LiveKit's ``LLMStream`` (the SDK's typed stream,
  a ``ChatChunk`` per delta, its event channel) beside the true floor, our ``LLMClient`` stream and our
  full turn, interleaved in every repetition. LiveKit's number is the stream alone: its speech side
  (``AgentSession``) needs a room or console I/O, so the comparison is stream to stream (and our full
  turn is shown for scale).
- **Tool calls on Electron's stream shape**: the filler + ``get_weather`` stream, once with the finish
  chunk carrying no ``delta`` (Electron's shape) and once with ``"delta": {}`` (OpenAI's). LiveKit 1.8's
  ``_parse_choice`` returns early when ``choice.delta is None``, before it looks at ``finish_reason``, so
  on Electron's shape the tool call it was assembling is never emitted: the bench prints the calls each
  contender saw rather than hiding the miss.

``livekit-agents`` and ``livekit-plugins-openai`` are optional (bench/requirements.txt); without them
this section says why and is skipped.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Any

import anyio

from bench.contenders import Consumer, our_client, ours_stream, ours_turn, protocol_floor, sdk_client
from bench.scenarios import FILLER, TOOL_ARGUMENTS, TOOL_NAME, scenario, token_words
from bench.stats import Summary, summarize
from voiceagent.agent import Agent
from voiceagent.testing.sinks import RecordingSink
from voiceagent.tools import tool
from voiceagent.turn import TurnConfig

LIVEKIT_VERSION = "1.8."
LIVEKIT = "LiveKit Agents 1.8: LLMStream"
FLOOR = "true floor: asyncio Protocol + json.loads"
STREAM = "ours: LLMClient stream"
TURN = "ours: full turn"
CONTENDERS = (FLOOR, STREAM, TURN, LIVEKIT)
PACED_DELAY = 0.004
SHAPES = {"Electron (finish chunk without delta)": "0", "OpenAI (finish chunk with delta: {})": "1"}


def livekit_available() -> str | None:
    """None when LiveKit's OpenAI plugin can run here, else why not."""
    try:
        from livekit.agents import __version__
        from livekit.plugins.openai import LLM  # noqa: F401
    except ImportError as exc:
        return (
            f"livekit-agents/livekit-plugins-openai are not installed ({exc}); "
            "pip install -r bench/requirements.txt"
        )
    if not __version__.startswith(LIVEKIT_VERSION):
        return f"livekit-agents {__version__} is installed; the bench is written for {LIVEKIT_VERSION}x"
    return None


@dataclass(frozen=True)
class ToolShapeRow:
    shape: str
    contender: str
    text: str
    calls: tuple[str, ...]  # "name(arguments)" per call the contender surfaced

    @property
    def ok(self) -> bool:
        return self.calls == (f"{TOOL_NAME}({_args()})",)


@dataclass(frozen=True)
class LiveKitResult:
    tokens: int
    reps: int
    delay: float
    cpu_ms_per_1k: dict[str, Summary]
    ratio_to_floor: dict[str, Summary]
    tool_rows: tuple[ToolShapeRow, ...]


def _args() -> str:
    import json

    return json.dumps(TOOL_ARGUMENTS)


def _livekit_tool() -> Any:
    from livekit.agents import llm

    @llm.function_tool(description="Current weather for a city.")
    async def get_weather(city: str, unit: str) -> str:
        return f"{city}: 21 degrees {unit}, sunny."

    return get_weather


async def livekit_turn_text(client: Any, model: str, *, with_tool: bool) -> tuple[str, list[str]]:
    """One LiveKit ``LLMStream`` over ``model``: its text and the tool calls it emits (``name(args)``)."""
    from livekit.agents import llm
    from livekit.plugins.openai import LLM

    ctx = llm.ChatContext.empty()
    ctx.add_message(role="user", content="Talk to me.")
    # One plugin LLM per request (the model name carries the scenario); the SDK client is shared.
    lk = LLM(model=model, client=client)
    parts: list[str] = []
    calls: list[str] = []
    async with lk.chat(chat_ctx=ctx, tools=[_livekit_tool()] if with_tool else None) as stream:
        async for chunk in stream:
            if chunk.delta is None:
                continue
            if chunk.delta.content:
                parts.append(chunk.delta.content)
            for call in chunk.delta.tool_calls or ():
                calls.append(f"{call.name}({call.arguments})")
    return "".join(parts), calls


def livekit_stream(client: Any) -> Consumer:
    async def consume(model: str) -> str:
        text, _ = await livekit_turn_text(client, model, with_tool=False)
        return text

    return consume


async def _ours_tool_turn(base_url: str, model: str) -> tuple[str, list[str]]:
    seen: list[str] = []

    @tool
    async def get_weather(city: str, unit: str) -> str:
        """Current weather for a city."""
        import json

        seen.append(f"{TOOL_NAME}({json.dumps({'city': city, 'unit': unit})})")
        return f"{city}: 21 degrees {unit}, sunny."

    llm = our_client(base_url)
    llm.model = model
    sink = RecordingSink()
    try:
        agent = Agent(llm=llm, sink=sink, system_prompt="bench", tools=[get_weather], config=TurnConfig())
        await agent.respond("Weather?")
    finally:
        await llm.aclose()
    return sink.text, seen


async def _measure(
    base_url: str, tokens: int, reps: int, delay: float
) -> tuple[dict[str, list[float]], list[ToolShapeRow]]:
    sdk = sdk_client(base_url)
    ours = our_client(base_url)
    consumers: dict[str, Consumer] = {
        FLOOR: protocol_floor(base_url),
        STREAM: ours_stream(ours),
        TURN: ours_turn(ours),
        LIVEKIT: livekit_stream(sdk),
    }
    expected = "".join(token_words(tokens)).strip()
    model = scenario("livekit-cpu", "text", tokens=tokens, delay=delay).model
    warm = scenario("livekit-warm", "text", tokens=20).model
    samples: dict[str, list[float]] = {name: [] for name in consumers}
    rows: list[ToolShapeRow] = []
    try:
        for consume in consumers.values():
            await consume(warm)
        names = list(consumers)
        for rep in range(reps):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                gc.collect()
                start = time.process_time()
                text = await consumers[name](model)
                cpu = time.process_time() - start
                if text.strip() != expected:
                    raise RuntimeError(f"{name} received the wrong text ({len(text)} chars)")
                samples[name].append(cpu * 1e6 / tokens)
        for shape, finish_delta in SHAPES.items():
            spec = scenario(f"livekit-tool-{finish_delta}", "weather", finish_delta=finish_delta)
            text, calls = await livekit_turn_text(sdk, spec.model, with_tool=True)
            rows.append(ToolShapeRow(shape, "LiveKit Agents 1.8", text, tuple(calls)))
            spec = scenario(f"ours-tool-{finish_delta}", "weather", finish_delta=finish_delta)
            text, calls = await _ours_tool_turn(base_url, spec.model)
            rows.append(ToolShapeRow(shape, "ours", text, tuple(calls)))
    finally:
        await sdk.close()
        await ours.aclose()
    return samples, rows


def measure_livekit(base_url: str, *, tokens: int, reps: int, delay: float = PACED_DELAY) -> LiveKitResult:
    samples, rows = anyio.run(_measure, base_url, tokens, reps, delay)
    floor = samples[FLOOR]
    return LiveKitResult(
        tokens=tokens,
        reps=reps,
        delay=delay,
        cpu_ms_per_1k={name: summarize(values) for name, values in samples.items()},
        ratio_to_floor={
            name: summarize([v / f for v, f in zip(values, floor, strict=True)])
            for name, values in samples.items()
        },
        tool_rows=tuple(rows),
    )


def filler_spoken(row: ToolShapeRow) -> bool:
    return row.text.startswith(FILLER.strip())


__all__ = ["LiveKitResult", "livekit_available", "measure_livekit"]
