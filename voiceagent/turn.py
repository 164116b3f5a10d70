"""Turn: one user utterance in, the agent's spoken answer out, tools run on the way.

Per round: stream a completion; content deltas go through the chunker to the TTS sink at once; each
tool call starts the moment its arguments are complete, while filler speech is still playing; when
the stream ends the round awaits its tools and appends the assistant message and one ``tool``
message per call; then the next round, up to ``max_rounds``.

Speech goes through a queue to one speaker task (``speech_lane.SpeechLane``), so a slow sink never
delays reading the stream or starting a tool. The turn's messages (``transcript.TurnTranscript``) are
committed to the conversation when the turn ends: history stays append-only, and a barge-in can still
keep only what the listener actually heard.

Every wait and buffer is bounded (``TurnConfig``): a round must see its first chunk within
``first_token_timeout`` and end its stream within ``round_timeout`` (a server that sends headers and then
nothing, or drips a byte at a time, gets the fallback line, not dead air); a round speaks at most
``max_round_chars`` of the model's words (an endless answer is cut there and its stream closed). The speech
queue holds no more than those caps allow. Error strings in the result are redacted (``logs.redact``).

If the sink raises (a TTS socket dropped mid-utterance), nobody hears the rest of the answer: the turn
stops as a barge-in would (stream closed, tools cancelled per policy, only what was heard kept, every
tool call answered), reports the failure in ``TurnResult.error`` and tries the fallback line once on the
same sink, which may have reconnected. ``TurnResult.interrupted`` stays False: the caller did not
interrupt.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, cast

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from voiceagent.accumulator import DeltaAccumulator
from voiceagent.cache_guard import CacheGuard
from voiceagent.chat_stream import ChatStream, ChatStreamer
from voiceagent.chunker import SpeechChunker
from voiceagent.conversation import Conversation, Message, tool_call_message
from voiceagent.errors import LLMDeadlineError, LLMError, SpeechLimitError, StreamInterruptedError
from voiceagent.events import (
    CacheBusted,
    RoundFinished,
    RoundStarted,
    SpeechQueued,
    StreamEvent,
    StreamFinished,
    TextDelta,
    ToolCallReady,
    ToolCallStarted,
    ToolFinished,
    ToolStarted,
    TurnEvent,
    TurnFinished,
    Usage,
)
from voiceagent.logs import get_logger, log_context, redact, set_request_id
from voiceagent.results import RoundRecord, ToolCall, TurnResult
from voiceagent.speech_lane import SpeechLane
from voiceagent.tool_runner import ToolRunner
from voiceagent.tools import tools_schema
from voiceagent.transcript import TurnTranscript
from voiceagent.tts import TTSSink

log = get_logger(__name__)

__all__ = [
    "INTERRUPTED_TOOL_RESULT",
    "ChatStream",
    "ChatStreamer",
    "Turn",
    "TurnConfig",
]  # ChatStream*: moved

INTERRUPTED_TOOL_RESULT = "Cancelled: the user interrupted before this tool finished."


@dataclass(frozen=True)
class TurnConfig:
    max_rounds: int = 4
    # Spoken at once when a round asks for tools without saying anything (OpenAI returns null content).
    filler: str | None = "One moment."
    # Also spoken when opening a round's stream (waiting for a limiter slot, retrying) takes longer.
    filler_after: float | None = 1.0
    # Spoken instead of dead air: tool chain too long, LLM unreachable, or nothing was said.
    fallback: str = "Sorry, I couldn't manage that just now. Could you try again?"
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    max_chunk_chars: int = 140
    min_first_chunk_chars: int = 8
    # Deadlines in seconds (None: no deadline). First token: from the round's start (limiter wait and
    # retries included) to its first chunk; a healthy Electron answers in well under a second, and 10 s
    # still leaves room for a few 503 retries. Round: from the round's start to the end of its stream
    # (its tools have their own timeouts); 30 s streams far more than one spoken answer.
    first_token_timeout: float | None = 10.0
    round_timeout: float | None = 30.0
    # The model's words spoken per round at most (~3 minutes of speech); past it the stream is closed.
    max_round_chars: int = 3000
    # Calls of one round past this many are not run: each gets an error tool message instead.
    max_tool_calls_per_round: int = 32

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds must be at least 1, got {self.max_rounds}")
        for name in ("first_token_timeout", "round_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")
        if self.max_round_chars < 1:
            raise ValueError(f"max_round_chars must be at least 1, got {self.max_round_chars}")
        if self.max_tool_calls_per_round < 0:
            raise ValueError(f"max_tool_calls_per_round must be >= 0, got {self.max_tool_calls_per_round}")


@dataclass
class _RoundState:
    number: int
    started_at: float
    chunker: SpeechChunker
    acc: DeltaAccumulator = field(default_factory=DeltaAccumulator)
    request_id: str | None = None
    attempts: int = 0
    malformed_chunks: int = 0
    first_chunk_at: float | None = None
    first_text_at: float | None = None
    ready_at: dict[str, float] = field(default_factory=dict)
    results: dict[str, ToolCall] = field(default_factory=dict)
    error: LLMError | None = None
    cache_bust: str | None = None
    text_chars: int = 0  # the model's characters handed to the chunker (max_round_chars counts these)
    capped_content: str | None = None  # the content kept when max_round_chars cut the answer
    first_token_scope: anyio.CancelScope | None = None  # its deadline is lifted by the first chunk
    tools: TaskGroup | None = None  # the round's tool tasks; set while its stream is read

    @property
    def content(self) -> str:
        return self.acc.content if self.capped_content is None else self.capped_content


class Turn:
    def __init__(
        self,
        *,
        llm: ChatStreamer,
        conversation: Conversation,
        sink: TTSSink,
        runner: ToolRunner | None = None,
        config: TurnConfig | None = None,
        guard: CacheGuard | None = None,
        index: int = 1,
        on_event: Callable[[TurnEvent], None] | None = None,
        held: bool = False,
    ) -> None:
        """``held``: a speculative turn (the caller may not be done): it streams, but speaks nothing and
        starts no tool until ``release()``; ``discard()`` drops it without a trace in the conversation."""
        self._llm = llm
        self._conversation = conversation
        self._sink = sink
        self._runner = runner
        self._config = config or TurnConfig()
        self._guard = guard or CacheGuard()
        self._tools_schema = tools_schema(runner.tools) if runner is not None and runner.tools else None
        self.index = index
        self._on_event = on_event
        self._scope = anyio.CancelScope()
        self._t0 = 0.0
        self._transcript = TurnTranscript()
        self._rounds: list[RoundRecord] = []
        self._tool_records: list[ToolCall] = []
        self._current: _RoundState | None = None
        self._filler_spoken = False
        self._fallback_spoken = False
        self._error: str | None = None
        self._llm_done_at = 0.0
        self._released = anyio.Event()
        if not held:
            self._released.set()
        self._speech = SpeechLane(
            sink,
            self._transcript,
            queue_size=_speech_queue_size(self._config),
            released=self._released,
            on_failure=self._scope.cancel,
        )
        self._discarded = False
        self._stop_after_tools = False

    def cancel(self, *, keep_tools: bool = False) -> None:
        """Barge-in: stop the stream, the speech and (per tool policy) the tools, now. ``keep_tools``:
        when tools are running, let them finish and commit their results first, then stop (the caller
        spoke during the filler: the answer is worth keeping and every tool_call_id gets its own)."""
        state = self._current
        if keep_tools and state is not None and any(c.id not in state.results for c in state.acc.ready_calls):
            self._stop_after_tools = True
            return
        self._scope.cancel()

    def release(self) -> None:
        """The turn is confirmed: a held turn starts speaking (and running tools) now."""
        self._released.set()

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def discard(self) -> None:
        """Drop a speculative turn: nothing is spoken, nothing is committed; its rounds are recorded
        with ``speculative=True``. Only for a turn that was never released."""
        if self.released:
            raise RuntimeError("a released turn cannot be discarded; cancel() it")
        self._discarded = True
        self._scope.cancel()

    @property
    def discarded(self) -> bool:
        return self._discarded

    @property
    def cancelled(self) -> bool:
        return self._scope.cancel_called

    # -- the pipeline ----------------------------------------------------------------------------

    async def run(self, user_text: str) -> TurnResult:
        self._t0 = time.perf_counter()
        self._transcript.messages.append({"role": "user", "content": user_text})
        played_before = self._sink.played_chars
        guard_before = self._guard.state()
        with log_context(turn=self.index, round="-", request_id="-"):
            try:
                with self._scope:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._speech.speak_all)
                        try:
                            await self._run_rounds()
                        finally:
                            self._speech.close()
            except anyio.get_cancelled_exc_class():
                if self._discarded:
                    self._guard.restore(guard_before)
                    raise
                # Cancelled from outside (the call hung up, a deadline passed): the conversation still
                # keeps what was heard, every tool call answered, before the cancellation goes on.
                await self._commit(played_before, stopped=True)
                log.info("turn cancelled from outside; kept what was heard")
                raise
            if self._discarded:
                # As if it never ran: the next request is compared with the one before this one.
                self._guard.restore(guard_before)
                return self._discarded_result(user_text)
            sink_error = self._speech.sink_error
            stopped = self._scope.cancelled_caught or self._scope.cancel_called
            interrupted = stopped and sink_error is None
            heard = await self._commit(played_before, stopped=stopped)
            spoken = self._transcript.spoken_text
            heard_text = spoken[:heard]
            if sink_error is not None:
                heard_text += await self._fallback_after_sink_failure(sink_error)
            result = TurnResult(
                user_text=user_text,
                spoken_text=self._transcript.spoken_text,
                heard_text=heard_text,
                rounds=tuple(self._rounds),
                tool_calls=tuple(self._tool_records),
                time_to_first_text=next((r.first_text_at for r in self._rounds if r.first_text_at), None),
                llm_done_at=self._llm_done_at or self._now(),
                total=self._now(),
                interrupted=interrupted,
                fallback_spoken=self._fallback_spoken,
                error=self._error,
            )
            log.info(
                "turn over in %.3f s: %d round(s), %d tool call(s)%s",
                result.total,
                len(result.rounds),
                len(result.tool_calls),
                ", interrupted" if interrupted else "",
            )
            self._emit(TurnFinished(result))
            return result

    def _discarded_result(self, user_text: str) -> TurnResult:
        if self._current is not None:  # the round in flight: its request was made, record it
            state = self._current
            self._rounds.append(
                self._round_record(state, state.acc.usage or self._estimate_usage(state), "discarded")
            )
            self._current = None
        rounds = tuple(dataclasses.replace(r, speculative=True) for r in self._rounds)
        log.info("speculative turn discarded after %d request(s)", len(rounds))
        return TurnResult(
            user_text=user_text,
            spoken_text="",
            heard_text="",
            rounds=rounds,
            tool_calls=(),
            time_to_first_text=None,
            llm_done_at=self._now(),
            total=self._now(),
            interrupted=True,
        )

    async def _run_rounds(self) -> None:
        for number in range(1, self._config.max_rounds + 1):
            state = await self._round(number)
            calls = state.acc.ready_calls
            if state.error is not None:
                self._error = redact(str(state.error))
                # A stream cut after tools were dispatched still has their results: let the model go on.
                if isinstance(state.error, StreamInterruptedError) and calls:
                    continue
                self._say_fallback(number)
                break
            if not calls:
                break
        else:
            log.warning("tool chain reached max_rounds=%d; ending the turn", self._config.max_rounds)
            self._error = f"tool chain reached max_rounds={self._config.max_rounds}"
            self._say_fallback(self._config.max_rounds)
        if not self._transcript.said_model_words and not self._fallback_spoken:
            self._say_fallback(len(self._rounds))  # never leave the caller in silence
        self._llm_done_at = self._now()

    async def _round(self, number: int) -> _RoundState:
        chunker = SpeechChunker(
            max_chars=self._config.max_chunk_chars, min_first_chars=self._config.min_first_chunk_chars
        )
        state = self._current = _RoundState(number, self._now(), chunker)
        messages = self._conversation.messages() + copy.deepcopy(self._transcript.messages)
        with log_context(round=number, request_id="-"):
            self._emit(RoundStarted(number, state.started_at, self.index))
            bust = self._guard.check(messages, self._tools_schema)
            if bust is not None:
                state.cache_bust = bust.reason
                self._emit(CacheBusted(number, bust.index, bust.reason))
            async with anyio.create_task_group() as state.tools:
                try:
                    await self._stream_round(state, messages)
                except LLMError as exc:
                    # Tools already started keep running: their results still count.
                    state.error = exc
                    state.request_id = state.request_id or exc.request_id
                    log.warning("round %d failed: %s", number, exc)
                self._say_all(number, chunker.flush())
            # A barge-in while the tools drained must not commit the round as finished: the
            # interrupted path in run() does that, answering unfinished calls.
            await anyio.lowlevel.checkpoint_if_cancelled()
            self._commit_round(state)
            if self._stop_after_tools:  # the caller spoke while the tools ran: results kept, stop now
                self._scope.cancel()
                await anyio.lowlevel.checkpoint()
        return state

    async def _stream_round(self, state: _RoundState, messages: list[Message]) -> None:
        """Read the round's stream within its deadlines; a missed one is an LLMDeadlineError (the stream is
        closed on the way out, tools already started keep running)."""
        first_token, whole = self._config.first_token_timeout, self._config.round_timeout
        start = anyio.current_time()
        with anyio.CancelScope(deadline=_deadline(start, whole)) as round_scope:
            with anyio.CancelScope(deadline=_deadline(start, first_token)) as first_scope:
                state.first_token_scope = first_scope
                await self._read_stream(state, messages)
        if first_scope.cancelled_caught:
            raise LLMDeadlineError(
                f"no first token within first_token_timeout={first_token} s; the stream was closed",
                request_id=state.request_id,
            )
        if round_scope.cancelled_caught:
            raise LLMDeadlineError(
                f"the stream did not end within round_timeout={whole} s; it was closed",
                request_id=state.request_id,
            )

    async def _read_stream(self, state: _RoundState, messages: list[Message]) -> None:
        assert state.tools is not None  # _round reads the stream inside the round's task group
        params = dict(self._config.params)
        opening = self._llm.stream(messages, tools=self._tools_schema, **params)
        opened = anyio.Event()
        if self._config.filler and self._config.filler_after is not None and not self._filler_spoken:
            state.tools.start_soon(self._filler_if_slow, state.number, opened)
        try:
            async with opening as stream:
                opened.set()
                state.request_id = stream.request_id
                set_request_id(stream.request_id)
                try:
                    if _reads_in_callback(stream):
                        await self._feed_stream(state, stream.feed_until)  # type: ignore[attr-defined]
                    else:
                        async for chunk in stream:
                            # _on_chunk_events, inline: this runs once per streamed token.
                            if state.first_chunk_at is None:
                                state.first_chunk_at = self._now()
                                if state.first_token_scope is not None:
                                    state.first_token_scope.deadline = math.inf
                            for event in state.acc.feed(chunk):
                                self._on_stream_event(event, state)
                            if state.capped_content is not None:
                                self._check_caps(state)
                    for event in state.acc.end():
                        self._on_stream_event(event, state)
                finally:
                    state.attempts = stream.attempts
                    state.malformed_chunks = stream.malformed_chunks
        finally:
            opened.set()
            # An LLMStream is its own context manager: its attempts count when no attempt ever opened.
            attempts = getattr(opening, "attempts", None)
            if isinstance(attempts, int):
                state.attempts = max(state.attempts, attempts)

    def _on_chunk_events(self, state: _RoundState, events: list[StreamEvent]) -> None:
        """One chunk's events, in the task: the effects (speech, tools, deadlines, caps)."""
        if state.first_chunk_at is None:
            state.first_chunk_at = self._now()
            if state.first_token_scope is not None:
                state.first_token_scope.deadline = math.inf
        for event in events:
            self._on_stream_event(event, state)
        if state.capped_content is not None:
            self._check_caps(state)

    async def _feed_stream(self, state: _RoundState, feed_until: Callable[..., Any]) -> None:
        """The stream through ``LLMStream.feed_until``: a chunk that only adds words (the usual token)
        is handled entirely in ``feed``, which on the h1 read path runs in the read callback: the
        accumulator and the chunker take it, and a chunk it completes is queued to be spoken (a sync,
        bounded put; the speaker task speaks it). Anything else (a tool call, the first chunk, a cap,
        text streamed to the engine) wakes this task, which does what the ``async for`` loop does;
        ``feed`` hands over at most one chunk. An error in ``feed`` (a listener of SpeechQueued, say)
        is raised here, in the task."""
        pending: list[list[StreamEvent]] = []
        acc, push, limit = state.acc, state.chunker.push, self._config.max_round_chars
        feed_text, plain = acc.feed_text, not self._speech.streams_text
        say_all, number = self._say_all, state.number
        # Words only may be taken in the callback: the first chunk (its deadline) and a cap are the
        # task's, and so is text streamed to the engine. Only the task changes these, so it is
        # recomputed each time the task has handled what feed handed over.
        lean = plain and state.first_chunk_at is not None and state.capped_content is None

        def feed(chunk: dict[str, Any]) -> bool:
            if lean:
                text = feed_text(chunk)
                if text is not None:  # the usual token: acc.feed would give [TextDelta(text)]
                    size = len(text)
                    if size <= limit - state.text_chars:
                        state.text_chars += size
                        chunks = push(text)
                        if chunks:
                            say_all(number, chunks)
                        return False
                    pending.append([TextDelta(text)])
                    return True
                events = acc.feed(chunk)
                room = limit - state.text_chars
                for event in events:
                    if not isinstance(event, TextDelta) or len(event.text) > room:
                        break
                    room -= len(event.text)
                else:  # words only, within the cap: what _on_stream_event does
                    for event in events:
                        text = cast(TextDelta, event).text
                        if text:
                            state.text_chars += len(text)
                            chunks = push(text)
                            if chunks:
                                say_all(number, chunks)
                    return False
            else:
                events = acc.feed(chunk)
            pending.append(events)
            return True

        while await feed_until(feed):
            self._on_chunk_events(state, pending.pop())
            lean = plain and state.first_chunk_at is not None and state.capped_content is None

    async def _filler_if_slow(self, number: int, opened: anyio.Event) -> None:
        """No dead air while the stream opens slowly: say the filler once the wait passes filler_after."""
        with anyio.move_on_after(self._config.filler_after):
            await opened.wait()
        if not opened.is_set() and self._config.filler and not self._filler_spoken:
            self._filler_spoken = True
            self._say(number, self._config.filler, filler=True)

    def _on_stream_event(self, event: StreamEvent, state: _RoundState) -> None:
        if isinstance(event, TextDelta):
            room = self._config.max_round_chars - state.text_chars
            delta = event.text[:room]
            state.text_chars += len(delta)
            if delta:
                chunks = state.chunker.push(delta)
                if chunks:
                    self._say_all(state.number, chunks)
                if self._speech.streams_text and self._speech.stream(state.number, state.chunker.held):
                    if state.first_text_at is None:
                        state.first_text_at = self._now()
            if len(delta) < len(event.text) and state.capped_content is None:
                # An answer that never ends stops here: what fit is spoken (flushed by _round), and the
                # conversation keeps only those words. The stream is closed once the chunk's other
                # events (a tool call it completes) are handled: see _check_caps.
                state.capped_content = state.acc.content[: self._config.max_round_chars]
        elif isinstance(event, ToolCallStarted):
            # Say what was said so far before the tool's silence; fill that silence if nothing was.
            self._say_all(state.number, state.chunker.flush())
            if self._config.filler and not self._filler_spoken and not state.acc.content.strip():
                self._filler_spoken = True
                self._say(state.number, self._config.filler, filler=True)
        elif isinstance(event, ToolCallReady):
            state.ready_at[event.id] = self._now()
            if len(state.ready_at) > self._config.max_tool_calls_per_round:
                self._refuse_tool(state, event)
            else:
                assert state.tools is not None
                state.tools.start_soon(self._run_tool, state, event)
        elif isinstance(event, StreamFinished):
            # The text is final: its last words are speakable now, not a usage chunk and [DONE] later.
            self._say_all(state.number, state.chunker.flush())

    def _check_caps(self, state: _RoundState) -> None:
        if state.capped_content is not None:
            raise SpeechLimitError(
                f"the answer reached max_round_chars={self._config.max_round_chars}; the stream was closed",
                request_id=state.request_id,
            )

    async def _run_tool(self, state: _RoundState, call: ToolCallReady) -> None:
        await self._released.wait()  # a speculative turn does nothing the caller could notice
        started = self._now()
        self._emit(ToolStarted(state.number, call.id, call.name, call.arguments, started))
        if self._runner is None:
            content, is_error = f'Error: no tools are available (the model asked for "{call.name}").', True
        else:
            # The runner shields tools whose policy is on_cancel="finish"; their results are kept.
            result = await self._runner.run(call.id, call.name, call.arguments)
            content, is_error = result.content, result.is_error
        record = ToolCall(
            state.number,
            call.id,
            call.name,
            call.arguments,
            content,
            is_error,
            state.ready_at.get(call.id, started),
            started,
            self._now(),
        )
        state.results[call.id] = record
        self._emit(ToolFinished(record))

    def _refuse_tool(self, state: _RoundState, call: ToolCallReady) -> None:
        """A call past max_tool_calls_per_round: answered with an error, never run."""
        limit = self._config.max_tool_calls_per_round
        if len(state.ready_at) == limit + 1:
            log.warning(
                "round %d asked for more than %d tool calls; the rest are not run", state.number, limit
            )
        now = self._now()
        content = f"Error: too many tool calls in one round (the limit is {limit}); {call.name} was not run."
        record = ToolCall(state.number, call.id, call.name, call.arguments, content, True, now, now, now)
        state.results[call.id] = record
        self._emit(ToolFinished(record))

    def _commit_round(self, state: _RoundState, *, interrupted: bool = False) -> None:
        """Record a round and queue its messages: the assistant message, then one tool message per call.
        A finished round has every dispatched call's result (its task group awaited them); an interrupted
        one answers the unfinished ones with INTERRUPTED_TOOL_RESULT."""
        calls = state.acc.ready_calls
        usage = state.acc.usage or self._estimate_usage(state)
        now = self._now()
        if interrupted or calls or state.content:
            records = [state.results.get(c.id) or self._unfinished_call(state, c, now) for c in calls]
            self._transcript.add_round(
                state.number,
                self._assistant_message(state.content, calls),
                [{"role": "tool", "tool_call_id": r.call_id, "content": r.result} for r in records],
            )
            self._tool_records.extend(records)
        error = "interrupted" if interrupted else redact(str(state.error)) if state.error else None
        self._rounds.append(self._round_record(state, usage, error))
        self._current = None
        if not interrupted:
            self._emit(RoundFinished(state.number, state.request_id, state.acc.finish_reason, usage, now))

    @staticmethod
    def _unfinished_call(state: _RoundState, call: ToolCallReady, now: float) -> ToolCall:
        ready = state.ready_at.get(call.id, now)
        return ToolCall(
            state.number, call.id, call.name, call.arguments, INTERRUPTED_TOOL_RESULT, True, ready, ready, now
        )

    # -- speech ----------------------------------------------------------------------------------

    def _say(self, number: int, text: str, *, filler: bool = False) -> None:
        utterance = self._speech.say(number, text, filler=filler)
        state = self._current
        if state is not None and state.first_text_at is None:
            now = state.first_text_at = self._now()
        elif self._on_event is None:
            return  # this runs per spoken chunk: no clock read for an event nobody receives
        else:
            now = self._now()
        self._emit(SpeechQueued(number, utterance.text, now, filler))

    def _say_all(self, number: int, texts: Sequence[str]) -> None:
        for text in texts:
            self._say(number, text)

    def _say_fallback(self, number: int) -> None:
        self._fallback_spoken = True
        self._say(number, self._config.fallback, filler=True)

    async def _fallback_after_sink_failure(self, sink_error: Exception) -> str:
        """Report the sink failure and try the fallback line once; return what was heard of it."""
        failure = redact(f"TTS sink failed: {sink_error!r}")
        self._error = f"{self._error}; {failure}" if self._error else failure
        self._fallback_spoken = False  # anything queued before the failure may never have played
        number = len(self._rounds)
        self._emit(SpeechQueued(number, self._config.fallback, self._now(), True))
        if not await self._speech.fallback_after_failure(number, self._config.fallback):
            return ""
        self._fallback_spoken = True
        return self._config.fallback

    # -- barge-in bookkeeping --------------------------------------------------------------------

    async def _commit(self, played_before: int, *, stopped: bool) -> int:
        """Append the turn's messages to the conversation and return how many characters were heard. A
        stopped turn silences the sink first and keeps only what was heard."""
        if stopped:
            with anyio.CancelScope(shield=True):
                await self._speech.cancel_sink()
        heard = self._transcript.heard_chars(self._sink.played_chars - played_before, stopped=stopped)
        if stopped:
            state = self._current
            if state is not None:  # the round in flight when the turn stopped
                self._commit_round(state, interrupted=True)
            self._transcript.truncate_to_heard(heard, cut_round=state.number if state else None)
        for message in self._transcript.messages:
            self._append(message)
        return heard

    def _round_record(self, state: _RoundState, usage: Usage, error: str | None) -> RoundRecord:
        return RoundRecord(
            round=state.number,
            request_id=state.request_id,
            attempts=state.attempts,
            usage=usage,
            finish_reason=state.acc.finish_reason,
            content=state.content,
            tool_call_ids=tuple(c.id for c in state.acc.ready_calls),
            started_at=state.started_at,
            first_chunk_at=state.first_chunk_at,
            first_text_at=state.first_text_at,
            finished_at=self._now(),
            cache_bust=state.cache_bust,
            malformed_chunks=state.malformed_chunks,
            error=error,
            reasoning=state.acc.reasoning,
        )

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _assistant_message(content: str, calls: Sequence[ToolCallReady]) -> Message:
        message: Message = {"role": "assistant", "content": content or None}
        if calls:
            # A call's unknown fields go back as received (Gemini 3 needs its thought_signature).
            message["tool_calls"] = [
                {**c.extra, **tool_call_message(c.id, c.name, c.arguments)}
                if c.extra
                else tool_call_message(c.id, c.name, c.arguments)
                for c in calls
            ]
        return message

    def _append(self, message: Message) -> None:
        role = message["role"]
        if role == "user":
            self._conversation.add_user(message["content"])
        elif role == "assistant":
            self._conversation.add_assistant(message["content"], message.get("tool_calls", ()))
        elif role == "tool":
            self._conversation.add_tool_result(message["tool_call_id"], message["content"])

    def _estimate_usage(self, state: _RoundState) -> Usage:
        """The usage chunk never came (stream cut): roughly 4 characters a token, flagged as estimated."""
        generated = (
            len(state.acc.content)
            + len(state.acc.reasoning)
            + sum(len(c.arguments) + len(c.name) for c in state.acc.ready_calls)
        )
        prompt = len(json.dumps(self._conversation.messages() + self._transcript.messages))
        return Usage(prompt // 4, math.ceil(generated / 4), 0, estimated=True)

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    def _emit(self, event: TurnEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)


def _reads_in_callback(stream: Any) -> bool:
    """Opened by an ``LLMClient`` with ``read_callback`` on (its default; bench/README.md, #17).
    ``feed_until`` is looked up on the class: a wrapper that forwards attributes (the recorder) must not
    have its own iteration bypassed."""
    return (
        getattr(type(stream), "feed_until", None) is not None
        and getattr(stream, "read_callback", False) is True
    )


def _deadline(start: float, seconds: float | None) -> float:
    return math.inf if seconds is None else start + seconds


def _speech_queue_size(config: TurnConfig) -> int:
    """The speech queue's bound. Each queued chunk holds at least one character of the model's words, a
    round queues at most ``max_round_chars`` of them, and a turn adds at most one filler and one fallback:
    the queue can never need more, whatever the stream sends or however slow the sink."""
    return config.max_rounds * config.max_round_chars + 2
