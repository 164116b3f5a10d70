"""TransportOutput: an ``AudioOutput`` that plays through a ``Transport`` (phone call, browser).

Each written chunk is followed by a mark; the far end echoes a mark once the audio before it has
played, which moves the playhead. That is how barge-in knows what the caller actually heard. The
marks are counted by ``voiceagent.marks.MarkLedger``, the one mark ledger. A transport that owns its
output (``OwnsOutput``: ``TwilioMediaStream.output``, ``WebSession.output``) builds this at its own
rate, so the ``Speaker`` resamples once and the transport passes the audio through.
"""

from __future__ import annotations

import itertools

import anyio

from voiceagent.marks import MarkLedger, MarkOutcome
from voiceagent.transport import Transport
from voiceagent.tts import AudioChunk

_EPSILON = 1e-6


class TransportOutput:
    """``ledger``: the transport's own ``MarkLedger``, when it keeps one (``TwilioMediaStream`` does, to
    read Twilio's echoes of flushed marks): then the transport records every chunk, mark, echo and clear
    and this output only reads it, so each mark is counted once."""

    def __init__(
        self, transport: Transport, sample_rate: int = 16000, *, ledger: MarkLedger | None = None
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self._transport = transport
        self._sample_rate = sample_rate
        self._records = ledger is None
        # played_marks() reports played marks only: marks a clear dropped are forgotten, not awaited.
        self._ledger = ledger if ledger is not None else MarkLedger(echoes_cleared=False)
        self._names = itertools.count(1)
        self._progress = anyio.Event()
        self._closed = False

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def written_seconds(self) -> float:
        return self._ledger.timeline_seconds

    @property
    def played_seconds(self) -> float:
        return self._ledger.heard_seconds

    @property
    def heard_text(self) -> str:
        """``text_span``s of the chunks proven played, in order."""
        return self._ledger.heard_text

    async def write(self, chunk: AudioChunk) -> None:
        if chunk.sample_rate != self._sample_rate:
            raise ValueError(f"chunk is {chunk.sample_rate} Hz, this output takes {self._sample_rate} Hz")
        await self._transport.send_audio(chunk)
        if self._records:
            self._ledger.audio_sent(chunk.duration, chunk.text_span)
        name = f"va-{next(self._names)}"
        if self._records:
            self._ledger.mark_sent(name)
        await self._transport.mark(name)

    async def wait_played(self) -> None:
        while not self._closed and self._ledger.unconfirmed_seconds > _EPSILON:
            await self._progress.wait()

    async def clear(self) -> None:
        if self._records:
            self._ledger.cleared()
        await self._transport.clear()
        self._notify()

    async def run(self) -> None:
        """Follow the far end's mark echoes until the transport closes. ``Session`` runs it."""
        try:
            async for name in self._transport.played_marks():
                # Marks play in order: every earlier mark's audio has played too. An unknown name was
                # dropped by clear(), or is not one of ours.
                if not self._records or self._ledger.mark_echoed(name) is MarkOutcome.PLAYED:
                    self._notify()
        finally:
            self._closed = True
            self._notify()

    def _notify(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()
