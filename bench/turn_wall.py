"""3. Turn wall time: filler (1.0 s of speech) + tool (0.8 s) + answer, ours vs a sequential baseline.

Every contender gets the same server replies (scenario ``weather``: filler words, then the tool call;
after the tool result, the answer) with ``CHUNK_DELAY`` between chunks, the same simulated speech rate
(the filler takes exactly ``FILLER_SECONDS`` to say) and a tool that sleeps ``TOOL_SECONDS``. Wall time
runs from the user's text to the last word of the answer finishing playback.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import anyio

from bench.contenders import our_client, sdk_client
from bench.scenarios import ANSWER, FILLER, TOOL_NAME, TOOL_SCHEMA, scenario, split_words
from bench.stats import Summary, summarize
from voiceagent.agent import Agent
from voiceagent.audio_output import CollectingOutput
from voiceagent.speaker import Speaker
from voiceagent.testing.sinks import RATE, PacedEngine, RecordingSink, StreamingPacedEngine
from voiceagent.tools import tool
from voiceagent.turn import TurnConfig

FILLER_SECONDS = 1.0
TOOL_SECONDS = 0.8
CHUNK_DELAY = 0.015
SECONDS_PER_CHAR = FILLER_SECONDS / len(FILLER)
ANSWER_SECONDS = len(ANSWER) * SECONDS_PER_CHAR
USER_TEXT = "What's the weather in Paris?"
SYSTEM_PROMPT = "You are a concise phone assistant."


def ideal_seconds() -> float:
    """The target, a zero-overhead schedule: max(filler, tool) + the second round, where the filler
    starts when its first clause has streamed in, the tool when its arguments have, and the second
    round is the answer streamed in full, then spoken."""
    filler_words = len(split_words(FILLER))
    filler_starts = 2 * CHUNK_DELAY  # "Sure, " is a chunk once the next word shows it is complete
    tool_starts = (filler_words + 1 + 3) * CHUNK_DELAY  # filler, call header, 3 argument chunks
    answer_chunks = len(split_words(ANSWER)) + 2  # + finish chunk + usage chunk
    first_round = max(filler_starts + FILLER_SECONDS, tool_starts + TOOL_SECONDS)
    return first_round + answer_chunks * CHUNK_DELAY + ANSWER_SECONDS


@dataclass(frozen=True)
class TurnWallResult:
    reps: int
    wall_s: dict[str, Summary]  # contender -> seconds
    ideal_s: float
    notes: dict[str, str]


# Our knob for streaming TTS engines, the counterpart of Pipecat's TOKEN mode: chunks of a few words
# (cut at a clause boundary, else a word start, past this many characters) instead of whole clauses.
STREAMING_CHUNK_CHARS = 24


async def ours_turn(
    base_url: str, tag: str, max_chunk_chars: int | None = None, *, streaming_engine: bool = False
) -> float:
    @tool
    async def get_weather(city: str, unit: str) -> str:
        """Current weather for a city."""
        await anyio.sleep(TOOL_SECONDS)
        return f"{city}: 21 degrees {unit}, sunny."

    llm = our_client(base_url)
    llm.model = scenario(tag, "weather", delay=CHUNK_DELAY).model
    # A streaming engine takes each clause's words as they are written (the Speaker's speak_stream),
    # the counterpart of Pipecat's TOKEN mode with our default chunking.
    engine = (StreamingPacedEngine if streaming_engine else PacedEngine)(SECONDS_PER_CHAR)
    sink = Speaker(engine, CollectingOutput(RATE))
    config = TurnConfig() if max_chunk_chars is None else TurnConfig(max_chunk_chars=max_chunk_chars)
    agent = Agent(llm=llm, sink=sink, system_prompt=SYSTEM_PROMPT, tools=[get_weather], config=config)
    try:
        start = time.perf_counter()
        result = await agent.respond(USER_TEXT)
        wall = time.perf_counter() - start
    finally:
        await llm.aclose()
    spoken = "".join(engine.texts)
    if result.error or spoken.strip() != (FILLER + ANSWER).strip():
        raise RuntimeError(f"our turn went wrong: {result.error or spoken!r}")
    return wall


async def sequential_turn(base_url: str, tag: str) -> float:
    """The naive app on the bare SDK: stream, speak the filler to the end, then run the tool, then the
    next round, then speak the answer."""
    client = sdk_client(base_url)
    model = scenario(tag, "weather", delay=CHUNK_DELAY).model
    sink = RecordingSink(seconds_per_char=SECONDS_PER_CHAR)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_TEXT},
    ]
    try:
        start = time.perf_counter()
        for _ in range(3):
            text, calls = "", dict[int, dict[str, str]]()
            create: Any = client.chat.completions.create
            stream = await create(model=model, messages=messages, tools=[TOOL_SCHEMA], stream=True)
            async with stream:
                async for chunk in stream:
                    for choice in chunk.choices:
                        if choice.delta is None:  # Electron's finish chunk may carry no delta
                            continue
                        text += choice.delta.content or ""
                        for fragment in choice.delta.tool_calls or ():
                            call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
                            call["id"] = fragment.id or call["id"]
                            if fragment.function is not None:
                                call["name"] = fragment.function.name or call["name"]
                                call["arguments"] += fragment.function.arguments or ""
            if text:
                await sink.speak(text)
            if not calls:
                break
            messages.append(
                {
                    "role": "assistant",
                    "content": text or None,
                    "tool_calls": [
                        {
                            "id": c["id"],
                            "type": "function",
                            "function": {"name": c["name"], "arguments": c["arguments"]},
                        }
                        for c in calls.values()
                    ],
                }
            )
            for call in calls.values():
                if call["name"] != TOOL_NAME:
                    raise RuntimeError(f"unexpected tool {call['name']!r}")
                arguments = json.loads(call["arguments"])
                await anyio.sleep(TOOL_SECONDS)
                content = f"{arguments['city']}: 21 degrees {arguments['unit']}, sunny."
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})
        wall = time.perf_counter() - start
    finally:
        await client.close()
    if sink.text.strip() != (FILLER + ANSWER).strip():
        raise RuntimeError(f"sequential turn went wrong: {sink.text!r}")
    return wall


async def pipecat_turn(base_url: str, tag: str, text_aggregation: str = "sentence") -> float:
    """Pipecat's pipeline; ``text_aggregation`` "token" streams each LLM token to the TTS (its
    ``TextAggregationMode.TOKEN``), "sentence" (its default) waits for whole sentences."""
    from bench.pipecat_harness import PipecatSession, PlaybackLog

    last_word = ANSWER.split()[-1]

    def answered(log: PlaybackLog) -> bool:
        said = any(last_word in text for _, text in log.tts_texts)
        return said and log.played_s >= log.generated_s - 1e-9

    model = scenario(tag, "weather", delay=CHUNK_DELAY).model
    bot = PipecatSession(
        base_url,
        model,
        seconds_per_char=SECONDS_PER_CHAR,
        tool_seconds=TOOL_SECONDS,
        text_aggregation=text_aggregation,
    )
    async with bot.running():
        start = time.perf_counter()
        with anyio.fail_after(30):
            await bot.turn(USER_TEXT, answered)
        wall = time.perf_counter() - start
    spoken = " ".join(text for _, text in bot.log.tts_texts)
    if spoken.split() != (FILLER + ANSWER).split() or len(bot.tool_started) != 1:
        raise RuntimeError(f"Pipecat turn went wrong: {spoken!r}, tool calls {len(bot.tool_started)}")
    return wall


async def ours_streaming_turn(base_url: str, tag: str) -> float:
    return await ours_turn(base_url, tag, STREAMING_CHUNK_CHARS)


async def ours_streaming_engine_turn(base_url: str, tag: str) -> float:
    return await ours_turn(base_url, tag, streaming_engine=True)


async def pipecat_token_turn(base_url: str, tag: str) -> float:
    return await pipecat_turn(base_url, tag, "token")


SEQUENTIAL = "sequential (bare SDK)"
PIPECAT = "Pipecat 1.14"
PIPECAT_TOKEN = "Pipecat 1.14, TOKEN mode"
OURS = "ours"
OURS_STREAMING = f"ours, chunks ≤ {STREAMING_CHUNK_CHARS} chars (for streaming TTS)"
OURS_STREAMING_ENGINE = "ours, streaming-text engine (default chunks, words as written)"


def measure_turn_wall(base_url: str, *, reps: int, pipecat: str | None) -> TurnWallResult:
    """``pipecat``: None to include Pipecat, else the reason it is left out."""
    contenders = {
        OURS: ours_turn,
        OURS_STREAMING: ours_streaming_turn,
        OURS_STREAMING_ENGINE: ours_streaming_engine_turn,
        SEQUENTIAL: sequential_turn,
    }
    if pipecat is None:
        contenders[PIPECAT] = pipecat_turn
        contenders[PIPECAT_TOKEN] = pipecat_token_turn

    async def run() -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        for name, turn in contenders.items():  # warm-up, dropped
            await turn(base_url, f"wall-warm-{name}")
        for rep in range(reps):
            for name, turn in contenders.items():
                samples[name].append(await turn(base_url, f"wall-{rep}-{name}"))
        return samples

    samples = anyio.run(run)
    notes = {PIPECAT: pipecat, PIPECAT_TOKEN: pipecat} if pipecat is not None else {}
    return TurnWallResult(reps, {n: summarize(v) for n, v in samples.items()}, ideal_seconds(), notes)
