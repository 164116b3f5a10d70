"""A turn's speech lane: a bounded queue to one speaker task, and the fallback line once.

The turn queues chunks without waiting (``say``), so a slow sink never delays reading the stream or
starting a tool; the speaker task speaks them in order once the turn is released. If the sink raises,
nobody hears the rest: the lane records the failure and calls ``on_failure`` (the turn stops), and
``fallback_after_failure`` tries the fallback line once more on the same sink, which may have reconnected.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from voiceagent.logs import get_logger
from voiceagent.transcript import TurnTranscript, Utterance
from voiceagent.tts import TTSSink

log = get_logger(__name__)


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
        self._send, self._receive = anyio.create_memory_object_stream[Utterance](queue_size)
        self.sink_error: Exception | None = None

    def say(self, round: int, text: str, *, filler: bool = False) -> Utterance:
        """Queue a chunk; never waits (the queue's bound covers a turn's caps)."""
        utterance = self._transcript.say(round, text, filler=filler)
        try:
            self._send.send_nowait(utterance)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the speaker is gone only after the sink failed; the turn is being stopped then
        except anyio.WouldBlock:  # cannot happen within the caps (Turn's queue size); never grow past it
            log.error("speech queue full; dropped %d characters", len(utterance.text))
        return utterance

    def close(self) -> None:
        """No more chunks: the speaker flushes the sink after the last one."""
        self._send.close()

    async def speak_all(self) -> None:
        """The speaker task: run it in the turn's task group."""
        try:
            await self._released.wait()  # a speculative turn's words wait for the end of the turn
            async with self._receive:
                async for utterance in self._receive:
                    await self._sink.speak(utterance.text)
            await self._sink.flush()
        except Exception as exc:
            # Words nobody hears are not worth generating: stop the turn, keep what was heard.
            self.sink_error = exc
            log.warning("TTS sink failed (%r); ending the turn", exc)
            self._on_failure()

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
