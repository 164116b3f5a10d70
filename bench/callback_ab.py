"""The turn's per-token work in the read callback, A/B: ``python -m bench.callback_ab [--reps N]``.

Three consumers on the bench server, interleaved (rotating order) in every repetition, 300 tokens 4 ms
apart (a read per token): the true floor (asyncio ``Protocol`` + ``json.loads``), our full turn as it
is by default (``read_callback``: h1 push mode, ``LLMStream.feed_until``, the accumulator and the
chunker in the read callback) and the same turn with ``LLMClient(read_callback=False)`` (the ``async
for`` loop: a task wake-up per read). CPU is ``time.process_time()`` of this process (the server runs
in its own); bytecodes are ``bench.bytecodes``' count (deterministic). The load average is printed
before and after: compare within one run.
"""

from __future__ import annotations

import argparse
import os

import anyio

from bench.bytecodes import LONG, SHORT, _count
from bench.contenders import API_KEY, our_client, ours_turn, protocol_floor
from bench.overhead import interleaved_cpu
from bench.scenarios import scenario, token_words
from bench.server import ServerProcess
from bench.stats import summarize
from voiceagent.llm import LLMClient

FLOOR = "true floor: asyncio Protocol + json.loads"
CALLBACK = "ours: full turn, default (read_callback: the read callback feeds the turn)"
TASK = "ours: full turn, LLMClient(read_callback=False) (the task reads each chunk)"


async def _measure(base_url: str, reps: int, tokens: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    callback = our_client(base_url)
    client = LLMClient(base_url=base_url, api_key=API_KEY, timeout=60.0, read_callback=False)
    consumers = {
        FLOOR: protocol_floor(base_url),
        CALLBACK: ours_turn(callback),
        TASK: ours_turn(client),
    }
    expected = "".join(token_words(tokens))
    model = scenario("callback_ab", "text", tokens=tokens, delay=0.004).model
    bytecodes: dict[str, float] = {}
    try:
        for name, consume in consumers.items():
            await consume(scenario("warmup", "text", tokens=20, delay=0).model)
            counts = []
            for n in (SHORT, LONG):
                counts.append(
                    await _count(
                        consume, scenario("bc", "text", tokens=n, delay=0.015).model, "".join(token_words(n))
                    )
                )
            bytecodes[name] = (counts[1] - counts[0]) / (LONG - SHORT)
        samples = await interleaved_cpu(consumers, model, expected, tokens, reps)
    finally:
        await client.aclose()
        await callback.aclose()
    return samples, bytecodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=300)
    args = parser.parse_args()
    before = os.getloadavg()[0]
    with ServerProcess() as server:
        samples, bytecodes = anyio.run(_measure, server.base_url, args.reps, args.tokens)
    after = os.getloadavg()[0]
    floor = samples[FLOOR]
    print(
        f"load average {before:.1f} before, {after:.1f} after; "
        f"{args.reps} repetitions, {args.tokens} tokens 4 ms apart"
    )
    print("| consumer | CPU ms / 1k tokens | × floor (per repetition) | bytecodes per token | × floor |")
    print("|---|---|---|---|---|")
    for name, values in samples.items():
        ratio = summarize([v / f for v, f in zip(values, floor, strict=True)])
        print(
            f"| {name} | {summarize(values).fmt(' ms', 1)} | "
            f"{ratio.median:.2f}x ({ratio.low:.2f}–{ratio.high:.2f}) | "
            f"{bytecodes[name]:.0f} | {bytecodes[name] / bytecodes[FLOOR]:.2f}x |"
        )
    paired = summarize([c / t for c, t in zip(samples[CALLBACK], samples[TASK], strict=True)])
    print(
        f"\ncallback / task loop, per repetition: {paired.median:.2f}x ({paired.low:.2f}–{paired.high:.2f})"
    )


if __name__ == "__main__":
    main()
