"""Turn: one user utterance in, the agent's spoken answer out, tools run on the way.

Per round: stream a completion; content deltas go through the chunker to the TTS sink at once; each
tool call starts the moment its arguments are complete, while filler speech is still playing; when
the stream ends the round awaits its tools and appends the assistant message and one ``tool``
message per call; then the next round, up to ``max_rounds``.

Speech goes through a queue to one speaker task, so a slow sink never delays reading the stream or
starting a tool. The turn's messages are committed to the conversation when the turn ends: history
stays append-only, and a barge-in can still keep only what the listener actually heard.

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
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from voiceagent.accumulator import DeltaAccumulator
from voiceagent.cache_guard import CacheGuard
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
from voiceagent.results import RoundRecord, ToolCallRecord, TurnResult
from voiceagent.tool_runner import ToolRunner
from voiceagent.tools import tools_schema
from voiceagent.tts import TTSSink

log = get_logger(__name__)

INTERRUPTED_TOOL_RESULT = "Cancelled: the user interrupted before this tool finished."


class ChatStream(Protocol):
    request_id: str | None
    attempts: int
    malformed_chunks: int

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...


class ChatStreamer(Protocol):
    """What a turn needs of an LLM client (``voiceagent.LLMClient`` is one)."""

    def stream(
        self, messages: Sequence[Message], *, tools: Sequence[dict[str, Any]] | None = None, **params: Any
    ) -> AbstractAsyncContextManager[ChatStream]: ...


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


@dataclass(frozen=True, slots=True)
class _Utterance:
    round: int
    text: str
    filler: bool  # ours (filler, fallback), not the model's words


@dataclass
class _RoundState:
    number: int
    started_at: float
    acc: DeltaAccumulator = field(default_factory=DeltaAccumulator)
    request_id: str | None = None
    attempts: int = 0
    malformed_chunks: int = 0
    first_chunk_at: float | None = None
    first_text_at: float | None = None
    ready_at: dict[str, float] = field(default_factory=dict)
    results: dict[str, ToolCallRecord] = field(default_factory=dict)
    error: LLMError | None = None
    cache_bust: str | None = None
    text_chars: int = 0  # the model's characters handed to the chunker (max_round_chars counts these)
    capped_content: str | None = None  # the content kept when max_round_chars cut the answer
    first_token_scope: anyio.CancelScope | None = None  # its deadline is lifted by the first chunk

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
        self._pending: list[Message] = []
        self._assistant_at: dict[int, int] = {}  # round -> index of its assistant message in _pending
        self._utterances: list[_Utterance] = []
        self._rounds: list[RoundRecord] = []
        self._tool_records: list[ToolCallRecord] = []
        self._current: _RoundState | None = None
        self._filler_spoken = False
        self._fallback_spoken = False
        self._error: str | None = None
        self._sink_error: Exception | None = None
        self._llm_done_at = 0.0
        self._released = anyio.Event()
        if not held:
            self._released.set()
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
        self._pending = [{"role": "user", "content": user_text}]
        played_before = self._sink.played_chars
        guard_before = self._guard.state()
        with log_context(turn=self.index, round="-", request_id="-"):
            try:
                with self._scope:
                    async with anyio.create_task_group() as tg:
                        send, receive = anyio.create_memory_object_stream[_Utterance](
                            _speech_queue_size(self._config)
                        )
                        tg.start_soon(self._speak_all, receive)
                        async with send:
                            await self._run_rounds(send)
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
            stopped = self._scope.cancelled_caught or self._scope.cancel_called
            interrupted = stopped and self._sink_error is None
            heard = await self._commit(played_before, stopped=stopped)
            heard_text = "".join(u.text for u in self._utterances)[:heard]
            if self._sink_error is not None:
                heard_text += await self._fallback_after_sink_failure()
            result = TurnResult(
                user_text=user_text,
                spoken_text="".join(u.text for u in self._utterances),
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

    async def _run_rounds(self, speech: MemoryObjectSendStream[_Utterance]) -> None:
        for number in range(1, self._config.max_rounds + 1):
            state = await self._round(number, speech)
            calls = state.acc.ready_calls
            if state.error is not None:
                self._error = redact(str(state.error))
                # A stream cut after tools were dispatched still has their results: let the model go on.
                if isinstance(state.error, StreamInterruptedError) and calls:
                    continue
                self._say_fallback(speech, number)
                break
            if not calls:
                break
        else:
            log.warning("tool chain reached max_rounds=%d; ending the turn", self._config.max_rounds)
            self._error = f"tool chain reached max_rounds={self._config.max_rounds}"
            self._say_fallback(speech, self._config.max_rounds)
        if not any(not u.filler for u in self._utterances) and not self._fallback_spoken:
            self._say_fallback(speech, len(self._rounds))  # never leave the caller in silence
        self._llm_done_at = self._now()

    async def _round(self, number: int, speech: MemoryObjectSendStream[_Utterance]) -> _RoundState:
        state = self._current = _RoundState(number, self._now())
        chunker = SpeechChunker(
            max_chars=self._config.max_chunk_chars, min_first_chars=self._config.min_first_chunk_chars
        )
        messages = self._conversation.messages() + copy.deepcopy(self._pending)
        with log_context(round=number, request_id="-"):
            self._emit(RoundStarted(number, state.started_at))
            bust = self._guard.check(messages, self._tools_schema)
            if bust is not None:
                state.cache_bust = bust.reason
                self._emit(CacheBusted(number, bust.index, bust.reason))
            async with anyio.create_task_group() as tools:
                try:
                    await self._stream_round(state, messages, chunker, speech, tools)
                except LLMError as exc:
                    # Tools already started keep running: their results still count.
                    state.error = exc
                    state.request_id = state.request_id or exc.request_id
                    log.warning("round %d failed: %s", number, exc)
                for text in chunker.flush():
                    self._queue(speech, number, text)
            # A barge-in while the tools drained must not commit the round as finished: the
            # interrupted path in run() does that, answering unfinished calls.
            await anyio.lowlevel.checkpoint_if_cancelled()
            self._commit_round(state)
            if self._stop_after_tools:  # the caller spoke while the tools ran: results kept, stop now
                self._scope.cancel()
                await anyio.lowlevel.checkpoint()
        return state

    async def _stream_round(
        self,
        state: _RoundState,
        messages: list[Message],
        chunker: SpeechChunker,
        speech: MemoryObjectSendStream[_Utterance],
        tools: TaskGroup,
    ) -> None:
        """Read the round's stream within its deadlines; a missed one is an LLMDeadlineError (the stream is
        closed on the way out, tools already started keep running)."""
        first_token, whole = self._config.first_token_timeout, self._config.round_timeout
        start = anyio.current_time()
        with anyio.CancelScope(deadline=_deadline(start, whole)) as round_scope:
            with anyio.CancelScope(deadline=_deadline(start, first_token)) as first_scope:
                state.first_token_scope = first_scope
                await self._read_stream(state, messages, chunker, speech, tools)
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

    async def _read_stream(
        self,
        state: _RoundState,
        messages: list[Message],
        chunker: SpeechChunker,
        speech: MemoryObjectSendStream[_Utterance],
        tools: TaskGroup,
    ) -> None:
        params = dict(self._config.params)
        opening = self._llm.stream(messages, tools=self._tools_schema, **params)
        opened = anyio.Event()
        if self._config.filler and self._config.filler_after is not None and not self._filler_spoken:
            tools.start_soon(self._filler_if_slow, state.number, speech, opened)
        try:
            async with opening as stream:
                opened.set()
                state.request_id = stream.request_id
                set_request_id(stream.request_id)
                try:
                    async for chunk in stream:
                        if state.first_chunk_at is None:
                            state.first_chunk_at = self._now()
                            if state.first_token_scope is not None:
                                state.first_token_scope.deadline = math.inf
                        for event in state.acc.feed(chunk):
                            self._on_stream_event(event, state, chunker, speech, tools)
                        self._check_caps(state)
                    for event in state.acc.end():
                        self._on_stream_event(event, state, chunker, speech, tools)
                finally:
                    state.attempts = stream.attempts
                    state.malformed_chunks = stream.malformed_chunks
        finally:
            opened.set()
            # An LLMStream is its own context manager: its attempts count when no attempt ever opened.
            attempts = getattr(opening, "attempts", None)
            if isinstance(attempts, int):
                state.attempts = max(state.attempts, attempts)

    async def _filler_if_slow(
        self, number: int, speech: MemoryObjectSendStream[_Utterance], opened: anyio.Event
    ) -> None:
        """No dead air while the stream opens slowly: say the filler once the wait passes filler_after."""
        with anyio.move_on_after(self._config.filler_after):
            await opened.wait()
        if not opened.is_set() and self._config.filler and not self._filler_spoken:
            self._filler_spoken = True
            self._queue(speech, number, self._config.filler, filler=True)

    def _on_stream_event(
        self,
        event: StreamEvent,
        state: _RoundState,
        chunker: SpeechChunker,
        speech: MemoryObjectSendStream[_Utterance],
        tools: TaskGroup,
    ) -> None:
        if isinstance(event, TextDelta):
            room = self._config.max_round_chars - state.text_chars
            delta = event.text[:room]
            state.text_chars += len(delta)
            for text in chunker.push(delta) if delta else ():
                self._queue(speech, state.number, text)
            if len(delta) < len(event.text) and state.capped_content is None:
                # An answer that never ends stops here: what fit is spoken (flushed by _round), and the
                # conversation keeps only those words. The stream is closed once the chunk's other
                # events (a tool call it completes) are handled: see _check_caps.
                state.capped_content = state.acc.content[: self._config.max_round_chars]
        elif isinstance(event, ToolCallStarted):
            # Say what was said so far before the tool's silence; fill that silence if nothing was.
            for text in chunker.flush():
                self._queue(speech, state.number, text)
            if self._config.filler and not self._filler_spoken and not state.acc.content.strip():
                self._filler_spoken = True
                self._queue(speech, state.number, self._config.filler, filler=True)
        elif isinstance(event, ToolCallReady):
            state.ready_at[event.id] = self._now()
            if len(state.ready_at) > self._config.max_tool_calls_per_round:
                self._refuse_tool(state, event)
            else:
                tools.start_soon(self._run_tool, state, event)
        elif isinstance(event, StreamFinished):
            # The text is final: its last words are speakable now, not a usage chunk and [DONE] later.
            for text in chunker.flush():
                self._queue(speech, state.number, text)

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
        record = ToolCallRecord(
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
        self._emit(ToolFinished(state.number, call.id, call.name, content, is_error, record.finished_at))

    def _refuse_tool(self, state: _RoundState, call: ToolCallReady) -> None:
        """A call past max_tool_calls_per_round: answered with an error, never run."""
        limit = self._config.max_tool_calls_per_round
        if len(state.ready_at) == limit + 1:
            log.warning(
                "round %d asked for more than %d tool calls; the rest are not run", state.number, limit
            )
        now = self._now()
        content = f"Error: too many tool calls in one round (the limit is {limit}); {call.name} was not run."
        record = ToolCallRecord(
            state.number, call.id, call.name, call.arguments, content, True, now, now, now
        )
        state.results[call.id] = record
        self._emit(ToolFinished(state.number, call.id, call.name, content, True, now))

    def _commit_round(self, state: _RoundState) -> None:
        calls = state.acc.ready_calls
        usage = state.acc.usage or self._estimate_usage(state)
        if calls or state.content:
            self._assistant_at[state.number] = len(self._pending)
            self._pending.append(self._assistant_message(state.content, calls))
            for call in calls:
                done = state.results[call.id]  # the round's task group awaited every dispatched call
                self._pending.append({"role": "tool", "tool_call_id": call.id, "content": done.result})
                self._tool_records.append(done)
        record = self._round_record(state, usage, redact(str(state.error)) if state.error else None)
        self._rounds.append(record)
        self._current = None
        self._emit(RoundFinished(state.number, state.request_id, state.acc.finish_reason, usage, self._now()))

    # -- speech ----------------------------------------------------------------------------------

    def _queue(
        self, speech: MemoryObjectSendStream[_Utterance], number: int, text: str, filler: bool = False
    ) -> None:
        last = self._utterances[-1] if self._utterances else None
        if last is not None and (last.round != number or last.filler or filler):
            # Spoken apart (filler, another round): keep a space between them, as a reader expects.
            if last.text and not last.text[-1].isspace() and not text[:1].isspace():
                text = " " + text
        utterance = _Utterance(number, text, filler)
        self._utterances.append(utterance)
        now = self._now()
        state = self._current
        if state is not None and state.first_text_at is None:
            state.first_text_at = now
        try:
            speech.send_nowait(utterance)
        except anyio.BrokenResourceError:
            pass  # the speaker is gone only after the sink failed; the turn is being stopped then
        except anyio.WouldBlock:  # cannot happen within the caps (_speech_queue_size); never grow past it
            log.error("speech queue full; dropped %d characters", len(text))
        self._emit(SpeechQueued(number, text, now, filler))

    def _say_fallback(self, speech: MemoryObjectSendStream[_Utterance], number: int) -> None:
        self._fallback_spoken = True
        self._queue(speech, number, self._config.fallback, filler=True)

    async def _speak_all(self, utterances: MemoryObjectReceiveStream[_Utterance]) -> None:
        try:
            await self._released.wait()  # a speculative turn's words wait for the end of the turn
            async with utterances:
                async for utterance in utterances:
                    await self._sink.speak(utterance.text)
            await self._sink.flush()
        except Exception as exc:
            # Words nobody hears are not worth generating: stop the turn, keep what was heard.
            self._sink_error = exc
            log.warning("TTS sink failed (%r); ending the turn", exc)
            self._scope.cancel()

    async def _cancel_sink(self) -> None:
        try:
            await self._sink.cancel()
        except Exception as exc:  # a broken sink must not cost the turn its bookkeeping
            log.warning("TTS sink cancel failed: %r", exc)

    async def _fallback_after_sink_failure(self) -> str:
        """Report the sink failure and try the fallback line once; return what was heard of it."""
        failure = redact(f"TTS sink failed: {self._sink_error!r}")
        self._error = f"{self._error}; {failure}" if self._error else failure
        self._fallback_spoken = False  # anything queued before the failure may never have played
        number = len(self._rounds)
        self._utterances.append(_Utterance(number, self._config.fallback, True))
        self._emit(SpeechQueued(number, self._config.fallback, self._now(), True))
        try:
            await self._sink.speak(self._config.fallback)
            await self._sink.flush()
        except Exception as exc:
            log.warning("TTS sink still failing (%r); the fallback line was not spoken", exc)
            return ""
        self._fallback_spoken = True
        return self._config.fallback

    # -- barge-in bookkeeping --------------------------------------------------------------------

    def _heard_chars(self, played: int, interrupted: bool) -> int:
        total = sum(len(u.text) for u in self._utterances)
        return total if not interrupted else max(0, min(played, total))

    async def _commit(self, played_before: int, *, stopped: bool) -> int:
        """Append the turn's messages to the conversation and return how many characters were heard. A
        stopped turn silences the sink first and keeps only what was heard."""
        if stopped:
            with anyio.CancelScope(shield=True):
                await self._cancel_sink()
        heard = self._heard_chars(self._sink.played_chars - played_before, stopped)
        if stopped:
            self._truncate_to_heard(heard)
        for message in self._pending:
            self._append(message)
        return heard

    def _truncate_to_heard(self, heard: int) -> None:
        """Keep what the listener heard of each round's words; answer every dispatched tool call."""
        state = self._current
        cut_round = None
        if state is not None:  # the round in flight when the turn was cancelled
            cut_round = state.number
            self._commit_interrupted_round(state)
        heard_by_round: dict[int, list[str]] = {}
        full_by_round: dict[int, bool] = {}
        position = 0
        for u in self._utterances:
            kept = u.text[: max(0, heard - position)]
            position += len(u.text)
            if u.filler:
                continue
            heard_by_round.setdefault(u.round, []).append(kept)
            full_by_round[u.round] = full_by_round.get(u.round, True) and kept == u.text
        for number, at in self._assistant_at.items():
            # The cut round may have streamed words the chunker still held: they were never spoken,
            # so its message is only what was heard, even when every queued chunk played in full.
            if number != cut_round and full_by_round.get(number, True):
                continue
            message = self._pending[at]
            text = "".join(heard_by_round.get(number, [])).strip()
            message["content"] = text or None
        # An assistant message with neither words nor calls would be rejected by the server.
        self._pending = [
            m
            for m in self._pending
            if not (m["role"] == "assistant" and not m["content"] and not m.get("tool_calls"))
        ]

    def _commit_interrupted_round(self, state: _RoundState) -> None:
        calls = state.acc.ready_calls
        self._assistant_at[state.number] = len(self._pending)
        self._pending.append(self._assistant_message(state.content, calls))
        now = self._now()
        for call in calls:
            done = state.results.get(call.id) or ToolCallRecord(
                state.number,
                call.id,
                call.name,
                call.arguments,
                INTERRUPTED_TOOL_RESULT,
                True,
                state.ready_at.get(call.id, now),
                state.ready_at.get(call.id, now),
                now,
            )
            self._pending.append({"role": "tool", "tool_call_id": call.id, "content": done.result})
            self._tool_records.append(done)
        usage = state.acc.usage or self._estimate_usage(state)
        self._rounds.append(self._round_record(state, usage, "interrupted"))
        self._current = None

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
        prompt = len(json.dumps(self._conversation.messages() + self._pending))
        return Usage(prompt // 4, math.ceil(generated / 4), 0, estimated=True)

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    def _emit(self, event: TurnEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)


def _deadline(start: float, seconds: float | None) -> float:
    return math.inf if seconds is None else start + seconds


def _speech_queue_size(config: TurnConfig) -> int:
    """The speech queue's bound. Each queued chunk holds at least one character of the model's words, a
    round queues at most ``max_round_chars`` of them, and a turn adds at most one filler and one fallback:
    the queue can never need more, whatever the stream sends or however slow the sink."""
    return config.max_rounds * config.max_round_chars + 2
