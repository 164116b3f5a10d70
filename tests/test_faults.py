"""Fault injection: real openai SDK -> real loopback SSE server -> real Turn, one fault per case.

For every fault the turn must end (or recover) as documented in the case, and always:
- the caller hears something: the model's answer, or the fallback line instead of dead air;
- the conversation stays valid: every assistant tool call answered by a tool message right after it,
  no empty assistant message, no duplicate or orphan tool_call id;
- each round's usage is exactly what the server reported, or flagged ``estimated``;
- no asyncio task outlives the test (counted after the server is closed).

The table of faults tried and what was observed is printed at the end of the module's run (and written
to the path in ``VOICEAGENT_FAULTS_TABLE`` if set; docs/faults.md is generated that way).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from tests.conftest import fast_retry
from voiceagent.agent import Agent
from voiceagent.conversation import Message
from voiceagent.events import Usage
from voiceagent.llm import LLMClient
from voiceagent.results import TurnResult
from voiceagent.testing.checks import assert_valid_conversation, conversation_problems
from voiceagent.testing.openai_server import (
    Chunk,
    Drop,
    FakeOpenAIServer,
    Reply,
    _ChunkFactory,
    drip_reply,
    endless_text_reply,
    error_reply,
    text_reply,
    tool_reply,
)
from voiceagent.testing.sinks import FlakySink, RecordingSink
from voiceagent.tools import Tool, tool
from voiceagent.turn import INTERRUPTED_TOOL_RESULT, TurnConfig

GATE_TIMEOUT = 10.0  # a generous bound: only reached when the behaviour under test is broken
MAX_ATTEMPTS = 5
FALLBACK = "Sorry, I couldn't manage that just now. Could you try again?"
ANSWER = "It is sunny in Oslo today. Anything else?"
USAGE = Usage(321, 17, 64)  # every scripted stream reports this: anything else must be flagged estimated


# ---- what a case is ----------------------------------------------------------------------------

Check = Callable[[Agent, TurnResult], None]


@dataclass
class Env:
    """What a case scripts: the server's replies, the sink, tools and settings of the agent under test."""

    server: FakeOpenAIServer
    sink: RecordingSink = field(default_factory=RecordingSink)
    tools: list[Tool] = field(default_factory=list)
    max_rounds: int = 4
    tool_timeout: float = 10.0
    llm_timeout: float = 30.0
    base_url: str | None = None
    turn_config: dict[str, Any] = field(default_factory=dict)  # more TurnConfig fields
    cleanups: list[Callable[[], None]] = field(default_factory=list)


@dataclass(frozen=True)
class Fault:
    id: str
    fault: str
    expected: str
    heard: str  # "answer" | "fallback" | "nothing" (the sink itself is broken for good)
    script: Callable[[Env], Check]


CASES: list[Fault] = []


def fault(id: str, what: str, expected: str, heard: str = "fallback") -> Callable[[Any], Any]:
    def register(script: Callable[[Env], Check]) -> Callable[[Env], Check]:
        CASES.append(Fault(id, what, expected, heard, script))
        return script

    return register


def answer(text: str = ANSWER, **kwargs: Any) -> Reply:
    return text_reply(text, pieces=8, usage=USAGE, **kwargs)


def tool_call(*calls: tuple[str, dict[str, Any]], filler: str | None = "Let me check.") -> Reply:
    return tool_reply(list(calls), filler=filler, usage=USAGE)


def chunks(reply: Reply) -> list[dict[str, Any]]:
    return [e.data for e in reply.events if isinstance(e, Chunk) and isinstance(e.data, dict)]


def from_chunks(*items: dict[str, Any] | str) -> Reply:
    return Reply(events=tuple(Chunk(i) for i in items))


def cut_after(reply: Reply, count: int) -> Reply:
    """The reply's first ``count`` events, then the socket dropped."""
    return dataclasses.replace(reply, events=(*reply.events[:count], Drop()))


def weather_tool() -> Tool:
    @tool
    async def get_weather(city: str) -> str:
        """Current weather for a city."""
        return f"{city}: 18 C, sunny"

    return get_weather


def history_of(agent: Agent) -> list[Message]:
    return list(agent.conversation.history)


def tool_messages(agent: Agent) -> list[Message]:
    return [m for m in agent.conversation.history if m["role"] == "tool"]


# ---- LLM HTTP faults ---------------------------------------------------------------------------


@fault(
    "503-storm-recovers",
    "HTTP 503 on 4 attempts, then a stream",
    "retried with backoff; answered",
    heard="answer",
)
def _503_storm_recovers(env: Env) -> Check:
    env.server.enqueue(*[error_reply(503, "overloaded")] * 4, answer())

    def check(agent: Agent, result: TurnResult) -> None:
        assert len(env.server.requests) == MAX_ATTEMPTS
        assert result.rounds[0].attempts == MAX_ATTEMPTS
        assert result.usage == USAGE and result.error is None

    return check


@fault("502-503-storm-recovers", "HTTP 502, 503, 502, then a stream", "retried; answered", heard="answer")
def _mixed_storm(env: Env) -> Check:
    env.server.enqueue(
        error_reply(502, "bad gw"), error_reply(503, "busy"), error_reply(502, "bad gw"), answer()
    )

    def check(agent: Agent, result: TurnResult) -> None:
        assert result.rounds[0].attempts == 4 and result.usage == USAGE

    return check


@fault("503-storm-exhausts", "HTTP 503 on every attempt", "5 attempts, then the fallback line")
def _503_exhausts(env: Env) -> Check:
    env.server.responder = lambda body: error_reply(503, "overloaded")

    def check(agent: Agent, result: TurnResult) -> None:
        assert len(env.server.requests) == MAX_ATTEMPTS
        assert result.error is not None and "HTTP 503" in result.error
        assert [m["role"] for m in history_of(agent)] == ["user"]
        assert result.usage.estimated

    return check


@fault("429-rate-limit", "HTTP 429 (RPM limit)", "not retried; fallback line")
def _429(env: Env) -> Check:
    env.server.enqueue(error_reply(429, "Rate limit exceeded"), answer())

    def check(agent: Agent, result: TurnResult) -> None:
        assert len(env.server.requests) == 1
        assert result.error is not None and "HTTP 429" in result.error

    return check


@fault("429-concurrency-limit", "HTTP 429 from the server's concurrency cap", "not retried; fallback line")
def _429_concurrency(env: Env) -> Check:
    env.server.concurrency_limit = 0

    def check(agent: Agent, result: TurnResult) -> None:
        assert len(env.server.requests) == 1
        assert result.error is not None and "Concurrency limit" in result.error

    return check


@fault("500-internal", "HTTP 500", "not retried (only 502/503 are); fallback line")
def _500(env: Env) -> Check:
    env.server.enqueue(error_reply(500, "boom"), answer())

    def check(agent: Agent, result: TurnResult) -> None:
        assert len(env.server.requests) == 1 and "HTTP 500" in (result.error or "")

    return check


@fault(
    "hangup-before-headers-recovers",
    "connection closed before the status line, twice",
    "retried; answered",
    heard="answer",
)
def _hangup_recovers(env: Env) -> Check:
    env.server.enqueue(Reply(hangup=True), Reply(hangup=True), answer())

    def check(agent: Agent, result: TurnResult) -> None:
        assert len(env.server.requests) == 3 and result.rounds[0].attempts == 3
        assert result.usage == USAGE

    return check


@fault("hangup-before-headers-exhausts", "connection closed before the status line, always", "fallback line")
def _hangup_exhausts(env: Env) -> Check:
    env.server.responder = lambda body: Reply(hangup=True)

    def check(agent: Agent, result: TurnResult) -> None:
        assert len(env.server.requests) == MAX_ATTEMPTS
        assert result.error is not None and "could not reach" in result.error

    return check


@fault("connection-refused", "nothing listens on the LLM port", "retried, then the fallback line")
def _refused(env: Env) -> Check:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env.base_url = f"http://127.0.0.1:{port}/v1"  # closed again: connections are refused

    def check(agent: Agent, result: TurnResult) -> None:
        assert result.error is not None and "could not reach" in result.error
        assert result.rounds[0].attempts == MAX_ATTEMPTS

    return check


# ---- mid-stream disconnects and stalls ---------------------------------------------------------


@fault(
    "drop-before-first-chunk",
    "socket dropped after the headers, before any chunk",
    "retried; answered",
    heard="answer",
)
def _drop_before_first(env: Env) -> Check:
    env.server.enqueue(Reply(events=(Drop(),)), answer())

    def check(agent: Agent, result: TurnResult) -> None:
        assert len(env.server.requests) == 2 and result.rounds[0].attempts == 2
        assert result.usage == USAGE and result.error is None

    return check


@fault("drop-before-first-chunk-always", "socket dropped before any chunk, every attempt", "fallback line")
def _drop_always(env: Env) -> Check:
    env.server.responder = lambda body: Reply(events=(Drop(),))

    def check(agent: Agent, result: TurnResult) -> None:
        assert len(env.server.requests) == MAX_ATTEMPTS
        assert result.error is not None and "before its first chunk" in result.error

    return check


@fault("drop-after-text", "socket dropped after 4 content chunks", "not retried; words so far, then fallback")
def _drop_after_text(env: Env) -> Check:
    env.server.enqueue(cut_after(answer(), 4), answer())

    def check(agent: Agent, result: TurnResult) -> None:
        assert len(env.server.requests) == 1
        partial = result.rounds[0].content
        assert partial and ANSWER.startswith(partial) and partial != ANSWER
        assert env.sink.text == partial + " " + FALLBACK  # the fallback is spoken apart: spaced
        assert history_of(agent)[-1] == {"role": "assistant", "content": partial}
        assert result.usage.estimated and result.usage.completion_tokens > 0

    return check


@fault(
    "drop-after-finish",
    "socket dropped after the finish chunk: the usage chunk and [DONE] lost",
    "the answer is complete: no fallback; usage estimated",
    heard="answer",
)
def _drop_after_finish(env: Env) -> Check:
    reply = answer()
    env.server.enqueue(cut_after(reply, len(reply.events) - 1))  # all but the usage chunk

    def check(agent: Agent, result: TurnResult) -> None:
        assert env.sink.text == ANSWER and not result.fallback_spoken and result.error is None
        assert result.usage.estimated and len(env.server.requests) == 1

    return check


@fault(
    "drop-after-tool-dispatched",
    "socket dropped after a tool call's arguments completed",
    "the tool runs; the next round answers with its result",
    heard="answer",
)
def _drop_after_tool(env: Env) -> Check:
    env.tools.append(weather_tool())
    reply = tool_call(("get_weather", {"city": "Oslo"}))
    last_argument = len(reply.events) - 2  # before the finish chunk and the usage chunk
    env.server.enqueue(cut_after(reply, last_argument), answer())

    def check(agent: Agent, result: TurnResult) -> None:
        assert [c.result for c in result.tool_calls] == ["Oslo: 18 C, sunny"]
        assert len(result.rounds) == 2
        assert result.rounds[0].usage.estimated and result.rounds[1].usage == USAGE
        assert "Oslo: 18 C, sunny" in json.dumps(env.server.requests[1].body["messages"][-1])

    return check


@fault("drop-mid-tool-arguments", "socket dropped inside a tool call's arguments", "call never run; fallback")
def _drop_mid_args(env: Env) -> Check:
    ran: list[str] = []

    @tool
    def book(city: str) -> str:
        """Book a table."""
        ran.append(city)
        return "booked"

    env.tools.append(book)
    reply = tool_call(("book", {"city": "Oslo"}), filler=None)
    env.server.enqueue(cut_after(reply, 2))  # the call's first fragment and one argument piece

    def check(agent: Agent, result: TurnResult) -> None:
        assert ran == [] and result.tool_calls == ()
        assert [m["role"] for m in history_of(agent)] == ["user"]

    return check


# The SDK read timeout ends a stalled stream (its gate never opens), but the same timeout also covers every
# read of the healthy stream around it (the retried request, the chunks before the stall). 2 s, not 0.5 s:
# a loaded machine's pause must not time out the stream that is supposed to recover.
STALL_READ_TIMEOUT = 2.0


@fault(
    "stall-before-first-chunk",
    "headers sent, then silence past the read timeout",
    "retried; answered",
    heard="answer",
)
def _stall_before_first(env: Env) -> Check:
    env.llm_timeout = STALL_READ_TIMEOUT
    never = anyio.Event()
    env.server.enqueue(Reply(events=(Chunk({"choices": []}, gate=never),)), answer())

    def check(agent: Agent, result: TurnResult) -> None:
        assert len(env.server.requests) == 2 and result.usage == USAGE

    return check


@fault("stall-after-text", "silence mid-answer past the read timeout", "words so far, then fallback")
def _stall_after_text(env: Env) -> Check:
    env.llm_timeout = STALL_READ_TIMEOUT
    never = anyio.Event()
    reply = answer()
    events = list(reply.events)
    events[3] = dataclasses.replace(events[3], gate=never)
    env.server.enqueue(dataclasses.replace(reply, events=tuple(events)))

    def check(agent: Agent, result: TurnResult) -> None:
        assert len(env.server.requests) == 1
        assert "broke after 3 chunks" in (result.error or "")
        assert result.usage.estimated

    return check


# ---- malformed and out-of-order streams --------------------------------------------------------


@fault(
    "malformed-sse-lines",
    "non-object JSON, empty data, comments and unknown SSE fields between chunks",
    "non-chunks skipped and counted; answer intact",
    heard="answer",
)
def _malformed(env: Env) -> Check:
    reply = answer()
    junk = [
        Chunk("data: [1, 2]"),
        Chunk('data: "text"'),
        Chunk("data:"),
        Chunk(": keep-alive"),
        Chunk("event: ping\nid: 7\nretry: 100\n\n"),
    ]
    events = list(reply.events)
    env.server.enqueue(dataclasses.replace(reply, events=(events[0], *junk, *events[1:])))

    def check(agent: Agent, result: TurnResult) -> None:
        assert result.rounds[0].malformed_chunks == 3
        assert env.sink.text == ANSWER and result.usage == USAGE

    return check


@fault("error-event-mid-stream", "an error event inside the 200 stream after some text", "fallback line")
def _error_event(env: Env) -> Check:
    reply = answer()
    error = Chunk("data: " + json.dumps({"error": {"message": "model overloaded", "type": "server_error"}}))
    env.server.enqueue(dataclasses.replace(reply, events=(*reply.events[:3], error, *reply.events[3:])))

    def check(agent: Agent, result: TurnResult) -> None:
        assert "model overloaded" in (result.error or "")
        assert env.sink.text.endswith(FALLBACK) and result.usage.estimated

    return check


@fault("error-event-first", "an error event as the stream's first event", "not retried; fallback line")
def _error_first(env: Env) -> Check:
    env.server.enqueue(from_chunks('data: {"error": {"message": "bad model"}}'), answer())

    def check(agent: Agent, result: TurnResult) -> None:
        assert len(env.server.requests) == 1 and "bad model" in (result.error or "")

    return check


@fault(
    "tool-fragments-interleaved",
    "argument fragments of two parallel tool calls interleaved",
    "each call runs with its own arguments; answered",
    heard="answer",
)
def _interleaved(env: Env) -> Check:
    seen: list[tuple[str, str]] = []

    @tool
    async def get_weather(city: str) -> str:
        """Weather."""
        seen.append(("weather", city))
        return "sunny"

    @tool
    async def get_time(tz: str) -> str:
        """Time."""
        seen.append(("time", tz))
        return "10:00"

    env.tools += [get_weather, get_time]
    f = _ChunkFactory("electron")

    def frag(index: int, arguments: str, name: str | None = None) -> dict[str, Any]:
        call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
        if name:
            call.update(id=f"call_{name}", type="function")
            call["function"]["name"] = name
        return f.chunk({"tool_calls": [call]})

    env.server.enqueue(
        from_chunks(
            frag(0, "", "get_weather"),
            frag(1, "", "get_time"),
            frag(0, '{"city": '),
            frag(1, '{"tz": '),
            frag(0, '"Oslo"}'),
            frag(1, '"CET"}'),
            f.chunk(None, "tool_calls", omit_delta=True),
            f.usage(USAGE),
        ),
        answer(),
    )

    def check(agent: Agent, result: TurnResult) -> None:
        assert sorted(seen) == [("time", "CET"), ("weather", "Oslo")]
        assert [m["content"] for m in tool_messages(agent)] == ["sunny", "10:00"]

    return check


@fault(
    "usage-before-content",
    "the usage chunk arrives before any content",
    "usage exact; answered",
    heard="answer",
)
def _usage_first(env: Env) -> Check:
    c = chunks(answer())
    env.server.enqueue(from_chunks(c[-1], *c[:-1]))

    def check(agent: Agent, result: TurnResult) -> None:
        assert result.usage == USAGE and env.sink.text == ANSWER

    return check


@fault(
    "finish-before-content",
    "finish_reason arrives before the content",
    "late content still spoken and recorded",
    heard="answer",
)
def _finish_first(env: Env) -> Check:
    c = chunks(answer())
    env.server.enqueue(from_chunks(c[-2], *c[:-2], c[-1]))

    def check(agent: Agent, result: TurnResult) -> None:
        assert result.rounds[0].finish_reason == "stop"
        assert history_of(agent)[-1] == {"role": "assistant", "content": ANSWER}

    return check


@fault("empty-answer", "a stream with no content and no tool call", "fallback line, not silence")
def _empty(env: Env) -> Check:
    env.server.enqueue(text_reply("", usage=USAGE))

    def check(agent: Agent, result: TurnResult) -> None:
        assert result.usage == USAGE and result.error is None
        assert [m["role"] for m in history_of(agent)] == ["user"]

    return check


@fault("no-usage-chunk", "the server ignores include_usage", "usage estimated and flagged", heard="answer")
def _no_usage(env: Env) -> Check:
    env.server.enqueue(from_chunks(*chunks(answer())[:-1]))

    def check(agent: Agent, result: TurnResult) -> None:
        assert result.usage.estimated and result.usage.completion_tokens > 0
        assert result.error is None

    return check


@fault(
    "tool-calls-without-ids",
    "two tool calls with no ids (and one repeated id in a second stream)",
    "distinct ids made up; every call answered",
    heard="answer",
)
def _no_ids(env: Env) -> Check:
    env.tools.append(weather_tool())
    f = _ChunkFactory("electron")

    def call(index: int, call_id: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "index": index,
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        }
        if call_id:
            body["id"] = call_id
        return f.chunk({"tool_calls": [body]})

    env.server.enqueue(
        from_chunks(call(0, None), call(1, None), f.chunk(None, "tool_calls"), f.usage(USAGE)),
        from_chunks(call(0, "same"), call(1, "same"), f.chunk(None, "tool_calls"), f.usage(USAGE)),
        answer(),
    )

    def check(agent: Agent, result: TurnResult) -> None:
        ids = [m["tool_call_id"] for m in tool_messages(agent)]
        assert ids == ["call_0", "call_1", "same", "same_1"]

    return check


# ---- tool faults -------------------------------------------------------------------------------


@fault("tool-raises", "a tool raises", "error tool message; the model answers", heard="answer")
def _tool_raises(env: Env) -> Check:
    @tool
    def lookup(order: str) -> str:
        """Look up an order."""
        raise RuntimeError("database down")

    env.tools.append(lookup)
    env.server.enqueue(tool_call(("lookup", {"order": "A1"})), answer())

    def check(agent: Agent, result: TurnResult) -> None:
        assert result.tool_calls[0].is_error and "database down" in tool_messages(agent)[0]["content"]

    return check


@fault(
    "tool-hangs-async",
    "an async tool never returns",
    "timed out; error tool message; answered",
    heard="answer",
)
def _tool_hangs(env: Env) -> Check:
    @tool(timeout=0.2)
    async def slow(q: str) -> str:
        """Slow."""
        await anyio.sleep_forever()
        return "never"

    env.tools.append(slow)
    env.server.enqueue(tool_call(("slow", {"q": "x"})), answer())

    def check(agent: Agent, result: TurnResult) -> None:
        assert tool_messages(agent)[0]["content"] == "Error: slow timed out after 0.2 s."

    return check


@fault(
    "tool-hangs-sync",
    "a sync tool blocks its thread",
    "abandoned at the runner's timeout; answered",
    heard="answer",
)
def _tool_blocks(env: Env) -> Check:
    release = threading.Event()
    env.cleanups.append(release.set)

    @tool
    def blocking(q: str) -> str:
        """Blocks."""
        release.wait(GATE_TIMEOUT)
        return "late"

    env.tools.append(blocking)
    env.tool_timeout = 0.2
    env.server.enqueue(tool_call(("blocking", {"q": "x"})), answer())

    def check(agent: Agent, result: TurnResult) -> None:
        assert "timed out" in tool_messages(agent)[0]["content"]

    return check


@fault(
    "tool-arguments-malformed",
    "a tool call's arguments are not valid JSON",
    "error message; answered",
    heard="answer",
)
def _bad_args(env: Env) -> Check:
    env.tools.append(weather_tool())
    f = _ChunkFactory("electron")
    fragment = {"index": 0, "id": "c1", "function": {"name": "get_weather", "arguments": '{"city": '}}
    env.server.enqueue(
        from_chunks(f.chunk({"tool_calls": [fragment]}), f.chunk(None, "tool_calls"), f.usage(USAGE)),
        answer(),
    )

    def check(agent: Agent, result: TurnResult) -> None:
        assert "not valid JSON" in tool_messages(agent)[0]["content"]

    return check


@fault(
    "tool-unknown",
    "the model calls a tool that does not exist",
    "error tool message; answered",
    heard="answer",
)
def _unknown_tool(env: Env) -> Check:
    env.tools.append(weather_tool())
    env.server.enqueue(tool_call(("get_wether", {"city": "Oslo"})), answer())

    def check(agent: Agent, result: TurnResult) -> None:
        assert 'unknown tool "get_wether"' in tool_messages(agent)[0]["content"]

    return check


@fault("tool-chain-too-long", "the model calls tools round after round", "stopped at max_rounds; fallback")
def _chain(env: Env) -> Check:
    env.tools.append(weather_tool())
    env.max_rounds = 3
    env.server.responder = lambda body: tool_call(("get_weather", {"city": "Oslo"}), filler=None)

    def check(agent: Agent, result: TurnResult) -> None:
        assert len(env.server.requests) == 3 and len(tool_messages(agent)) == 3
        assert result.error == "tool chain reached max_rounds=3"

    return check


@fault("http-error-after-tool", "HTTP 400 on the round after a tool ran", "tool result kept; fallback line")
def _error_after_tool(env: Env) -> Check:
    env.tools.append(weather_tool())
    env.server.enqueue(tool_call(("get_weather", {"city": "Oslo"})), error_reply(400, "context too long"))

    def check(agent: Agent, result: TurnResult) -> None:
        assert [m["role"] for m in history_of(agent)] == ["user", "assistant", "tool"]
        assert env.sink.text == "Let me check. " + FALLBACK
        assert "context too long" in (result.error or "")

    return check


# ---- TTS faults ----------------------------------------------------------------------------------


@fault(
    "tts-drops-mid-utterance",
    "the TTS sink raises mid-utterance, then reconnects",
    "turn stopped; heard words kept; fallback line",
)
def _tts_drop(env: Env) -> Check:
    env.sink = FlakySink(fail_at=2, played_before_failure=3)
    env.server.enqueue(text_reply(ANSWER, pieces=12, usage=USAGE))

    def check(agent: Agent, result: TurnResult) -> None:
        assert "TTS sink failed" in (result.error or "") and not result.interrupted
        said = history_of(agent)[-1]["content"]
        assert ANSWER.startswith(said) and said != ANSWER

    return check


@fault(
    "tts-drops-during-tool",
    "the TTS sink raises on the filler while a tool runs",
    "tool cancelled and answered; fallback line",
)
def _tts_drop_tool(env: Env) -> Check:
    entered = anyio.Event()

    @tool
    async def slow(q: str) -> str:
        """Slow."""
        entered.set()
        await anyio.sleep_forever()
        return "never"

    env.tools.append(slow)
    env.sink = FlakySink(fail_at=1, gate=entered)
    env.server.enqueue(tool_call(("slow", {"q": "x"}), filler="Searching now."))

    def check(agent: Agent, result: TurnResult) -> None:
        assert tool_messages(agent)[0]["content"] == INTERRUPTED_TOOL_RESULT
        assert env.sink.spoken == [FALLBACK] and "TTS sink failed" in (result.error or "")

    return check


@fault(
    "tts-broken-for-good",
    "the TTS sink raises on every call",
    "turn ends cleanly with the error reported (no audio path left)",
    heard="nothing",
)
def _tts_dead(env: Env) -> Check:
    env.sink = FlakySink(fail_at=1, failures=-1)
    env.server.enqueue(answer())

    def check(agent: Agent, result: TurnResult) -> None:
        assert "TTS sink failed" in (result.error or "") and not result.fallback_spoken
        assert [m["role"] for m in history_of(agent)] == ["user"]  # nothing was heard

    return check


# ---- deadlines, caps and hostile tools (hardening) ---------------------------------------------


@fault(
    "headers-then-silence",
    "200 and headers, then nothing (the SDK read timeout is 30 s)",
    "first_token_timeout ends the round; stream closed; fallback line",
)
def _headers_then_silence(env: Env) -> Check:
    env.turn_config = {"first_token_timeout": 0.5}
    never = anyio.Event()
    env.server.enqueue(Reply(events=(Chunk({"choices": []}, gate=never),)))

    def check(agent: Agent, result: TurnResult) -> None:
        assert len(env.server.requests) == 1 and "first_token_timeout" in (result.error or "")

    return check


@fault(
    "slow-drip-before-first-token",
    "one byte every 50 ms, never a chunk (each byte resets the read timeout)",
    "first_token_timeout ends the round; fallback line",
)
def _drip_before_first(env: Env) -> Check:
    env.turn_config = {"first_token_timeout": 0.5}
    env.server.enqueue(drip_reply(0.05))

    def check(agent: Agent, result: TurnResult) -> None:
        assert len(env.server.requests) == 1 and "first_token_timeout" in (result.error or "")

    return check


@fault(
    "slow-drip-after-text",
    "a few words, then one byte every 50 ms forever",
    "round_timeout ends the round; words so far, then the fallback",
)
def _drip_after_text(env: Env) -> Check:
    env.turn_config = {"round_timeout": 1.5}
    words = [e for e in answer().events[:3] if isinstance(e, Chunk)]
    env.server.enqueue(drip_reply(0.05, after=words))

    def check(agent: Agent, result: TurnResult) -> None:
        assert "round_timeout" in (result.error or "") and result.usage.estimated
        assert history_of(agent)[1]["content"] == result.rounds[0].content != ""

    return check


@fault(
    "endless-answer",
    "content deltas forever, as fast as they are read",
    "cut at max_round_chars; stream closed; the words that fit, then the fallback",
)
def _endless_answer(env: Env) -> Check:
    env.turn_config = {"max_round_chars": 400}
    env.server.enqueue(endless_text_reply())

    def check(agent: Agent, result: TurnResult) -> None:
        assert "max_round_chars=400" in (result.error or "")
        assert history_of(agent)[1]["content"] == "blah " * 80 == result.rounds[0].content

    return check


@fault(
    "tool-raises-system-exit",
    "a sync tool raises SystemExit (argparse inside a tool)",
    "error tool message; the process and the turn go on; answered",
    heard="answer",
)
def _tool_system_exit(env: Env) -> Check:
    @tool
    def cli(args: str) -> str:
        """Run a command line."""
        raise SystemExit(2)

    env.tools.append(cli)
    env.server.enqueue(tool_call(("cli", {"args": "--help"})), answer())

    def check(agent: Agent, result: TurnResult) -> None:
        assert tool_messages(agent)[0]["content"] == "Error: cli failed: SystemExit: 2"

    return check


@fault(
    "tool-raises-cancelled-error",
    "an async tool raises CancelledError by itself (nobody cancelled the turn)",
    "error tool message; the user's message kept; answered",
    heard="answer",
)
def _tool_cancelled_itself(env: Env) -> Check:
    @tool
    async def lookup(order: str) -> str:
        """Look up an order."""
        raise asyncio.CancelledError()

    env.tools.append(lookup)
    env.server.enqueue(tool_call(("lookup", {"order": "A1"})), answer())

    def check(agent: Agent, result: TurnResult) -> None:
        assert result.tool_calls[0].is_error and "CancelledError" in tool_messages(agent)[0]["content"]
        assert not result.interrupted

    return check


@fault(
    "tool-huge-result",
    "a tool returns 10 MB",
    "cut to 16,000 characters with a note; the next request stays small; answered",
    heard="answer",
)
def _tool_huge_result(env: Env) -> Check:
    @tool
    def dump() -> str:
        """Dump the table."""
        return "row\n" * 2_500_000

    env.tools.append(dump)
    env.server.enqueue(tool_call(("dump", {})), answer())

    def check(agent: Agent, result: TurnResult) -> None:
        content = tool_messages(agent)[0]["content"]
        assert len(content) < 16_200 and content.endswith("only the first 16,000 are shown]")
        assert len(json.dumps(env.server.requests[1].body)) < 40_000  # not 10 MB (HTTP 400 next)

    return check


@fault(
    "tool-nan-result",
    "a tool returns NaN and infinity",
    "valid JSON (null) in the tool message; answered",
    heard="answer",
)
def _tool_nan(env: Env) -> Check:
    @tool
    def sensor() -> dict[str, float]:
        """Read the sensor."""
        return {"temp": float("nan"), "max": float("inf")}

    env.tools.append(sensor)
    env.server.enqueue(tool_call(("sensor", {})), answer())

    def check(agent: Agent, result: TurnResult) -> None:
        assert tool_messages(agent)[0]["content"] == '{"temp": null, "max": null}'

    return check


# ---- the harness -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    case: Fault
    requests: int
    rounds: int
    heard: str
    fallback: bool
    usage: str
    leaked: int


ROWS: list[Row] = []


def _table(rows: list[Row]) -> str:
    lines = [
        "| fault | injected | documented behaviour | requests | rounds | caller heard | usage | leaked |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        heard = "fallback line" if r.fallback else ("the answer" if r.heard else "nothing (sink dead)")
        lines.append(
            f"| `{r.case.id}` | {r.case.fault} | {r.case.expected} | {r.requests} | {r.rounds} | {heard} "
            f"| {r.usage} | {r.leaked} |"
        )
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module", autouse=True)
def fault_table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not ROWS:
        return
    text = f"{len(ROWS)} faults tried\n\n" + _table(ROWS)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        for line in text.splitlines():
            reporter.write_line(line)
    target = os.environ.get("VOICEAGENT_FAULTS_TABLE")
    if target:
        header = (
            "# Fault injection: faults tried\n\n"
            "Generated by `VOICEAGENT_FAULTS_TABLE=docs/faults.md pytest tests/test_faults.py`:\n"
            "real openai SDK, real loopback SSE server, real Turn. Every row also asserts a valid\n"
            "conversation, usage exact or flagged estimated, and no asyncio task left after the server\n"
            "closed.\n\n"
        )
        Path(target).write_text(header + text)


def test_conversation_check_catches_what_servers_reject() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    user: Message = {"role": "user", "content": "hi"}
    assert conversation_problems([user, {"role": "assistant", "content": None, "tool_calls": [call]}])
    assert conversation_problems([user, {"role": "assistant", "content": None}])
    assert conversation_problems([user, {"role": "tool", "tool_call_id": "c1", "content": "x"}])
    twice = {"role": "assistant", "content": None, "tool_calls": [call, call]}
    answer_both = [{"role": "tool", "tool_call_id": "c1", "content": "x"}] * 2
    assert conversation_problems([user, twice, *answer_both])
    fine = [user, {"role": "assistant", "content": None, "tool_calls": [call]}, answer_both[0]]
    assert conversation_problems(fine) == []


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert {c.heard for c in CASES} <= {"answer", "fallback", "nothing"}


@pytest.mark.anyio
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_fault(case: Fault) -> None:
    before = set(asyncio.all_tasks())
    async with FakeOpenAIServer() as server:
        env = Env(server)
        check = case.script(env)
        llm = LLMClient(
            base_url=env.base_url or server.base_url,
            api_key="sk_test",
            retry=fast_retry(max_attempts=MAX_ATTEMPTS),
            timeout=env.llm_timeout,
        )
        agent = Agent(
            llm=llm,
            sink=env.sink,
            system_prompt="You are a concise phone assistant.",
            tools=env.tools,
            config=TurnConfig(max_rounds=env.max_rounds, fallback=FALLBACK, **env.turn_config),
            tool_timeout=env.tool_timeout,
        )
        try:
            with anyio.fail_after(GATE_TIMEOUT):
                result = await agent.respond("What's the weather in Oslo?")
        finally:
            for cleanup in env.cleanups:
                cleanup()
            await llm.aclose()
    # Tasks that were cancelled get one loop iteration to finish before they count as leaked.
    await anyio.lowlevel.checkpoint()
    leaked = set(asyncio.all_tasks()) - before

    history = history_of(agent)
    spoken = env.sink.text
    if case.heard == "answer":
        assert spoken.endswith(ANSWER) and not result.fallback_spoken, spoken
    elif case.heard == "fallback":
        assert spoken.endswith(FALLBACK) and result.fallback_spoken, spoken
    else:
        assert spoken == "" and result.error is not None
    assert history[0] == {"role": "user", "content": "What's the weather in Oslo?"}
    assert_valid_conversation(history)
    for r in result.rounds:
        assert r.usage == USAGE or r.usage.estimated, r
    assert result.usage.estimated == any(r.usage.estimated for r in result.rounds)
    assert server.in_flight == 0
    check(agent, result)
    assert not leaked, leaked
    ROWS.append(
        Row(
            case,
            len(server.requests),
            len(result.rounds),
            spoken,
            result.fallback_spoken,
            "estimated" if result.usage.estimated else "exact",
            len(leaked),
        )
    )
