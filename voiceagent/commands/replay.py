"""Replay a recorded session through the real pipeline and print its timeline.

With an agent factory (``--agent module:function``, or the cassette header's ``meta.agent``, e.g.
``voiceagent.examples.weather_bot:build_agent``), the factory's agent runs every recorded turn against a
local replay server: requests are checked against the recording, tools run for real
(``--substitute-tools`` serves the recorded results), barge-ins are cut where they were. The factory's
module is imported from the current folder first (``mybot:build_agent`` finds ./mybot.py), or give a
file: ``bots/mybot.py:build_agent``. Without one (or with ``--raw``), each recorded request is sent as
it was through ``LLMClient``: that replays the stream path only.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the heavy imports wait for run(): `voiceagent --help` stays instant
    from voiceagent.replay import ReplayServer
    from voiceagent.replay.cassette import Cassette
    from voiceagent.replay.timeline import Timeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "cassette", help="a .jsonl cassette, or a shipped one by name: weather, parallel_tools, barge_in"
    )
    parser.add_argument(
        "--speed", type=float, default=1.0, help="1 = recorded pace, 10 = ten times faster, 0 = no waiting"
    )
    parser.add_argument(
        "--agent", help="agent factory module:function (llm, sink) -> Agent; default: the cassette's"
    )
    parser.add_argument(
        "--recorded", action="store_true", help="print the recording's own timeline, without replaying it"
    )
    parser.add_argument(
        "--raw", action="store_true", help="send the recorded requests as they are (no agent)"
    )
    parser.add_argument("--substitute-tools", action="store_true", help="serve recorded tool results")
    parser.add_argument("--no-chunks", action="store_true", help="one line per round instead of per chunk")
    parser.add_argument("--html", type=Path, help="also write the timeline as an HTML page")
    parser.add_argument("--png", type=Path, help="also write the timeline as a PNG (needs matplotlib)")


def run(args: argparse.Namespace) -> int:
    import anyio

    from voiceagent.commands import cassettes
    from voiceagent.replay.cassette import CassetteError
    from voiceagent.replay.timeline import Timeline

    try:
        cassette = cassettes.load(args.cassette)
    except CassetteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.speed < 0:
        print("error: --speed must be 0 or more", file=sys.stderr)
        return 2
    spec = None if args.raw else (args.agent or cassette.meta.get("agent"))
    try:
        factory = load_factory(spec) if spec else None
    except (ImportError, AttributeError, ValueError) as exc:
        print(f"error: cannot load the agent factory {spec!r}: {exc}", file=sys.stderr)
        return 2
    if args.recorded:
        problems: list[str] = []
        timeline = Timeline.from_cassette(cassette)
        print(f"{cassette.name}: {len(cassette.exchanges)} request(s), as recorded\n")
    else:
        how = spec or "the recorded requests (no agent)"
        print(
            f"{cassette.name}: {len(cassette.exchanges)} request(s), "
            f"replayed with {how}, speed {args.speed:g}\n",
            flush=True,
        )
        timeline, problems = anyio.run(_replay, cassette, factory, args.speed, args.substitute_tools)
    print(timeline.format_text(chunks=not args.no_chunks), end="")
    if args.html:
        args.html.write_text(timeline.to_html(title=f"voiceagent replay {cassette.name}"), encoding="utf-8")
        print(f"\nwrote {args.html}")
    if args.png:
        try:
            timeline.to_png(args.png)
            print(f"wrote {args.png}")
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    for problem in problems:
        print(f"\nREPLAY MISMATCH: {problem}", file=sys.stderr)
    return 1 if problems else 0


def load_factory(spec: str) -> Callable[..., Any]:
    """``package.module:function`` (also found from the current directory) or ``path/file.py:function``."""
    target, sep, attr = spec.partition(":")
    if not sep or not attr:
        raise ValueError("expected module:function")
    if target.endswith(".py"):
        location = importlib.util.spec_from_file_location(Path(target).stem, target)
        if location is None or location.loader is None:
            raise ImportError(f"cannot import {target}")
        module = importlib.util.module_from_spec(location)
        location.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # the user's own bot module, as `python -m` would find it
        module = importlib.import_module(target)
    factory = getattr(module, attr)
    if not callable(factory):
        raise ValueError(f"{spec} is not callable")
    return factory  # type: ignore[no-any-return]


async def _replay(
    cassette: Cassette, factory: Callable[..., Any] | None, speed: float, substitute: bool
) -> tuple[Timeline, list[str]]:
    from voiceagent.replay import ReplayServer, replay_session
    from voiceagent.replay.timeline import Timeline

    async with ReplayServer(cassette, speed=speed, strict=False, substitute_tools=substitute) as server:
        if factory is not None:
            replayed = await replay_session(server, factory)
            timeline = Timeline.from_cassette(replayed.recording)
        else:
            timeline = await _replay_raw(server)
        problems = [str(m) for m in server.take_mismatches()]
        if not problems and server.served < len(server.exchanges):
            problems.append(f"only {server.served} of {len(server.exchanges)} recorded requests were made")
    return timeline, problems


async def _replay_raw(server: ReplayServer) -> Timeline:
    from voiceagent.logs import log_context
    from voiceagent.replay.cassette import CassetteWriter
    from voiceagent.replay.recorder import RecordingLLM
    from voiceagent.replay.timeline import Timeline

    writer = CassetteWriter.memory()
    llm = RecordingLLM(server.client(), writer)
    for exchange in server.exchanges:
        body = dict(exchange.request.body)
        messages = body.pop("messages", [])
        tools = body.pop("tools", None)
        for key in ("model", "stream", "stream_options"):  # the client sets these itself
            body.pop(key, None)
        # The recorded turn and round, passed to the recorder as the running turn's events would.
        llm.position.turn = exchange.request.turn or 1
        llm.position.round = exchange.request.round or exchange.n
        try:
            with log_context(turn=llm.position.turn, round=llm.position.round):
                async with llm.stream(messages, tools=tools, **body) as stream:
                    async for _ in stream:
                        pass
        except Exception as exc:  # a recorded error or drop: it is part of the timeline
            print(f"request {exchange.n}: {exc}", file=sys.stderr)
    return Timeline.from_cassette(writer.cassette())
