"""Bytecodes per paced token: a deterministic stand-in for CPU time on a noisy machine.

``python -m bench.bytecodes [--delay S]``: the client process's Python opcode events (``sys.settrace``
with ``f_trace_opcodes``), counted over a 50-token and a 150-token stream, chunks ``delay`` apart so each
token is its own read; (150-token count − 50-token count) / 100 is what one more token costs, set-up
and teardown cancelled out. C code (``json``'s scanner, the selector) is not counted, so this ranks
Python-level work only; the CPU rows of section 1 stay the measure of record.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from bench.contenders import Consumer, our_client, ours_stream, ours_turn, protocol_floor
from bench.opcodes import OpcodeCounter
from bench.scenarios import scenario, token_words
from bench.server import ServerProcess

SHORT, LONG = 50, 150


async def _count(consume: Consumer, model: str, expected: str) -> int:
    counter = OpcodeCounter()
    sys.settrace(counter)
    try:
        text = await consume(model)
    finally:
        sys.settrace(None)
    if text.strip() != expected.strip():
        raise RuntimeError(f"wrong text ({len(text)} chars)")
    return counter.count


async def _measure(base_url: str, delay: float) -> dict[str, float]:
    client = our_client(base_url)
    consumers = {
        "true floor: asyncio Protocol + json.loads": protocol_floor(base_url),
        "ours: LLMClient stream": ours_stream(client),
        "ours: full turn": ours_turn(client),
    }
    out: dict[str, float] = {}
    try:
        for name, consume in consumers.items():
            await consume(scenario("warmup", "text", tokens=20, delay=0).model)
            counts = []
            for tokens in (SHORT, LONG):
                model = scenario("bytecodes", "text", tokens=tokens, delay=delay).model
                counts.append(await _count(consume, model, "".join(token_words(tokens))))
            out[name] = (counts[1] - counts[0]) / (LONG - SHORT)
    finally:
        await client.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.015, help="seconds between chunks")
    args = parser.parse_args()
    with ServerProcess() as server:
        result = anyio.run(_measure, server.base_url, args.delay)
    floor = result["true floor: asyncio Protocol + json.loads"]
    print("| consumer | bytecodes per token | × floor |\n|---|---|---|")
    for name, value in result.items():
        print(f"| {name} | {value:.0f} | {value / floor:.2f}x |")


if __name__ == "__main__":
    main()
