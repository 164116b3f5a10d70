"""1. Framework overhead: client-process CPU per 1,000 streamed tokens, ours vs the bare openai SDK.

The server runs in another process (``bench.server``), so ``time.process_time()`` here counts only the
client: the HTTP client, the parse, and whatever the contender does with each token. Contenders run
interleaved (rotating order) in every repetition, so drift on a shared machine hits them alike.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import anyio

from bench.contenders import (
    Consumer,
    bare_raw_lines,
    bare_typed,
    our_client,
    ours_stream,
    ours_turn,
    sdk_client,
)
from bench.scenarios import scenario, token_words
from bench.stats import Summary, summarize

FLOOR = "bare SDK raw lines + json.loads"
CONTENDERS = (FLOOR, "bare SDK typed stream", "ours: LLMClient stream", "ours: full turn")


@dataclass(frozen=True)
class OverheadResult:
    tokens: int
    reps: int
    cpu_ms_per_1k: dict[str, Summary]  # contender -> CPU ms per 1,000 tokens
    ratio_to_floor: dict[str, Summary]  # contender -> per-repetition CPU ratio to the floor


async def _measure(base_url: str, tokens: int, reps: int) -> dict[str, list[float]]:
    sdk = sdk_client(base_url)
    ours = our_client(base_url)
    consumers: dict[str, Consumer] = {
        FLOOR: bare_raw_lines(sdk),
        "bare SDK typed stream": bare_typed(sdk),
        "ours: LLMClient stream": ours_stream(ours),
        "ours: full turn": ours_turn(ours),
    }
    expected = "".join(token_words(tokens))
    model = scenario("overhead", "text", tokens=tokens, delay=0).model
    warm = scenario("warmup", "text", tokens=20, delay=0).model
    samples: dict[str, list[float]] = {name: [] for name in consumers}
    try:
        for consume in consumers.values():  # imports, pools and code paths warm before anything counts
            await consume(warm)
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
    finally:
        await sdk.close()
        await ours.aclose()
    return samples


def measure_overhead(base_url: str, *, tokens: int = 2000, reps: int = 9) -> OverheadResult:
    samples = anyio.run(_measure, base_url, tokens, reps)
    floor = samples[FLOOR]
    return OverheadResult(
        tokens=tokens,
        reps=reps,
        cpu_ms_per_1k={name: summarize(values) for name, values in samples.items()},
        ratio_to_floor={
            name: summarize([v / f for v, f in zip(values, floor, strict=True)])
            for name, values in samples.items()
        },
    )
