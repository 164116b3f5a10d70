"""``StreamingSink``: the parts every ``TTSSink`` shares, so an engine adapter only synthesizes.

A subclass implements ``_synthesize(text, delivery)`` and hands each piece of audio, at whatever
rate the engine produces, to ``delivery.audio(pcm16, rate)``. The base class resamples to the output,
tags the first chunk of each text with its ``text_span``, records time to first byte, keeps the
playback ledger (``played_chars``, ``spoken_spans``) and implements ``flush`` and ``cancel``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

import anyio

from voiceagent.audio import Resampler
from voiceagent.limiter import Limiter
from voiceagent.logs import get_logger
from voiceagent.playback import PlaybackLedger
from voiceagent.text_split import split_text
from voiceagent.tts import AudioChunk, AudioOutput, SpokenSpan, TTFBRecord

__all__ = ["Delivery", "StreamingSink"]

logger = get_logger(__name__)


class Delivery:
    """Delivers one text's audio to the output."""

    def __init__(self, sink: StreamingSink, text: str) -> None:
        self._sink = sink
        self.text = text
        self.started = anyio.current_time()
        self.bytes_delivered = 0
        self._resampler: Resampler | None = None

    def restart_clock(self) -> None:
        """Measure time to first byte from now (call when the request is actually sent, e.g. after
        waiting for a connection or a concurrency slot)."""
        self.started = anyio.current_time()

    async def audio(self, pcm16: bytes, sample_rate: int) -> None:
        sink = self._sink
        out_rate = sink.output.sample_rate
        if self._resampler is None or self._resampler.from_rate != sample_rate:
            self._resampler = Resampler(sample_rate, out_rate)
        pcm16 = self._resampler.process(pcm16)
        if not pcm16:
            return
        first = self.bytes_delivered == 0
        if first:
            sink.ttfb.append(TTFBRecord(self.text, anyio.current_time() - self.started))
        chunk = AudioChunk(pcm16, out_rate, self.text if first else "")
        await sink.output.write(chunk)
        self.bytes_delivered += len(pcm16)
        sink._ledger.add_audio(chunk.duration)


class StreamingSink(ABC):
    def __init__(self, output: AudioOutput) -> None:
        self.output = output
        self.ttfb: list[TTFBRecord] = []
        self._ledger = PlaybackLedger(output)
        self._speak_lock = anyio.Lock()
        self._scope: anyio.CancelScope | None = None
        self._idle = anyio.Event()
        self._idle.set()

    async def _synthesize_in_pieces(
        self,
        text: str,
        delivery: Delivery,
        max_chars: int,
        limiter: Limiter | None,
        request: Callable[[str, Delivery], Awaitable[None]],
    ) -> None:
        """For engines with a text-length limit: one ``request`` per piece, each holding a slot of the
        account's limiter when there is one."""
        for piece in split_text(text, max_chars):
            if not piece.strip():
                continue
            if limiter is None:
                await request(piece, delivery)
                continue
            async with limiter.slot():
                if not delivery.bytes_delivered:
                    delivery.restart_clock()  # TTFB counts from the request, not the slot wait
                await request(piece, delivery)

    @abstractmethod
    async def _synthesize(self, text: str, delivery: Delivery) -> None:
        """Synthesize ``text`` and pass its audio to ``delivery.audio`` as it arrives."""

    async def _on_cancel(self) -> None:
        """Engine-specific barge-in work (close a connection...), after synthesis has stopped."""
        return None

    async def speak(self, text: str) -> None:
        if not text:
            return
        async with self._speak_lock:
            if not text.strip():
                # Nothing audible; the ledger credits it once the playhead reaches it.
                self._ledger.begin(text, complete=True)
                return
            self._ledger.begin(text)
            self._idle = anyio.Event()
            delivery = Delivery(self, text)
            finished = False
            try:
                with anyio.CancelScope() as scope:
                    self._scope = scope
                    await self._synthesize(text, delivery)
                    finished = True
                    self._ledger.finish()
            finally:
                if not finished and delivery.bytes_delivered == 0:
                    # Failed or cancelled before any audio: none of this text can have been heard.
                    self._ledger.discard_last()
                self._scope = None
                self._idle.set()

    async def flush(self) -> None:
        async with self._speak_lock:
            await self.output.wait_played()
            self._ledger.settle()

    async def cancel(self) -> None:
        scope = self._scope
        if scope is not None:
            scope.cancel()
            # Synthesis stops at its next checkpoint; wait so nothing is written after the clear.
            with anyio.CancelScope(shield=True):
                await self._idle.wait()
        await self._on_cancel()
        await self.output.clear()
        self._ledger.settle()
        logger.debug("tts cancelled; %d chars heard so far", self.played_chars)

    @property
    def played_chars(self) -> int:
        return self._ledger.played_chars

    @property
    def spoken_spans(self) -> list[SpokenSpan]:
        return self._ledger.spoken_spans
