"""Type to your agent in the terminal: streamed words, tool calls and results with timings, usage.

``voiceagent chat mybot:build_agent`` (live: Electron with SMALLEST_API_KEY, or ``--base-url`` for any
OpenAI-compatible server) or ``--replay CASSETTE`` (offline: the recorded session answers; type its
questions, which are shown at the start). ``--wav FILE`` also speaks the answers (espeak-ng) to a WAV.
An empty line or end of input (Ctrl-D) ends the chat.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from voiceagent.events import TurnEvent
    from voiceagent.results import TurnResult


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("factory", help="your agent factory, module:function (llm, sink) -> Agent")
    parser.add_argument("--replay", metavar="CASSETTE", help="offline: the recorded session answers")
    parser.add_argument("--speed", type=float, default=0.0, help="offline: 1 = recorded pace, 0 = no waiting")
    parser.add_argument("--base-url", help="an OpenAI-compatible server instead of Electron")
    parser.add_argument("--model", default="electron")
    parser.add_argument("--wav", type=Path, help="also speak the answers (espeak-ng) into this WAV")


def run(args: argparse.Namespace) -> int:
    import anyio

    from voiceagent.commands.replay import load_factory

    if args.speed < 0:
        print("error: --speed must be 0 or more", file=sys.stderr)
        return 2
    if not args.replay and not args.base_url and not os.environ.get("SMALLEST_API_KEY"):
        print("error: SMALLEST_API_KEY is not set: export it, give --base-url, or --replay", file=sys.stderr)
        return 2
    try:
        factory = load_factory(args.factory)
    except (ImportError, AttributeError, ValueError) as exc:
        print(f"error: cannot load the agent factory {args.factory!r}: {exc}", file=sys.stderr)
        return 2
    cassette = None
    if args.replay:
        from voiceagent.cassette import CassetteError
        from voiceagent.commands import cassettes

        try:
            cassette = cassettes.load(args.replay)
        except CassetteError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    result: int = anyio.run(_chat, factory, cassette, args)
    return result


class _TeeLLM:
    """A ChatStreamer that hands every text delta to ``on_text`` as it streams through."""

    def __init__(self, inner: Any, on_text: Callable[[str], None]) -> None:
        self.inner = inner
        self.on_text = on_text

    def stream(
        self, messages: Sequence[Any], *, tools: Sequence[dict[str, Any]] | None = None, **params: Any
    ) -> AbstractAsyncContextManager[Any]:
        return self._stream(messages, tools, params)

    @asynccontextmanager
    async def _stream(
        self, messages: Sequence[Any], tools: Sequence[dict[str, Any]] | None, params: dict[str, Any]
    ) -> AsyncIterator[Any]:
        async with self.inner.stream(messages, tools=tools, **params) as stream:
            yield _TeeStream(stream, self.on_text)


class _TeeStream:
    def __init__(self, inner: Any, on_text: Callable[[str], None]) -> None:
        self._inner = inner
        self._on_text = on_text

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)  # request_id, attempts, malformed_chunks

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        async for chunk in self._inner:
            for choice in chunk.get("choices") or ():
                text = (choice.get("delta") or {}).get("content") if isinstance(choice, dict) else None
                if isinstance(text, str) and text:
                    self._on_text(text)
            yield chunk


class _QuietSink:
    """Text only: every chunk counts as heard."""

    def __init__(self) -> None:
        self._chars = 0

    async def speak(self, text: str) -> None:
        self._chars += len(text)

    async def flush(self) -> None:
        pass

    async def cancel(self) -> None:
        pass

    @property
    def played_chars(self) -> int:
        return self._chars


class _Screen:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.in_words = False
        self.tool_started: dict[str, float] = {}

    def words(self, text: str) -> None:
        if not self.in_words:
            self.out.write("bot> ")
            self.in_words = True
        self.out.write(text)
        self.out.flush()

    def line(self, text: str) -> None:
        if self.in_words:
            self.out.write("\n")
            self.in_words = False
        self.out.write(text + "\n")
        self.out.flush()

    def event(self, event: TurnEvent) -> None:
        from voiceagent.events import CacheBusted, ToolFinished, ToolStarted

        if isinstance(event, ToolStarted):
            self.tool_started[event.call_id] = event.at
            self.line(f"  [tool] {event.name}({event.arguments})  started at {event.at:.2f} s")
        elif isinstance(event, ToolFinished):
            mark = "error" if event.is_error else "->"
            took = event.at - self.tool_started.pop(event.call_id, event.at)
            self.line(f"  [tool] {event.name} {mark} {event.result[:300]}  ({took * 1000:.0f} ms)")
        elif isinstance(event, CacheBusted):
            self.line(f"  [cache bust] round {event.round}: {event.reason}")

    def summary(self, result: TurnResult) -> None:
        from voiceagent.cost import turn_cost

        cost = turn_cost(result)
        usage = result.usage
        ttft = "-" if result.time_to_first_text is None else f"{result.time_to_first_text:.2f} s"
        ratio = "-" if cost.cache_hit_ratio is None else f"{cost.cache_hit_ratio:.0%}"
        ids = ", ".join(r for r in result.request_ids if r) or "-"
        self.line(
            f"  [turn] first text {ttft}, {len(result.rounds)} round(s), {result.total:.2f} s; "
            f"tokens {usage.prompt_tokens} prompt ({usage.cached_tokens} cached, {ratio}) + "
            f"{usage.completion_tokens} completion; request ids {ids}"
        )
        if result.error:
            self.line(f"  [error] {result.error}")


async def _chat(factory: Callable[..., Any], cassette: Any, args: argparse.Namespace) -> int:
    import anyio

    screen = _Screen(sys.stdout)
    async with AsyncExitStack() as stack:
        if cassette is not None:
            from voiceagent.cassette import Cassette
            from voiceagent.testing.replay import ReplayServer

            assert isinstance(cassette, Cassette)
            server = await stack.enter_async_context(ReplayServer(cassette, speed=args.speed, strict=False))
            llm: Any = server.client()
            screen.line(f"voiceagent chat: offline, recorded session {Path(cassette.name).name}")
            for turn in cassette.turns:
                screen.line(f"  recorded question: {turn.user_text}")
        else:
            from voiceagent.llm import LLMClient

            key = os.environ.get("SMALLEST_API_KEY")
            if args.base_url:
                llm = LLMClient(base_url=args.base_url, api_key=key or "none", model=args.model)
            else:
                llm = LLMClient.electron(model=args.model)
            stack.push_async_callback(llm.aclose)
            screen.line(f"voiceagent chat: live, {args.base_url or 'Electron'}")
        sink: Any = _QuietSink()
        if args.wav:
            from voiceagent.adapters.espeak import EspeakSink
            from voiceagent.audio_output import WavFileOutput

            output = await stack.enter_async_context(WavFileOutput(args.wav, 16000))
            sink = EspeakSink(output)
        agent = factory(_TeeLLM(llm, screen.words), sink)
        while True:
            screen.line("")
            sys.stdout.write("you> ")
            sys.stdout.flush()
            text = (await anyio.to_thread.run_sync(sys.stdin.readline)).strip()
            if not text:
                break
            result = await agent.respond(text, on_event=screen.event)
            screen.summary(result)
        if args.wav:
            screen.line(f"wrote {args.wav}")
    return 0
