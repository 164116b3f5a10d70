"""A turn's speech lane: a bounded queue to one speaker task, and the fallback line once.

The turn queues chunks without waiting (``say``), so a slow sink never delays reading the stream or
starting a tool; the speaker task speaks them in order once the turn is released. If the sink raises,
nobody hears the rest: the lane records the failure and calls ``on_failure`` (the turn stops), and
``fallback_after_failure`` tries the fallback line once more on the same sink, which may have reconnected.

A sink that takes text as it is written (``streams_text``, e.g. the Lightning WebSocket's ``continue``)
gets a chunk's words before the chunk is complete: ``stream`` opens (or extends) the utterance in
progress and the speaker hands its pieces to ``sink.speak_stream`` as they come; the next ``say`` ends it.

The queue is a plain deque with one wake-up event for the speaker, not a memory object stream: that
costs two loop passes and an event per received item, which on a busy worker adds up per chunk. On
asyncio the wake-up is a bare loop future (what ``asyncio.Event.wait`` awaits, without the two Event
objects anyio builds per wait); cancellation reaches it the same way (the task is cancelled while
awaiting a future).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel

from voiceagent.logs import get_logger
from voiceagent.transcript import TurnTranscript, Utterance
from voiceagent.tts import TTSSink

log = get_logger(__name__)


class _Part:
    """A piece of the utterance in progress (streamed sinks); ``last``: the utterance ends with it."""

    __slots__ = ("last", "text")

    def __init__(self, text: str, last: bool) -> None:
        self.text = text
        self.last = last


def streams_text(sink: TTSSink) -> bool:
    """The sink declares it takes an utterance's text in pieces (``streams_text`` and ``speak_stream``)."""
    return getattr(sink, "streams_text", False) is True and callable(getattr(sink, "speak_stream", None))


class SpeechLane:
    def __init__(
        self,
        sink: TTSSink,
        transcript: TurnTranscript,
        *,
        queue_size: int,
        released: anyio.Event,
        on_failure: Callable[[], None],
    ) -> None:
        self._sink = sink
        self._transcript = transcript
        self._released = released
        self._on_failure = on_failure
        self._queue: deque[Utterance | _Part] = deque()
        self._queue_size = queue_size
        self._wake: asyncio.Future[None] | anyio.Event | None = None  # while the speaker waits for an item
        self._closed = False
        self._gone = False  # the speaker stopped (the sink failed): nothing queued is spoken any more
        self.sink_error: Exception | None = None
        self.streams_text = streams_text(sink)
        self._open = False  # an utterance is being streamed (streams_text sinks)
        self._ahead = 0  # characters streamed past the end of the chunks said so far

    def _put(self, item: Utterance | _Part) -> None:
        if self._gone or self._closed:
            return  # the speaker is gone only after the sink failed; the turn is being stopped then
        if len(self._queue) >= self._queue_size:  # cannot happen within the caps (Turn's queue size)
            log.error("speech queue full; dropped %d characters", len(item.text))
            return
        self._queue.append(item)
        wake = self._wake
        if wake is not None:  # the speaker waits: _wake_speaker, inline (this runs per chunk)
            self._wake = None
            if isinstance(wake, asyncio.Future):
                if not wake.done():  # done: the wait was cancelled
                    wake.set_result(None)
            else:
                wake.set()

    def _wake_speaker(self) -> None:
        wake, self._wake = self._wake, None
        if isinstance(wake, asyncio.Future):
            if not wake.done():  # done: the wait was cancelled
                wake.set_result(None)
        elif wake is not None:
            wake.set()

    def say(self, round: int, text: str, *, filler: bool = False) -> Utterance:
        """Queue a chunk; never waits (the queue's bound covers a turn's caps). On a streaming sink a
        chunk whose start was streamed ends the utterance in progress with its unsent rest."""
        if self._open:
            if not filler:
                return self._end_stream(round, text)
            self._end_stream(round, "")  # ours between the model's words: its utterance ends first
        utterance = self._transcript.say(round, text, filler=filler)
        self._put(utterance)
        return utterance

    def stream(self, round: int, held: str) -> bool:
        """``held``: the chunker's text not yet said as chunks; what of it was not streamed yet goes out
        now. Whitespace alone never opens an utterance. True when this opened one."""
        part = held[self._ahead :]
        if not part or (not self._open and not part.strip()):
            return False
        self._ahead = len(held)
        opened = not self._open
        if opened:
            self._open = True
            part = self._transcript.say(round, part).text  # may gain a separating space
        else:
            self._transcript.extend_last(part)
        self._put(_Part(part, False))
        return opened

    def _end_stream(self, round: int, chunk: str) -> Utterance:
        """The chunker said ``chunk``, whose start (``_ahead`` characters) was streamed already."""
        ahead = self._ahead
        if len(chunk) < ahead and chunk:  # cut inside text already streamed: said in this utterance
            self._ahead = ahead - len(chunk)
            return Utterance(round, chunk, False)
        rest = chunk[ahead:]
        self._open, self._ahead = False, 0
        if rest:
            self._transcript.extend_last(rest)
        self._put(_Part(rest, True))
        return Utterance(round, chunk, False)

    def close(self) -> None:
        """No more chunks: the speaker flushes the sink after the last one."""
        if self._open:  # an utterance left open (the stream broke): what was streamed is all there is
            self._open, self._ahead = False, 0
            self._put(_Part("", True))
        self._closed = True
        self._wake_speaker()

    async def _next(self) -> Utterance | _Part | None:
        while not self._queue:
            if self._closed:
                return None
            try:
                future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            except RuntimeError:  # not asyncio (trio)
                event = self._wake = anyio.Event()
                await event.wait()
            else:
                self._wake = future
                await future
        # Between items, as a memory stream's receive did: a stopped turn speaks nothing more.
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self._queue.popleft()

    async def speak_all(self) -> None:
        """The speaker task: run it in the turn's task group."""
        try:
            await self._released.wait()  # a speculative turn's words wait for the end of the turn
            while (item := await self._next()) is not None:
                if isinstance(item, _Part):
                    sink: Any = self._sink
                    await sink.speak_stream(self._parts(item))
                else:
                    await self._sink.speak(item.text)
            await self._sink.flush()
        except Exception as exc:
            # Words nobody hears are not worth generating: stop the turn, keep what was heard.
            self.sink_error = exc
            log.warning("TTS sink failed (%r); ending the turn", exc)
            self._on_failure()
        finally:
            self._gone = True
            self._queue.clear()

    async def _parts(self, first: _Part) -> AsyncIterator[str]:
        """One streamed utterance's pieces, as the turn queues them."""
        part: Utterance | _Part | None = first
        while isinstance(part, _Part):
            if part.text:
                yield part.text
            if part.last:
                return
            part = await self._next()
        if part is not None:  # pragma: no cover - say() ends a streamed utterance before queueing another
            self._queue.appendleft(part)

    async def cancel_sink(self) -> None:
        try:
            await self._sink.cancel()
        except Exception as exc:  # a broken sink must not cost the turn its bookkeeping
            log.warning("TTS sink cancel failed: %r", exc)

    async def fallback_after_failure(self, round: int, fallback: str) -> bool:
        """Speak the fallback line once, straight to the sink; True when it was spoken."""
        self._transcript.utterances.append(Utterance(round, fallback, True))
        try:
            await self._sink.speak(fallback)
            await self._sink.flush()
        except Exception as exc:
            log.warning("TTS sink still failing (%r); the fallback line was not spoken", exc)
            return False
        return True
