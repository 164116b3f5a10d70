"""Replay a cassette: a local OpenAI-compatible server that serves the recorded stream, and checks every
request the agent sends against the recording.

``ReplayServer`` is a real HTTP/SSE server on 127.0.0.1 (``FakeOpenAIServer`` driven through its
``responder`` hook). The k-th request the agent sends is compared with the k-th recorded request
(messages, tools, params); when it differs the server answers HTTP 400 with a unified diff of the JSON
and records a ``ReplayMismatch`` (the pytest plugin turns it into a test failure). Otherwise it serves
the recorded chunks, with the recorded request id and timing divided by ``speed`` (``speed=0``: no
sleeps), and ends the stream as the recording did: ``[DONE]``, a dropped connection, or, for a stream
the agent hung up on (barge-in), a stream that stays open until the agent hangs up again.

Tools run for real by default; ``substitute_tools`` serves recorded results instead, per tool name.
``ReplaySTTSource`` replays the transcripts, ``replay_session`` drives a whole call through an agent.

``with server.in_thread():`` runs the server on its own event loop in its own thread instead: the pytest
fixture does that, so no task group of the server ever lives in the test's loop (pytest-asyncio runs a
fixture's setup and teardown in different tasks, which a task group held across the test cannot survive).
"""

from __future__ import annotations

import difflib
import json
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.from_thread
import anyio.to_thread

from voiceagent.cassette import (
    Cassette,
    CassetteWriter,
    Exchange,
    RequestRecord,
    SpeechRecord,
    STTRecord,
    redact,
)
from voiceagent.events import TurnEvent
from voiceagent.logs import get_logger
from voiceagent.recorder import Recorder, RecordingLLM, RecordingTTSSink
from voiceagent.results import TurnResult
from voiceagent.stt import SpeechEnded, SpeechStarted, STTEvent, Transcript
from voiceagent.testing.openai_server import Chunk, Drop, FakeOpenAIServer, Reply, error_envelope
from voiceagent.testing.tone_sink import ToneSink
from voiceagent.tool_runner import ToolResult, ToolRunner
from voiceagent.tts import TTSSink

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from voiceagent.agent import Agent
    from voiceagent.llm import LLMClient
    from voiceagent.turn import ChatStreamer

log = get_logger(__name__)

_RETRIED_STATUSES = (502, 503)


class ReplayMismatch(AssertionError):
    """The agent did something the recording did not: ``diff`` says what."""

    def __init__(self, message: str, *, exchange: int | None = None, diff: str = "") -> None:
        super().__init__(message)
        self.exchange = exchange
        self.diff = diff


# ---- comparing requests ------------------------------------------------------------------------


def request_view(body: Mapping[str, Any], params_keys: Collection[str] | None = None) -> dict[str, Any]:
    """What is compared: messages, tools and every other field (params), optionally only ``params_keys``."""
    params = {k: v for k, v in body.items() if k not in ("messages", "tools")}
    if params_keys is not None:
        params = {k: v for k, v in params.items() if k in params_keys}
    return {"messages": body.get("messages", []), "tools": body.get("tools") or [], "params": params}


def _lines(view: Mapping[str, Any]) -> list[str]:
    return json.dumps(view, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def request_diff(recorded: Mapping[str, Any], sent: Mapping[str, Any], *, label: str = "recorded") -> str:
    """A unified diff of two request views (empty when they are equal)."""
    return "\n".join(
        difflib.unified_diff(_lines(recorded), _lines(sent), f"{label}", "sent by the agent", lineterm="")
    )


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


# ---- the server ----------------------------------------------------------------------------------


class _CutGate:
    """Stands in for a chunk gate after the last recorded chunk of a stream the agent hung up on: it says
    the cut point was reached, then holds the stream open (what came next was never recorded)."""

    def __init__(self, reached: anyio.Event) -> None:
        self._reached = reached

    async def wait(self) -> None:
        self._reached.set()
        await anyio.sleep_forever()


class ReplayServer:
    """``async with ReplayServer(cassette, speed=0) as server:``, then point an LLMClient at ``base_url``.

    ``strict`` (default True) makes leaving the block raise the first unreported mismatch.
    """

    def __init__(
        self,
        cassette: Cassette | str | Path,
        *,
        speed: float = 1.0,
        allow_changed_tail: bool = False,
        substitute_tools: Collection[str] | bool = (),
        strict: bool = True,
    ) -> None:
        if speed < 0:
            raise ValueError(f"speed must be 0 (no sleeps) or positive, got {speed}")
        self.cassette = cassette if isinstance(cassette, Cassette) else Cassette.load(cassette)
        self.speed = speed
        self.allow_changed_tail = allow_changed_tail
        self.substitute_tools = substitute_tools
        self.strict = strict
        self.exchanges = self.cassette.exchanges
        self.mismatches: list[ReplayMismatch] = []
        self.served = 0  # recorded exchanges served so far
        self.tail_changes = 0
        self._fake = FakeOpenAIServer()
        self._accepted: dict[str, Any] = {}  # sent message (json) -> the recorded message it stands for
        self._last: tuple[str, Exchange] | None = None
        self._cuts: dict[int, anyio.Event] = {}
        self._loop_thread: int | None = None  # the thread whose event loop serves
        self._portal: anyio.from_thread.BlockingPortal | None = None  # set while running in_thread()

    # -- lifecycle --

    async def __aenter__(self) -> ReplayServer:
        await self._fake.__aenter__()
        self._fake.responder = self._respond
        self._loop_thread = threading.get_ident()
        return self

    @contextmanager
    def in_thread(self) -> Iterator[ReplayServer]:
        """Serve from a new thread with its own event loop until the block ends (blocks while it starts).

        Any event loop (or none) can then talk to ``base_url``; ``wait_for_cut`` works from any loop."""
        with ExitStack() as stack:
            portal = stack.enter_context(anyio.from_thread.start_blocking_portal())
            stack.enter_context(portal.wrap_async_context_manager(self))
            self._portal = portal
            stack.callback(setattr, self, "_portal", None)
            yield self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        result = await self._fake.__aexit__(exc_type, exc, tb)
        if self.strict and exc is None:
            self.check()
        return result

    @property
    def base_url(self) -> str:
        return self._fake.base_url

    @property
    def requests(self) -> list[dict[str, Any]]:
        return [r.body for r in self._fake.requests]

    def client(self, **kwargs: Any) -> LLMClient:
        """An ``LLMClient`` pointed at this server (no key needed: nothing leaves the machine)."""
        from voiceagent.llm import LLMClient
        from voiceagent.retry import RetryPolicy

        kwargs.setdefault("retry", RetryPolicy(base_delay=0.001, max_delay=0.002))
        return LLMClient(base_url=self.base_url, api_key="replay-needs-no-key", **kwargs)

    # -- reporting --

    def check(self) -> None:
        """Raise the first mismatch (with how many there were), if any."""
        __tracebackhide__ = True
        if self.mismatches:
            first = self.mismatches[0]
            more = (
                f"\n({len(self.mismatches) - 1} more mismatch(es) after this one)"
                if len(self.mismatches) > 1
                else ""
            )
            raise ReplayMismatch(str(first) + more, exchange=first.exchange, diff=first.diff)

    def take_mismatches(self) -> list[ReplayMismatch]:
        """The mismatches so far, marking them handled (a test that expects one takes it)."""
        taken, self.mismatches = self.mismatches, []
        return taken

    def assert_complete(self) -> None:
        """No mismatch, and the agent made every recorded request."""
        self.check()
        if self.served < len(self.exchanges):
            missing = self.exchanges[self.served]
            raise ReplayMismatch(
                f"{self.cassette.name}: the agent made {self.served} request(s); the recording has "
                f"{len(self.exchanges)} (next expected: request {missing.n}, turn {missing.request.turn})",
                exchange=missing.n,
            )

    async def wait_for_cut(self, n: int) -> None:
        """Return once every recorded chunk of exchange ``n`` (one the agent hung up on) was sent."""
        portal = self._portal
        if portal is None or threading.get_ident() == self._loop_thread:
            await self._cut_event(n).wait()
            return
        # From another loop: wait in the server's loop. If this side is cancelled, the worker thread is
        # left blocked until the portal closes, which cancels the wait and frees it.
        await anyio.to_thread.run_sync(portal.call, self.wait_for_cut, n, abandon_on_cancel=True)

    def _cut_event(self, n: int) -> anyio.Event:
        if n not in self._cuts:
            self._cuts[n] = anyio.Event()
        return self._cuts[n]

    # -- tools --

    def tool_runner(self, inner: ToolRunner) -> ToolRunner:
        """``inner``, or a runner serving recorded results for the tools named in ``substitute_tools``."""
        if not self.substitute_tools:
            return inner
        names = None if self.substitute_tools is True else set(self.substitute_tools)
        return ReplayToolRunner(
            inner, self.cassette, names, on_missing=self.mismatches.append, speed=self.speed
        )

    def attach(self, agent: Agent) -> Agent:
        """Apply ``substitute_tools`` to ``agent`` (its runner is wrapped in place)."""
        agent.runner = self.tool_runner(agent.runner)
        return agent

    # -- serving --

    async def _respond(self, body: dict[str, Any]) -> Reply:
        sent_key = _key(body)
        if self._last is not None and self._last[0] == sent_key and self._is_retried_failure(self._last[1]):
            return await self._reply(self._last[1])  # the client retries a recorded 502/503: same answer
        if self.served >= len(self.exchanges):
            return self._mismatch(
                None,
                f"{self.cassette.name}: the agent sent request {self.served + 1}, but the recording has only "
                f"{len(self.exchanges)}. The extra request:\n" + "\n".join(_lines(request_view(body))),
                "",
            )
        exchange = self.exchanges[self.served]
        diff = self._compare(exchange.request, body)
        if diff:
            return self._mismatch(
                exchange.n,
                f"{self.cassette.name}: request {exchange.n} (turn {exchange.request.turn}, round "
                f"{exchange.request.round}) differs from the recording:\n{diff}",
                diff,
            )
        self.served += 1
        self._last = (sent_key, exchange)
        return await self._reply(exchange)

    @staticmethod
    def _is_retried_failure(exchange: Exchange) -> bool:
        status = exchange.response.status if exchange.response else None
        return (status in _RETRIED_STATUSES) or (exchange.response is None and exchange.end is not None)

    def _mismatch(self, n: int | None, message: str, diff: str) -> Reply:
        mismatch = ReplayMismatch(message, exchange=n, diff=diff)
        self.mismatches.append(mismatch)
        log.error("%s", message)
        return Reply(status=400, body=error_envelope(message, "invalid_request_error"))

    def _compare(self, recorded: RequestRecord, body: dict[str, Any]) -> str:
        keys = None if recorded.source == "wire" else set(recorded.body) - {"messages", "tools"}
        want = request_view(recorded.body)
        messages = [self._accepted.get(_key(m), m) for m in body.get("messages", [])]
        # The recording was redacted when written; compare the live body redacted the same way.
        got = request_view(redact({**body, "messages": messages}), keys)
        if _key(want) == _key(got):
            return ""
        if self.allow_changed_tail and self._only_tail_changed(want, got):
            self._accepted[_key(got["messages"][-1])] = want["messages"][-1]
            self.tail_changes += 1
            log.info("replay: request %d has a changed last message (allowed)", recorded.n)
            return ""
        return request_diff(want, got, label=f"{self.cassette.name} request {recorded.n} (recorded)")

    @staticmethod
    def _only_tail_changed(want: dict[str, Any], got: dict[str, Any]) -> bool:
        w, g = want["messages"], got["messages"]
        return (
            _key(want["params"]) == _key(got["params"])
            and _key(want["tools"]) == _key(got["tools"])
            and len(w) == len(g) > 0
            and _key(w[:-1]) == _key(g[:-1])
        )

    def _scaled(self, seconds: float) -> float:
        return 0.0 if self.speed == 0 else max(0.0, seconds) / self.speed

    async def _reply(self, exchange: Exchange) -> Reply:
        response = exchange.response
        headers_at = response.t if response else 0.0
        delay = self._scaled(headers_at)
        if delay:
            await anyio.sleep(delay)  # time to headers (or to the error)
        request_id = response.request_id if response else None
        if response is not None and response.status != 200:
            body = response.error or error_envelope(f"HTTP {response.status}", "server_error")
            return Reply(status=response.status, body=body, request_id=request_id)
        events: list[Chunk | Drop] = []
        previous = headers_at
        for chunk in exchange.chunks:
            events.append(Chunk(chunk.data, delay=self._scaled(chunk.t - previous)))
            previous = chunk.t
        end = exchange.end
        if response is None or end is None:
            events.append(Drop())  # never got a response (connection error), or the recording broke off
        elif end.how == "dropped":
            events.append(Drop(delay=self._scaled(end.t - previous)))
        elif end.how == "cancelled":
            gate = cast(anyio.Event, _CutGate(self._cut_event(exchange.n)))
            events.append(Chunk({"never": "sent"}, gate=gate))
        elif end.how == "error":
            events.append(Chunk({"error": {"message": end.error or "error", "type": "server_error"}}))
        return Reply(events=tuple(events), request_id=request_id)


# ---- tools -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedToolResult:
    call_id: str
    name: str
    result: str
    is_error: bool
    seconds: float


def recorded_tool_results(cassette: Cassette) -> dict[str, RecordedToolResult]:
    """Tool results by call id: from ``tool`` records, else from the ``tool`` messages of later requests."""
    out: dict[str, RecordedToolResult] = {
        t.call_id: RecordedToolResult(
            t.call_id, t.name, t.result, t.is_error, max(0.0, t.finished - t.started)
        )
        for t in cassette.tools
    }
    names: dict[str, str] = {}
    for exchange in cassette.exchanges:
        for m in exchange.request.messages:
            for call in m.get("tool_calls") or ():
                names[call.get("id", "")] = call.get("function", {}).get("name", "")
            if m.get("role") == "tool" and m.get("tool_call_id") not in out:
                call_id = str(m.get("tool_call_id"))
                content = str(m.get("content") or "")
                out[call_id] = RecordedToolResult(
                    call_id, names.get(call_id, ""), content, content.startswith("Error"), 0.0
                )
    return out


class ReplayToolRunner(ToolRunner):
    """Serves recorded tool results for the tools in ``names`` (None: every tool); runs the others."""

    def __init__(
        self,
        inner: ToolRunner,
        cassette: Cassette,
        names: Collection[str] | None = None,
        *,
        on_missing: Callable[[ReplayMismatch], None] | None = None,
        speed: float = 0.0,
    ) -> None:
        super().__init__(inner.tools, default_timeout=inner.default_timeout)
        self.inner = inner
        self.names = None if names is None else frozenset(names)
        self.recorded = recorded_tool_results(cassette)
        self.cassette_name = cassette.name
        self.on_missing = on_missing
        self.speed = speed

    async def run(self, call_id: str, name: str, arguments: str) -> ToolResult:
        if self.names is not None and name not in self.names:
            return await self.inner.run(call_id, name, arguments)
        started = time.monotonic()
        recorded = self.recorded.get(call_id)
        if recorded is None or (recorded.name and recorded.name != name):
            message = f"{self.cassette_name}: no recorded result for tool call {call_id} ({name})"
            if self.on_missing is not None:
                self.on_missing(ReplayMismatch(message))
            return ToolResult(call_id, name, f"Error: {message}", True, started, time.monotonic())
        if self.speed and recorded.seconds:
            await anyio.sleep(recorded.seconds / self.speed)
        return ToolResult(call_id, name, recorded.result, recorded.is_error, started, time.monotonic())


# ---- STT -------------------------------------------------------------------------------------------


class ReplaySTTSource:
    """An STTSource that yields the recorded transcripts and speech events, at recorded pace / ``speed``
    (0: at once). A cassette without ``stt`` records yields each turn's user text as a final transcript."""

    def __init__(self, cassette: Cassette, *, speed: float = 0.0) -> None:
        self.cassette = cassette
        self.speed = speed
        self.audio_bytes = 0
        self.closed = False
        records = cassette.transcripts
        self.records: list[STTRecord] = records or [
            STTRecord("transcript", t.at, t.user_text, True) for t in cassette.turns
        ]

    async def send_audio(self, pcm: bytes) -> None:
        self.audio_bytes += len(pcm)  # the caller's audio is not needed: the words are recorded

    async def events(self) -> AsyncIterator[STTEvent]:
        previous = self.records[0].at if self.records else 0.0
        for record in self.records:
            if self.closed:
                return
            if self.speed and record.at > previous:
                await anyio.sleep((record.at - previous) / self.speed)
            previous = record.at
            if record.kind == "transcript":
                yield Transcript(record.text, record.is_final)
            elif record.kind == "speech_started":
                yield SpeechStarted(record.at)
            else:
                yield SpeechEnded(record.at)

    async def aclose(self) -> None:
        self.closed = True


# ---- speech ----------------------------------------------------------------------------------------


def _speech_line(record: SpeechRecord, audio: bool) -> str:
    if not audio or record.audio_sha256 is None:
        return repr(record.text)
    return f"{record.text!r}  audio sha256={record.audio_sha256[:16]} {record.audio_seconds}s"


def assert_speech_matches(
    cassette: Cassette, spoken: RecordingTTSSink | Sequence[SpeechRecord], *, audio: bool = True
) -> None:
    """The texts handed to the sink (and, with ``audio``, their audio digests) equal the recording's."""
    got = list(spoken.records if isinstance(spoken, RecordingTTSSink) else spoken)
    want = cassette.speech
    compare_audio = audio and all(r.audio_sha256 for r in want) and all(r.audio_sha256 for r in got)
    want_lines = [_speech_line(r, compare_audio) for r in want]
    got_lines = [_speech_line(r, compare_audio) for r in got]
    if want_lines != got_lines:
        diff = "\n".join(
            difflib.unified_diff(want_lines, got_lines, "recorded speech", "replayed speech", lineterm="")
        )
        raise AssertionError(f"{cassette.name}: the spoken text differs from the recording:\n{diff}")


# ---- a whole session -------------------------------------------------------------------------------

AgentFactory = Callable[["ChatStreamer", TTSSink], "Agent"]


@dataclass
class ReplayRun:
    """What replaying a session produced; ``recording`` is the replay itself, recorded (for timelines)."""

    results: list[TurnResult]
    events: list[list[TurnEvent]]
    recording: Cassette
    sink: RecordingTTSSink
    mismatches: list[ReplayMismatch] = field(default_factory=list)


async def replay_session(
    server: ReplayServer, build_agent: AgentFactory, *, sink: TTSSink | None = None, stt_speed: float = 0.0
) -> ReplayRun:
    """Drive the recorded call through ``build_agent(llm, sink)`` against ``server``.

    User utterances come from a ``ReplaySTTSource``; a turn the recording shows interrupted is cut at the
    same point: once the server has sent the recorded chunks and the sink has spoken what was heard.
    """
    cassette = server.cassette
    recorder = Recorder(CassetteWriter.memory(meta={"replay_of": cassette.name, **cassette.meta}))
    recording_sink = recorder.wrap_sink(sink or ToneSink())
    recording_llm = recorder.wrap_llm(server.client())
    agent = build_agent(recording_llm, recording_sink)
    agent.runner = recorder.wrap_runner(server.tool_runner(agent.runner))
    turns = cassette.turns
    utterances = [
        e.text
        async for e in ReplaySTTSource(cassette, speed=stt_speed).events()
        if isinstance(e, Transcript) and e.is_final
    ]
    results: list[TurnResult] = []
    all_events: list[list[TurnEvent]] = []
    for index, text in enumerate(utterances, start=1):
        events: list[TurnEvent] = []

        def on_event(event: TurnEvent, events: list[TurnEvent] = events) -> None:
            events.append(event)
            recorder.on_event(event)

        turn = agent.new_turn(on_event)
        recorded = turns[index - 1] if index <= len(turns) else None
        if recorded is not None and recorded.interrupted:
            result = await _run_interrupted(
                server, turn, text, recorded.turn, recording_llm, recording_sink, len(recorded.heard_text)
            )
        else:
            result = await turn.run(text)
        agent.results.append(result)
        results.append(result)
        all_events.append(events)
    return ReplayRun(results, all_events, recorder.writer.cassette(), recording_sink, list(server.mismatches))


async def _run_interrupted(
    server: ReplayServer,
    turn: Any,
    text: str,
    turn_index: int,
    llm: RecordingLLM,
    sink: RecordingTTSSink,
    heard_chars: int,
) -> TurnResult:
    """Cut where the recording was cut: the agent has every chunk the recording got before the caller
    spoke, and the sink has spoken what the caller heard."""
    cut = [
        e.n for e in server.exchanges if e.request.turn == turn_index and e.end and e.end.how == "cancelled"
    ]
    # Chunks the agent had received, over the whole session, when the caller cut in.
    chunks_at_cut = sum(len(e.chunks) for e in server.exchanges if cut and e.n <= cut[-1])
    box: list[TurnResult] = []
    chars_before = len(sink.text)

    async with anyio.create_task_group() as tg:

        async def run() -> None:
            box.append(await turn.run(text))
            tg.cancel_scope.cancel()  # ended on its own (e.g. a mismatch): nothing left to cut

        async def barge_in() -> None:
            if cut:
                await server.wait_for_cut(cut[-1])
                await llm.wait_for_chunks(chunks_at_cut)
            await sink.wait_for_chars(chars_before + heard_chars)
            turn.cancel()

        tg.start_soon(run)
        tg.start_soon(barge_in)
    return box[0]
