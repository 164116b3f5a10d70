"""Hardening figures for docs/reliability.md: how long hostile LLM streams and tools hold a turn, with the
deadlines and caps on (the defaults) and, where it finishes at all, without them.

    .venv/bin/python -m bench.hardening           # about 2 minutes, mostly waiting on deadlines
    .venv/bin/python -m bench.hardening --quick   # short deadlines, ~15 s

Everything is real: the openai SDK, FakeOpenAIServer on 127.0.0.1, Turn, ToolRunner threads. Each row is
one run (these are waits on deadlines, not CPU measurements: the spread is the timer's, a few ms).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from voiceagent.agent import Agent
from voiceagent.llm import LLMClient
from voiceagent.retry import RetryPolicy
from voiceagent.testing.openai_server import (
    Chunk,
    FakeOpenAIServer,
    Reply,
    drip_reply,
    endless_text_reply,
    text_reply,
    tool_reply,
)
from voiceagent.testing.sinks import RecordingSink
from voiceagent.tool_runner import ToolRunner
from voiceagent.tools import tool
from voiceagent.turn import TurnConfig

Row = tuple[str, str, str]


async def _turn(reply: Reply, config: TurnConfig, bound: float) -> tuple[float, str]:
    """Seconds until the turn ended, and how (or that it was still going at ``bound``)."""
    async with FakeOpenAIServer() as server:
        server.enqueue(reply)
        llm = LLMClient(base_url=server.base_url, api_key="sk_bench", retry=RetryPolicy(max_attempts=1))
        agent = Agent(llm=llm, sink=RecordingSink(), system_prompt="Be brief.", config=config)
        started = time.perf_counter()
        with anyio.move_on_after(bound) as scope:
            result = await agent.respond("Hello?")
        elapsed = time.perf_counter() - started
        await llm.aclose()
    if scope.cancelled_caught:
        return elapsed, f"still no answer at {bound:.0f} s (cut by the bench)"
    how = "fallback line" if result.fallback_spoken else "answered"
    spoken = len(result.rounds[0].content) if result.rounds else 0
    error = (result.error or "").split(" (request_id=")[0]
    return elapsed, f"{how}; {spoken:,} model chars kept; error: {error}"


async def deadlines(quick: bool) -> list[Row]:
    drip_every = 0.2 if quick else 2.0  # the attack in the issue: one byte every 2 s
    on = TurnConfig(first_token_timeout=1.0, round_timeout=3.0) if quick else TurnConfig()
    off = TurnConfig(first_token_timeout=None, round_timeout=None, max_round_chars=10**12)
    bound_off = 5.0 if quick else 30.0
    words = [e for e in text_reply("It is sunny. And", pieces=2).events[:2] if isinstance(e, Chunk)]
    never = anyio.Event()
    cases: list[tuple[str, Callable[[], Reply]]] = [
        ("headers, then nothing", lambda: Reply(events=(Chunk({"choices": []}, gate=never),))),
        (f"1 byte every {drip_every:g} s, no chunk", lambda: drip_reply(drip_every)),
        (f"a few words, then 1 byte every {drip_every:g} s", lambda: drip_reply(drip_every, after=words)),
        ("an answer that never ends", endless_text_reply),
    ]
    rows: list[Row] = []
    label = (
        f"first_token_timeout={on.first_token_timeout:g} s, round_timeout={on.round_timeout:g} s, "
        f"max_round_chars={on.max_round_chars:,}"
    )
    for name, make in cases:
        seconds, how = await _turn(make(), on, bound_off * 3)
        rows.append((f"{name} ({label})", f"{seconds:.2f} s", how))
        if (
            name != "headers, then nothing"  # without deadlines: the SDK's 30 s read timeout per attempt
        ):
            seconds, how = await _turn(make(), off, bound_off)
            rows.append((f"{name} (no deadlines, no cap: before)", f"{seconds:.2f} s", how))
    return rows


async def thread_budget(quick: bool) -> list[Row]:
    """Another call's instant sync tool while one call has 40 sync tools stuck in threads."""
    stuck_for = 1.0 if quick else 10.0  # 10 s: the runner's default tool timeout
    release = threading.Event()

    @tool(timeout=stuck_for)
    def stuck() -> str:
        """Block."""
        release.wait(stuck_for * 4)
        return "late"

    @tool
    def instant() -> str:
        """Answer."""
        return "now"

    async def measure(shared: bool) -> float:
        busy = ToolRunner([stuck], max_threads=40 if shared else 8)
        other = ToolRunner([instant], max_threads=8)
        if shared:  # anyio's process-wide default: one 40-thread limiter for every call
            other.thread_limiter = busy.thread_limiter
        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(busy.run, f"a{i}", "stuck", "{}")
            await anyio.sleep(0.3)  # let them take their threads
            started = time.perf_counter()
            await other.run("b", "instant", "{}")
            elapsed = time.perf_counter() - started
            release.set()
        release.clear()
        return elapsed

    before, after = await measure(True), await measure(False)
    return [
        (
            "instant tool of call B, call A's 40 tools stuck (one 40-thread limiter: before)",
            f"{before:.3f} s",
            f"call A's tool timeout: {stuck_for:g} s",
        ),
        (
            "instant tool of call B, call A's 40 tools stuck (max_threads=8 per call: now)",
            f"{after * 1000:.1f} ms",
            "",
        ),
    ]


async def result_cap() -> list[Row]:
    @tool
    def dump() -> str:
        """Dump."""
        return "row\n" * 2_500_000

    rows: list[Row] = []
    for label, cap in (("no cap: before", 100_000_000), ("max_result_chars=16,000: now", 16_000)):
        async with FakeOpenAIServer() as server:
            server.enqueue(tool_reply([("dump", {})]), text_reply("Done."))
            llm = LLMClient(base_url=server.base_url, api_key="sk_bench")
            agent = Agent(
                llm=llm,
                sink=RecordingSink(),
                system_prompt="Be brief.",
                tools=[dump],
                max_tool_result_chars=cap,
            )
            await agent.respond("Dump it.")
            await llm.aclose()
            size = len(json.dumps(server.requests[1].body))
        rows.append((f"10 MB tool result, next request body ({label})", f"{size:,} bytes", ""))
    return rows


async def main(quick: bool) -> None:
    sections: list[Callable[[], Awaitable[list[Row]]]] = [
        lambda: deadlines(quick),
        lambda: thread_budget(quick),
        result_cap,
    ]
    rows: list[Row] = []
    for section in sections:
        rows += await section()
    print("| attack | turn / call held for | outcome |")
    print("|---|---|---|")
    for name, value, how in rows:
        print(f"| {name} | {value} | {how} |")


def run(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short deadlines and drips")
    args = parser.parse_args(argv)
    anyio.run(main, args.quick)


if __name__ == "__main__":
    run()
