"""The speech path's share of a paced token: ``python -m bench.speech_path [--task-loop]``.

The full turn of ``bench.callback_ab`` (the default, the read callback feeds the turn; ``--task-loop``:
``LLMClient(read_callback=False)``, the task reads each chunk) on the bench server, 50- and 150-token
streams 15 ms apart (a read per token), counted with ``sys.settrace`` opcode events as ``bench.bytecodes``
does. A bytecode is charged to the speech path when a frame of the turn's speaking code is on its stack:
``Turn._say``/``_say_all``/``_emit`` and everything in speaker.py, speech_lane.py, playback.py,
transcript.py and testing/sinks.py, so the anyio calls they make count, the event loop's pass that wakes the
speaker task does not. Also printed: event-loop passes per token (``BaseEventLoop._run_once`` calls). All
per token: (150-token count - 50-token count) / 100; on the bench stream a sentence, so one spoken chunk, is
8 tokens.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from types import FrameType
from typing import Any

import anyio

from bench.bytecodes import LONG, SHORT
from bench.callback_ab import _turn
from bench.contenders import API_KEY
from bench.scenarios import scenario
from bench.server import ServerProcess
from voiceagent.llm import LLMClient

_FILES = ("speaker.py", "speech_lane.py", "playback.py", "transcript.py", "sinks.py")
_TURN = ("Turn._say", "Turn._say_all", "Turn._emit")


def _speaking(frame: FrameType | None) -> bool:
    while frame is not None:
        code = frame.f_code
        path = code.co_filename
        name = path.rsplit("/", 1)[-1]
        if "voiceagent" in path and (name in _FILES or (name == "turn.py" and code.co_qualname in _TURN)):
            return True
        frame = frame.f_back
    return False


async def _count(consume: Any, model: str) -> tuple[Counter[str], Counter[str]]:
    totals: Counter[str] = Counter()
    by_function: Counter[str] = Counter()

    def local(speaking: bool) -> Any:
        def trace(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                totals["all"] += 1
                if speaking:
                    totals["speech"] += 1
                    code = frame.f_code
                    by_function[f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_qualname}"] += 1
            return trace

        return trace

    speech_trace, other_trace = local(True), local(False)

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if event != "call":
            return None
        frame.f_trace_opcodes = True
        if frame.f_code.co_qualname == "BaseEventLoop._run_once":
            totals["passes"] += 1
        return speech_trace if _speaking(frame) else other_trace

    sys.settrace(tracer)
    try:
        await consume(model)
    finally:
        sys.settrace(None)
    return totals, by_function


async def _measure(base_url: str, read_callback: bool, top: int) -> None:
    llm = LLMClient(base_url=base_url, api_key=API_KEY, timeout=60.0, read_callback=read_callback)
    try:
        consume = _turn(llm)
        await consume(scenario("warmup", "text", tokens=20, delay=0).model)
        runs = [
            await _count(consume, scenario("bc", "text", tokens=n, delay=0.015).model) for n in (SHORT, LONG)
        ]
    finally:
        await llm.aclose()

    def per_token(short: Counter[str], long: Counter[str], key: str) -> float:
        return (long[key] - short[key]) / (LONG - SHORT)

    (short, short_fn), (long, long_fn) = runs
    total, speech = per_token(short, long, "all"), per_token(short, long, "speech")
    passes = per_token(short, long, "passes")
    print(
        f"read_callback={read_callback}: {total:.0f} bytecodes per token, speech path {speech:.1f} "
        f"({speech * 8:.0f} per spoken chunk), loop passes {passes:.2f}"
    )
    rows = {name: per_token(short_fn, long_fn, name) for name in short_fn.keys() | long_fn.keys()}
    for name, value in sorted(rows.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{value:8.1f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-loop", action="store_true", help="read_callback=False: a wake-up per chunk")
    parser.add_argument("--top", type=int, default=30, help="functions to list")
    args = parser.parse_args()
    with ServerProcess() as server:
        anyio.run(_measure, server.base_url, not args.task_loop, args.top)


if __name__ == "__main__":
    main()
