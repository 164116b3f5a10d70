"""1. Framework overhead: client-process CPU per 1,000 streamed tokens, ours vs the floor and the bare SDK.

The server runs in another process (``bench.server``), so ``time.process_time()`` here counts only the
client: the HTTP client, the parse, and whatever the contender does with each token. Contenders run
interleaved (rotating order) in every repetition, so drift on a shared machine hits them alike.

Two regimes: **burst** (chunks written back to back: 2–3.5 tokens land in each socket read, a number that
varies from run to run) and **paced** (chunks ``PACED_DELAY`` apart, so each token is its own read, as at a
real model's rate: every token then pays a loop wake-up and a read). The paced regime is the one a call
lives in; burst is kept because it isolates the parse.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import anyio

from bench.contenders import (
    API_KEY,
    Consumer,
    bare_raw_lines,
    bare_typed,
    our_client,
    ours_stream,
    ours_turn,
    ours_turn_client_per_call,
    protocol_floor,
    sdk_client,
)
from bench.scenarios import scenario, token_words
from bench.stats import Summary, summarize
from voiceagent import http_stream
from voiceagent.llm import LLMClient

FLOOR = "true floor: asyncio Protocol + json.loads"
SDK_LINES = "bare SDK raw lines + json.loads"
TYPED = "bare SDK typed stream"
STREAM = "ours: LLMClient stream"
STREAM_SDK = "ours: LLMClient stream, SDK read path"
TURN = "ours: full turn"
TURN_SDK = "ours: full turn, SDK read path"
TURN_PER_CALL = "ours: full turn, client per call"
# The turn's per-token work in its task, a wake-up per chunk (read_callback=False; the default runs it in
# h1's read callback: bench/README.md, "in the read callback").
TURN_TASK = "ours: full turn, read_callback=False (the task loop)"
# The read-path choice (#17: a well-kept library unless the measured gap is large): aiohttp beside h1.
STREAM_AIO = "ours: LLMClient stream, aiohttp read path"
TURN_AIO = "ours: full turn, aiohttp read path"
AIOHTTP = http_stream.AVAILABLE
CONTENDERS = (FLOOR, SDK_LINES, TYPED, STREAM, STREAM_SDK, TURN, TURN_SDK, TURN_PER_CALL, TURN_TASK) + (
    (STREAM_AIO, TURN_AIO) if AIOHTTP else ()
)
PACED_DELAY = 0.004  # 4 ms between chunks: far apart enough that each is its own read, quick to run


@dataclass(frozen=True)
class OverheadResult:
    regime: str  # "burst" or "paced"
    delay: float
    tokens: int
    reps: int
    cpu_ms_per_1k: dict[str, Summary]  # contender -> CPU ms per 1,000 tokens
    ratio_to_floor: dict[str, Summary]  # contender -> per-repetition CPU ratio to the floor


async def interleaved_cpu(
    consumers: dict[str, Consumer], model: str, expected: str, tokens: int, reps: int
) -> dict[str, list[float]]:
    """CPU ms per 1,000 tokens of each consumer, ``reps`` times, all of them in every repetition in a
    rotating order (so a noisy moment of the machine hits each alike); each must return ``expected``."""
    samples: dict[str, list[float]] = {name: [] for name in consumers}
    names = list(consumers)
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            gc.collect()
            start = time.process_time()
            text = await consumers[name](model)
            cpu = time.process_time() - start
            if text.strip() != expected.strip():
                raise RuntimeError(f"{name} received the wrong text ({len(text)} chars)")
            samples[name].append(cpu * 1000 / tokens * 1000)
    return samples


async def _measure(base_url: str, tokens: int, reps: int, delay: float) -> dict[str, list[float]]:
    sdk = sdk_client(base_url)
    ours = our_client(base_url)
    ours_sdk = our_client(base_url, read_path="sdk")
    ours_task = LLMClient(base_url=base_url, api_key=API_KEY, timeout=60.0, read_callback=False)
    ours_aio = our_client(base_url, read_path="aiohttp") if AIOHTTP else None
    consumers: dict[str, Consumer] = {
        FLOOR: protocol_floor(base_url),
        SDK_LINES: bare_raw_lines(sdk),
        TYPED: bare_typed(sdk),
        STREAM: ours_stream(ours),
        STREAM_SDK: ours_stream(ours_sdk),
        TURN: ours_turn(ours),
        TURN_SDK: ours_turn(ours_sdk),
        TURN_PER_CALL: ours_turn_client_per_call(base_url),
        TURN_TASK: ours_turn(ours_task),
    }
    if ours_aio is not None:
        consumers[STREAM_AIO] = ours_stream(ours_aio)
        consumers[TURN_AIO] = ours_turn(ours_aio)
    expected = "".join(token_words(tokens))
    model = scenario("overhead", "text", tokens=tokens, delay=delay).model
    warm = scenario("warmup", "text", tokens=20, delay=0).model
    try:
        for consume in consumers.values():  # imports, pools and code paths warm before anything counts
            await consume(warm)
        samples = await interleaved_cpu(consumers, model, expected, tokens, reps)
    finally:
        await sdk.close()
        await ours.aclose()
        await ours_sdk.aclose()
        await ours_task.aclose()
        if ours_aio is not None:
            await ours_aio.aclose()
    return samples


def measure_overhead(
    base_url: str, *, tokens: int = 2000, reps: int = 9, delay: float = 0.0
) -> OverheadResult:
    samples = anyio.run(_measure, base_url, tokens, reps, delay)
    floor = samples[FLOOR]
    return OverheadResult(
        regime="paced" if delay else "burst",
        delay=delay,
        tokens=tokens,
        reps=reps,
        cpu_ms_per_1k={name: summarize(values) for name, values in samples.items()},
        ratio_to_floor={
            name: summarize([v / f for v, f in zip(values, floor, strict=True)])
            for name, values in samples.items()
        },
    )


SETUP_CONTENDERS = (FLOOR, STREAM, STREAM_SDK) + ((STREAM_AIO,) if AIOHTTP else ())


async def _measure_setup(base_url: str, calls: int, reps: int) -> dict[str, list[float]]:
    ours, ours_sdk = our_client(base_url), our_client(base_url, read_path="sdk")
    ours_aio = our_client(base_url, read_path="aiohttp") if AIOHTTP else None
    consumers: dict[str, Consumer] = {
        FLOOR: protocol_floor(base_url),
        STREAM: ours_stream(ours),
        STREAM_SDK: ours_stream(ours_sdk),
    }
    if ours_aio is not None:
        consumers[STREAM_AIO] = ours_stream(ours_aio)
    model = scenario("setup", "text", tokens=1, delay=0).model
    samples: dict[str, list[float]] = {name: [] for name in consumers}
    try:
        for consume in consumers.values():
            await consume(model)
        names = list(consumers)
        for rep in range(reps):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                gc.collect()
                start = time.process_time()
                for _ in range(calls):
                    await consumers[name](model)
                samples[name].append((time.process_time() - start) * 1000 / calls)
    finally:
        await ours.aclose()
        await ours_sdk.aclose()
        if ours_aio is not None:
            await ours_aio.aclose()
    return samples


def measure_setup(base_url: str, *, calls: int = 20, reps: int = 5) -> dict[str, Summary]:
    """CPU ms per 1-token call (request built and sent, head parsed, 3 events, closed; the bench server
    closes each connection, so a connect is in every call); ``"ours over floor"`` is the set-up ours
    adds to the least a call can cost, per repetition."""
    samples = anyio.run(_measure_setup, base_url, calls, reps)
    out = {name: summarize(values) for name, values in samples.items()}
    out["ours over floor"] = summarize([o - f for o, f in zip(samples[STREAM], samples[FLOOR], strict=True)])
    return out
