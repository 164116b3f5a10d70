"""Recording a live session into a cassette: wrappers around the LLM client, the TTS sink and the STT
source that pass everything through unchanged and write what went by, and the turn's own records.

``Recorder(writer).attach(agent)`` wraps an agent's parts in place; ``await recorder.respond(agent, text)``
runs a turn through it. Apps that drive turns themselves pass ``on_event=recorder.on_event``: the turn's
events are where the recorder learns which turn and round is running (``RoundStarted`` carries both), and
they hand it each finished tool call (``ToolFinished``) and the turn's result (``TurnFinished``).

Speech: a sink that is a ``Speaker`` is tapped (``Speaker.tap``): each text's record has the digest and
duration of the audio its engine returned. Any other sink records its texts only.

A stream's chunk records are written a little behind the stream (until 64 characters of text follow them),
so that a secret the model streams split over chunks is masked in every chunk; each keeps its own time.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import anyio

from voiceagent.chat_stream import ChatStream, ChatStreamer
from voiceagent.errors import LLMError, LLMStatusError, StreamInterruptedError
from voiceagent.events import RoundStarted, SpeechQueued, ToolFinished, TurnEvent, TurnFinished
from voiceagent.logs import REDACTED, longest_secret, secret_spans
from voiceagent.replay.cassette import (
    CassetteWriter,
    ChunkRecord,
    EndHow,
    EndRecord,
    RequestRecord,
    ResponseRecord,
    SinkRecord,
    SpeechRecord,
    STTRecord,
    ToolRecord,
    TurnRecord,
)
from voiceagent.results import ToolCall, TurnResult
from voiceagent.speaker import Speaker
from voiceagent.stt import SpeechEnded, SpeechStarted, STTEvent, STTSource, Transcript
from voiceagent.tts import TTSSink

if TYPE_CHECKING:
    from voiceagent.agent import Agent


class Position:
    """Which turn and round is running, as the turn's events told the recorder: what records are tagged
    with. One per ``Recorder``, shared by its wrappers; a wrapper made alone has its own (never set)."""

    __slots__ = ("_fillers", "round", "turn")

    def __init__(self) -> None:
        self.turn: int | None = None
        self.round: int | None = None
        self._fillers: Counter[str] = Counter()  # our lines queued and not spoken yet (filler, fallback)

    def follow(self, event: TurnEvent) -> None:
        if isinstance(event, RoundStarted):
            if event.round == 1:
                self._fillers.clear()  # a discarded turn's never spoken
            self.turn, self.round = event.turn, event.round
        elif isinstance(event, SpeechQueued) and event.filler:
            self._fillers[event.text] += 1
        elif isinstance(event, TurnFinished):
            self.turn = self.round = None  # what follows (a greeting, say) belongs to no turn
            self._fillers.clear()

    def take_filler(self, text: str) -> bool:
        """Whether ``text``, being spoken now, is one of our lines the turn queued (not the model's)."""
        if self._fillers[text] <= 0:
            return False
        self._fillers[text] -= 1
        return True


# ---- LLM -----------------------------------------------------------------------------------------


class RecordingLLM:
    """A ChatStreamer that streams through ``inner`` and writes every request, chunk and ending."""

    def __init__(self, inner: ChatStreamer, writer: CassetteWriter, position: Position | None = None) -> None:
        self.inner = inner
        self.writer = writer
        self.position = position or Position()
        self.chunks_recorded = 0
        self._chunk_seen: anyio.Event | None = None

    def _on_chunk(self) -> None:
        self.chunks_recorded += 1
        if self._chunk_seen is not None:
            self._chunk_seen.set()
            self._chunk_seen = None

    async def wait_for_chunks(self, count: int) -> None:
        """Return once ``count`` chunks (over all requests) have reached the consumer."""
        while self.chunks_recorded < count:
            if self._chunk_seen is None:
                self._chunk_seen = anyio.Event()
            await self._chunk_seen.wait()

    def stream(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        **params: Any,
    ) -> AbstractAsyncContextManager[ChatStream]:
        inner_cm = self.inner.stream(messages, tools=tools, **params)
        wire = getattr(inner_cm, "request", None)
        if isinstance(wire, dict):
            body, source = wire, "wire"
        else:
            body = {
                "messages": [dict(m) for m in messages],
                **({"tools": list(tools)} if tools else {}),
                **params,
            }
            source = "arguments"
        return _RecordingStreamContext(self, inner_cm, body, source)


class _RecordingStreamContext:
    def __init__(
        self,
        owner: RecordingLLM,
        inner_cm: AbstractAsyncContextManager[ChatStream],
        body: dict[str, Any],
        source: str,
    ) -> None:
        self._owner = owner
        self._inner_cm = inner_cm
        self._body = body
        self._source = source
        self._stream: _RecordingStream | None = None

    async def __aenter__(self) -> ChatStream:
        writer = self._owner.writer
        n = writer.next_exchange()
        at = self._owner.position
        writer.write(
            RequestRecord(n, self._body, writer.now(), self._source, at.turn, at.round)  # type: ignore[arg-type]
        )
        started = time.perf_counter()
        try:
            inner = await self._inner_cm.__aenter__()
        except LLMStatusError as exc:
            t = time.perf_counter() - started
            error = {"error": {"message": exc.message, "type": exc.error_type or "error"}}
            writer.write(ResponseRecord(n, exc.status_code, exc.request_id, round(t, 6), 1, error))
            writer.write(EndRecord(n, "error", round(t, 6), 0, str(exc)))
            raise
        except BaseException as exc:
            t = round(time.perf_counter() - started, 6)
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                writer.write(EndRecord(n, "cancelled", t, 0))
            else:
                writer.write(EndRecord(n, "error", t, 0, str(exc) or type(exc).__name__))
            raise
        t = time.perf_counter() - started
        attempts = int(getattr(inner, "attempts", 1) or 1)
        writer.write(ResponseRecord(n, 200, inner.request_id, round(t, 6), attempts))
        self._stream = _RecordingStream(self._owner, n, inner, started)
        return cast(ChatStream, self._stream)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        try:
            return await self._inner_cm.__aexit__(exc_type, exc, tb)
        finally:
            if self._stream is not None and not self._stream.ended:
                # Left before the stream ended: the consumer hung up (barge-in) or failed.
                cancelled = exc is None or isinstance(exc, anyio.get_cancelled_exc_class())
                self._stream.end("cancelled", None if cancelled else (str(exc) or type(exc).__name__))


# Text a stream's chunk records are held back for, at least: a secret starting in a chunk shows in full
# within this many characters (or the longest registered secret's length, if longer).
_HOLD_CHARS = 64

_Path = tuple[str | int, ...]


def _text_pieces(data: dict[str, Any]) -> list[tuple[str, _Path, str]]:
    """The streamed text of one chunk, as (channel, path in the chunk, text): choice 0's content and each
    tool call's argument fragment. A secret may be split across consecutive pieces of one channel."""
    pieces: list[tuple[str, _Path, str]] = []
    choices = data.get("choices")
    for c, choice in enumerate(choices if isinstance(choices, list) else ()):
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            continue
        if isinstance(delta.get("content"), str):
            pieces.append(("content", ("choices", c, "delta", "content"), delta["content"]))
        calls = delta.get("tool_calls")
        for f, fragment in enumerate(calls if isinstance(calls, list) else ()):
            function = fragment.get("function") if isinstance(fragment, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                path: _Path = ("choices", c, "delta", "tool_calls", f, "function", "arguments")
                pieces.append((f"arguments {fragment.get('index', f)}", path, function["arguments"]))
    return pieces


def _set_path(data: Any, path: _Path, value: str) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


class _SplitSecretGuard:
    """Writes a stream's chunk records with every secret masked, a secret split over several chunks
    included (the cassette writer redacts each string alone, which cannot see one): records are held
    until enough text follows them to show any secret that starts in them, then written, in order."""

    def __init__(self, write: Callable[[ChunkRecord], None]) -> None:
        self._write = write
        self._held: list[tuple[ChunkRecord, list[tuple[str, _Path, str]]]] = []
        self._written: dict[str, str] = {}  # channel -> the end of its text already written (context)

    def add(self, record: ChunkRecord) -> None:
        self._held.append((record, _text_pieces(record.data)))
        self._release(final=False)

    def close(self) -> None:
        self._release(final=True)

    def _release(self, *, final: bool) -> None:
        hold = max(_HOLD_CHARS, longest_secret())
        count = len(self._held)
        if not final:
            after = 0  # text that follows each record, from the newest back
            count = 0
            for i in range(len(self._held) - 1, -1, -1):
                if after >= hold:
                    count = i + 1
                    break
                after += sum(len(text) for _, _, text in self._held[i][1])
        if not count:
            return
        # Per channel: the written context, then every held piece; spans in the held part get masked.
        texts: dict[str, list[str]] = {}
        for _, pieces in self._held:
            for channel, _, text in pieces:
                texts.setdefault(channel, [self._written.get(channel, "")]).append(text)
        spans = {channel: secret_spans("".join(parts)) for channel, parts in texts.items()}
        offsets = {channel: len(parts[0]) for channel, parts in texts.items()}
        released, self._held = self._held[:count], self._held[count:]
        for record, pieces in released:
            data: dict[str, Any] | None = None
            for channel, path, text in pieces:
                start = offsets[channel]
                offsets[channel] = start + len(text)
                masked = _mask(text, start, spans[channel])
                if masked != text:
                    data = data if data is not None else copy.deepcopy(record.data)
                    _set_path(data, path, masked)
                self._written[channel] = (self._written.get(channel, "") + text)[-hold:]
            self._write(record if data is None else ChunkRecord(record.n, record.t, data))
        # Later offsets count from the new context: rebuild on the next release.


def _mask(text: str, start: int, spans: list[tuple[int, int]]) -> str:
    """``text`` (at ``start`` in its channel) with each span's characters cut out; a span beginning in it
    leaves one [REDACTED]."""
    end = start + len(text)
    out: list[str] = []
    at = start
    for s, e in spans:
        if e <= start or s >= end:
            continue
        if s > at:
            out.append(text[at - start : s - start])
        if s >= start:
            out.append(REDACTED)
        at = max(at, min(e, end))
    out.append(text[at - start :])
    return "".join(out)


class _RecordingStream:
    def __init__(self, owner: RecordingLLM, n: int, inner: ChatStream, started: float) -> None:
        self._owner = owner
        self._n = n
        self._inner = inner
        self._started = started
        self._count = 0
        self._guard = _SplitSecretGuard(owner.writer.write)
        self._iterator: AsyncIterator[dict[str, Any]] = inner.__aiter__()
        self.ended = False

    # ChatStream's attributes always read through to the real stream (they change as it goes).
    @property
    def request_id(self) -> str | None:
        return self._inner.request_id

    @property
    def attempts(self) -> int:
        return self._inner.attempts

    @property
    def malformed_chunks(self) -> int:
        return self._inner.malformed_chunks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def end(self, how: EndHow, error: str | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        t = round(time.perf_counter() - self._started, 6)
        self._guard.close()
        self._owner.writer.write(EndRecord(self._n, how, t, self._count, error))

    def __aiter__(self) -> _RecordingStream:
        self._iterator = self._inner.__aiter__()
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            chunk = await self._iterator.__anext__()
        except StopAsyncIteration:
            self.end("done")
            raise
        except StreamInterruptedError as exc:
            self.end("dropped", str(exc))
            raise
        except LLMError as exc:
            self.end("error", str(exc))
            raise
        t = round(time.perf_counter() - self._started, 6)
        self._count += 1
        self._guard.add(ChunkRecord(self._n, t, chunk))
        self._owner._on_chunk()
        return chunk


# ---- TTS -----------------------------------------------------------------------------------------


class RecordingTTSSink:
    """A TTSSink around any sink: records each text, the digest of the audio it produced, flushes, cancels.

    Audio is captured from a ``Speaker`` (the sink every engine is wrapped in): its engine is tapped, and
    each text's record holds the sha256 and duration of the bytes the engine returned for it. Any other
    sink's speech records carry text only. ``writer=None`` keeps the records in memory (``records``).
    """

    def __init__(
        self,
        inner: TTSSink,
        writer: CassetteWriter | None = None,
        *,
        capture_audio: bool = True,
        position: Position | None = None,
    ) -> None:
        self.inner = inner
        self.writer = writer
        self.position = position or Position()
        self.records: list[SpeechRecord] = []
        self._started = time.perf_counter()
        self._pcm = hashlib.sha256()
        self._pcm_bytes = 0
        self._pcm_rate: int | None = None
        self._changed: anyio.Event | None = None  # created on first wait: needs a running event loop
        self.audio_captured = False
        if capture_audio and isinstance(inner, Speaker):
            inner.tap(self.on_engine_audio)
            self.audio_captured = True

    def on_engine_audio(self, text: str, audio: bytes, sample_rate: int) -> None:
        """``EngineTap``: bytes the Speaker's engine returned for the text being spoken."""
        self._pcm.update(audio)
        self._pcm_bytes += len(audio)
        self._pcm_rate = sample_rate

    def _now(self) -> float:
        return self.writer.now() if self.writer else round(time.perf_counter() - self._started, 6)

    async def speak(self, text: str) -> None:
        await self._record_speech(lambda: self.inner.speak(text), lambda: text)

    async def _record_speech(self, speak: Callable[[], Awaitable[None]], spoken: Callable[[], str]) -> None:
        at = self._now()
        self._pcm, self._pcm_bytes, self._pcm_rate = hashlib.sha256(), 0, None
        await speak()
        text = spoken()
        if self.audio_captured and self._pcm_rate:
            digest: str | None = self._pcm.hexdigest()
            seconds: float | None = round(self._pcm_bytes / 2 / self._pcm_rate, 6)
        else:
            digest = seconds = None
        filler = self.position.take_filler(text)
        record = SpeechRecord(text, at, digest, seconds, self._pcm_rate, self.position.turn, filler)
        self.records.append(record)
        if self.writer is not None:
            self.writer.write(record)
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    @property
    def streams_text(self) -> bool:
        """As the inner sink: recording a session does not change how its text reaches the engine."""
        return getattr(self.inner, "streams_text", False) is True

    async def speak_stream(self, texts: AsyncIterable[str]) -> None:
        """One utterance given in pieces (a streaming inner sink): recorded as one text once it ends."""
        pieces: list[str] = []

        async def collect() -> AsyncIterator[str]:
            async for text in texts:
                pieces.append(text)
                yield text

        await self._record_speech(lambda: self.inner.speak_stream(collect()), lambda: "".join(pieces))  # type: ignore[attr-defined]

    async def flush(self) -> None:
        await self.inner.flush()
        self._sink_record("flush")

    async def cancel(self) -> None:
        await self.inner.cancel()
        self._sink_record("cancel")

    def _sink_record(self, kind: str) -> None:
        if self.writer is not None:
            record = SinkRecord(kind, self._now(), self.inner.played_chars, self.position.turn)  # type: ignore[arg-type]
            self.writer.write(record)

    @property
    def played_chars(self) -> int:
        return self.inner.played_chars

    @property
    def text(self) -> str:
        return "".join(r.text for r in self.records)

    async def wait_for_chars(self, count: int) -> None:
        """Return once at least ``count`` characters have been spoken (an ordering gate for tests)."""
        while len(self.text) < count:
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    async def wait_for_text(self, text: str) -> None:
        """Return once ``text`` is part of everything spoken so far (an ordering gate for tests)."""
        while text not in self.text:
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()


# ---- STT -----------------------------------------------------------------------------------------


class RecordingSTTSource:
    """An STTSource around any source: records every transcript and speech event it yields."""

    def __init__(self, inner: STTSource, writer: CassetteWriter) -> None:
        self.inner = inner
        self.writer = writer

    async def send_audio(self, pcm: bytes) -> None:
        await self.inner.send_audio(pcm)

    async def events(self) -> AsyncIterator[STTEvent]:
        async for event in self.inner.events():
            self.record(event)
            yield event

    def record(self, event: STTEvent) -> None:
        at = self.writer.now()
        if isinstance(event, Transcript):
            self.writer.write(STTRecord("transcript", at, event.text, event.is_final))
        elif isinstance(event, SpeechStarted):
            self.writer.write(STTRecord("speech_started", at))
        elif isinstance(event, SpeechEnded):
            self.writer.write(STTRecord("speech_ended", at))

    async def aclose(self) -> None:
        await self.inner.aclose()


# ---- the session -----------------------------------------------------------------------------------


def turn_record(result: TurnResult, index: int, at: float = 0.0) -> TurnRecord:
    """The per-turn summary written to a cassette (its tool calls are ``tool`` records of their own)."""
    rounds = tuple(
        {
            "round": r.round,
            "request_id": r.request_id,
            "attempts": r.attempts,
            "finish_reason": r.finish_reason,
            "usage": {
                "prompt_tokens": r.usage.prompt_tokens,
                "completion_tokens": r.usage.completion_tokens,
                "cached_tokens": r.usage.cached_tokens,
                "estimated": r.usage.estimated,
            },
            "started_at": round(r.started_at, 6),
            "first_chunk_at": None if r.first_chunk_at is None else round(r.first_chunk_at, 6),
            "first_text_at": None if r.first_text_at is None else round(r.first_text_at, 6),
            "finished_at": round(r.finished_at, 6),
            "cache_bust": r.cache_bust,
            "error": r.error,
        }
        for r in result.rounds
    )
    ttft = None if result.time_to_first_text is None else round(result.time_to_first_text, 6)
    return TurnRecord(
        index,
        result.user_text,
        result.spoken_text,
        result.heard_text,
        result.interrupted,
        rounds,
        ttft,
        round(result.total, 6),
        result.error,
        at,
    )


def tool_record(call: ToolCall, turn: int | None) -> ToolRecord:
    """A call as a cassette writes it: the turn's record, times rounded to the microsecond."""
    return ToolRecord(
        ToolCall(
            call.round,
            call.call_id,
            call.name,
            call.arguments,
            call.result,
            call.is_error,
            round(call.ready_at, 6),
            round(call.started_at, 6),
            round(call.finished_at, 6),
        ),
        turn,
    )


class Recorder:
    """Everything one session needs to land in one cassette.

    The turn's events (``on_event``) are the recorder's only view of the turn: they say which turn and
    round is running (``position``, shared with the wrappers), and hand over each tool call as it
    finishes and the result when the turn is over."""

    def __init__(self, writer: CassetteWriter) -> None:
        self.writer = writer
        self.position = Position()
        self._turns = 0
        self._calls_written: set[str] = set()  # this turn's calls already in the cassette

    def wrap_llm(self, llm: ChatStreamer) -> RecordingLLM:
        return RecordingLLM(llm, self.writer, self.position)

    def wrap_sink(self, sink: TTSSink, *, capture_audio: bool = True) -> RecordingTTSSink:
        return RecordingTTSSink(sink, self.writer, capture_audio=capture_audio, position=self.position)

    def wrap_stt(self, source: STTSource) -> RecordingSTTSource:
        return RecordingSTTSource(source, self.writer)

    def attach(self, agent: Agent) -> Agent:
        """Wrap the agent's LLM client and sink in place (before its first turn). Tool calls need no
        wrapper: the turn hands them over in its events."""
        agent.llm = self.wrap_llm(agent.llm)
        agent.sink = self.wrap_sink(agent.sink)
        return agent

    def on_event(self, event: TurnEvent) -> None:
        """Pass as a turn's ``on_event``: tags what follows with the turn and round, and records each tool
        call and, when the turn finishes, the calls it never finished and its summary."""
        if isinstance(event, (RoundStarted, SpeechQueued)):
            self.position.follow(event)
            if isinstance(event, RoundStarted) and event.round == 1:
                self._calls_written.clear()
        elif isinstance(event, ToolFinished):
            self._write_call(event.call)
        elif isinstance(event, TurnFinished):
            for call in event.result.tool_calls:  # interrupted: answered at the commit, never finished
                if call.call_id not in self._calls_written:
                    self._write_call(call)
            self.record_turn(event.result, self.position.turn)
            self.position.follow(event)

    def _write_call(self, call: ToolCall) -> None:
        self._calls_written.add(call.call_id)
        self.writer.write(tool_record(call, self.position.turn))

    def record_turn(self, result: TurnResult, index: int | None = None) -> None:
        self._turns += 1
        self.writer.write(turn_record(result, index or self._turns, self.writer.now()))

    async def respond(self, agent: Agent, user_text: str) -> TurnResult:
        return await agent.respond(user_text, on_event=self.on_event)
