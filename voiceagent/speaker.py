"""``TTSEngine``, the one thing a TTS vendor writes, and ``Speaker``, which makes any engine a turn's sink.

An engine only turns text into audio bytes at its ``sample_rate``. The ``Speaker`` does everything
else once, for every engine: splitting text for engines with a length limit, the account's concurrency
slot, time to first byte, the odd byte of a byte stream split mid-sample, resampling to the output
(soxr), tagging the first chunk of each text, the heard-ledger (``played_chars``, ``spoken_spans``),
``flush`` and barge-in (``cancel``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import aclosing
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import anyio

from voiceagent.audio import Resampler
from voiceagent.limiter import Limiter
from voiceagent.logs import get_logger
from voiceagent.playback import PlaybackLedger
from voiceagent.text_split import split_text
from voiceagent.tts import AudioChunk, AudioOutput, SpokenSpan, TTFBRecord

__all__ = ["EngineTap", "Speaker", "TTSEngine", "TextStreamingEngine"]

EngineTap = Callable[[str, bytes, int], None]
"""``tap(text, audio, sample_rate)``: a piece of text the Speaker sent its engine and bytes the engine
returned for it, as returned (before resampling; possibly split mid-sample), at the engine's rate."""

logger = get_logger(__name__)


@runtime_checkable
class TTSEngine(Protocol):
    """A TTS vendor: text in, mono PCM16 bytes out, as they arrive.

    The bytes may be split anywhere (even mid-sample). An engine that learns its rate from the audio
    (a WAV header) may update ``sample_rate`` before yielding the first bytes at that rate. Errors are
    ``voiceagent.errors.TTSError`` (``TTSInterruptedError`` once some audio of the text was yielded).
    """

    @property
    def sample_rate(self) -> int:
        """The rate of the bytes ``synthesize`` yields."""
        ...

    def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Audio for ``text``; the iterator ends when the text is fully synthesized."""
        ...

    async def interrupt(self) -> None:
        """Barge-in: synthesis was stopped; make the vendor stop too (close a socket, ...)."""
        ...


@runtime_checkable
class TextStreamingEngine(TTSEngine, Protocol):
    """An engine that takes one text in pieces as they are written (``streams_text`` is True): the
    first words go to the vendor before the sentence is complete (Lightning's ``continue``). Engines
    that need whole text (most HTTP engines) do not declare it and get whole chunks."""

    streams_text: bool

    def synthesize_stream(self, texts: AsyncIterator[str]) -> AsyncIterator[bytes]:
        """Audio for the concatenation of ``texts``, one request; each piece goes out as it comes."""
        ...


class Speaker:
    """The ``TTSSink`` over any ``TTSEngine``, writing to an ``AudioOutput``.

    ``max_chars``: texts longer than this are synthesized piece by piece (at sentence and word
    boundaries). ``limiter``: each piece holds one of the account's slots while it is synthesized.
    Attributes the Speaker does not have are read from the engine (``request_ids``, ...), so a
    vendor's ``...Sink`` built on a Speaker keeps its engine's counters at hand.
    """

    def __init__(
        self,
        engine: TTSEngine,
        output: AudioOutput,
        *,
        max_chars: int | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        if max_chars is not None and max_chars < 1:
            raise ValueError(f"max_chars must be positive, got {max_chars}")
        self.engine = engine
        self.output = output
        self.max_chars = max_chars
        self.limiter = limiter
        self.ttfb: list[TTFBRecord] = []
        self._ledger = PlaybackLedger(output)
        self._speak_lock = anyio.Lock(fast_acquire=True)  # uncontended (always, from a turn): no yield
        self._scope: anyio.CancelScope | None = None  # the speak in progress, for cancel()
        self._idle: anyio.Event | None = None  # made by a cancel() that waits for that speak to end
        self._resampler: Resampler | None = None
        self._taps: list[EngineTap] = []

    def tap(self, listener: EngineTap) -> None:
        """Observe what goes to the engine and what comes back (a recorder does: ``EngineTap``)."""
        self._taps.append(listener)

    def __getattr__(self, name: str) -> Any:
        # Only called for names the Speaker lacks: the engine's own (request_ids, word_timestamps, ...).
        if name.startswith("_") or name == "engine":
            raise AttributeError(name)
        return getattr(self.engine, name)

    # -- lifecycle: an engine that holds a connection is entered with its Speaker ------------------

    async def __aenter__(self) -> Self:
        enter = getattr(self.engine, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        leave = getattr(self.engine, "__aexit__", None)
        if leave is not None:
            await leave(exc_type, exc, tb)

    async def aclose(self) -> None:
        close = getattr(self.engine, "aclose", None)
        if close is not None:
            await close()

    @property
    def streams_text(self) -> bool:
        """The engine takes text in pieces (``TextStreamingEngine``): a turn streams chunks into
        ``speak_stream`` as they are written instead of waiting for each to end."""
        return getattr(self.engine, "streams_text", False) is True and isinstance(
            self.engine, TextStreamingEngine
        )

    # -- TTSSink ------------------------------------------------------------------------------------

    async def speak(self, text: str) -> None:
        if not text:
            return
        lock = self._speak_lock
        await lock.acquire()  # uncontended from a turn; its cancellation check is this call's
        try:
            ledger = self._ledger
            if not text.strip():
                # Nothing audible; the ledger credits it once the playhead reaches it.
                ledger.begin(text, complete=True)
                return
            ledger.begin(text)
            delivered = _Delivered(text, 0.0)  # _piece stamps ``started`` before any audio
            finished = False
            try:
                with _cancel_scope() as scope:
                    self._scope = scope
                    if self.max_chars is None and self.limiter is None:
                        await self._piece(text, delivered)  # what _synthesize does with one whole piece
                    else:
                        await self._synthesize(text, delivered)
                    finished = True
                    ledger.finish()
            finally:
                if not finished and delivered.bytes == 0:
                    # Failed or cancelled before any audio: none of this text can have been heard.
                    ledger.discard_last()
                if self._resampler is not None:
                    self._resampler.reset()
                self._end_speaking()
        finally:
            lock.release()

    def _end_speaking(self) -> None:
        self._scope = None
        idle = self._idle
        if idle is not None:  # a cancel() waits for this speak to end
            self._idle = None
            idle.set()

    async def speak_stream(self, texts: AsyncIterable[str]) -> None:
        """Speak one text given in pieces (a streaming engine only): each piece goes to the engine as it
        arrives, audio is delivered as it comes; the heard-ledger grows with the text."""
        engine = self.engine
        if not isinstance(engine, TextStreamingEngine):
            raise TypeError(f"{type(engine).__name__} does not take text in pieces (streams_text)")
        async with self._speak_lock:
            self._ledger.begin("")
            delivered = _Delivered("", anyio.current_time())
            finished = False
            try:
                with _cancel_scope() as scope:
                    self._scope = scope
                    if self.limiter is None:
                        await self._stream(engine, texts, delivered)
                    else:
                        async with self.limiter.slot():
                            await self._stream(engine, texts, delivered)
                    finished = True
                    self._ledger.finish()
            finally:
                if not finished and delivered.bytes == 0:
                    self._ledger.discard_last()
                if self._resampler is not None:
                    self._resampler.reset()
                self._end_speaking()

    async def _stream(
        self, engine: TextStreamingEngine, texts: AsyncIterable[str], delivered: _Delivered
    ) -> None:
        async def pieces() -> AsyncIterator[str]:
            async for text in texts:
                if not delivered.text:
                    delivered.started = anyio.current_time()  # TTFB from the first words sent
                delivered.text += text
                self._ledger.extend(text)
                yield text

        async with aclosing(pieces()) as source, aclosing(engine.synthesize_stream(source)) as audio:  # type: ignore[type-var]
            async for data in audio:
                for tap in self._taps:
                    tap(delivered.text, data, engine.sample_rate)  # the text sent so far
                await self._deliver(self._resample().process(data), delivered)
        if self._resampler is not None:
            await self._deliver(self._resampler.flush(), delivered)

    async def _synthesize(self, text: str, delivered: _Delivered) -> None:
        pieces = [text] if self.max_chars is None else split_text(text, self.max_chars)
        for piece in pieces:
            if not piece.strip():
                continue
            if self.limiter is None:
                await self._piece(piece, delivered)
                continue
            async with self.limiter.slot():
                await self._piece(piece, delivered)

    async def _piece(self, text: str, delivered: _Delivered) -> None:
        if not delivered.bytes:
            delivered.started = _now()  # TTFB counts from the request, not the slot wait
        audio = self.engine.synthesize(text)
        try:  # what aclosing() does, minus its context manager's frames (this runs per chunk)
            async for data in audio:
                for tap in self._taps:
                    tap(text, data, self.engine.sample_rate)
                await self._deliver(self._resample().process(data), delivered)
        finally:
            await audio.aclose()  # type: ignore[attr-defined]
        if self._resampler is not None:
            await self._deliver(self._resampler.flush(), delivered)  # the filter's tail

    def _resample(self) -> Resampler:
        rate = self.engine.sample_rate
        if self._resampler is None or self._resampler.from_rate != rate:
            self._resampler = Resampler(rate, self.output.sample_rate, carry_odd_byte=True)
        return self._resampler

    async def _deliver(self, pcm16: bytes, delivered: _Delivered) -> None:
        if not pcm16:
            return
        first = delivered.bytes == 0
        if first:
            self.ttfb.append(TTFBRecord(delivered.text, anyio.current_time() - delivered.started))
        chunk = AudioChunk(pcm16, self.output.sample_rate, delivered.text if first else "")
        await self.output.write(chunk)
        delivered.bytes += len(pcm16)
        self._ledger.add_audio(chunk.duration)

    async def flush(self) -> None:
        async with self._speak_lock:
            await self.output.wait_played()
            self._ledger.settle()

    async def cancel(self) -> None:
        scope = self._scope
        if scope is not None:
            scope.cancel()
            # Synthesis stops at its next checkpoint; wait so nothing is written after the clear.
            idle = self._idle
            if idle is None:
                idle = self._idle = anyio.Event()
            with anyio.CancelScope(shield=True):
                await idle.wait()
        await self.engine.interrupt()
        await self.output.clear()
        self._ledger.settle()
        logger.debug("tts cancelled; %d chars heard so far", self.played_chars)

    @property
    def played_chars(self) -> int:
        return self._ledger.played_chars

    @property
    def spoken_spans(self) -> list[SpokenSpan]:
        return self._ledger.spoken_spans


def _now() -> float:
    """``anyio.current_time()``: what it returns on asyncio, without its backend lookup."""
    loop = asyncio._get_running_loop()
    return loop.time() if loop is not None else anyio.current_time()


_asyncio_scope: type[anyio.CancelScope] | None = None


def _cancel_scope() -> anyio.CancelScope:
    """``anyio.CancelScope()``, one per ``speak``. On asyncio its backend's class (learnt from the first
    scope anyio made) is built directly: ``CancelScope.__new__`` looks the backend up on every call and,
    as the class it returns is a subclass, ``__init__`` then runs twice (~90 bytecodes a speak)."""
    global _asyncio_scope
    if _asyncio_scope is not None and asyncio._get_running_loop() is not None:
        return _asyncio_scope()
    scope = anyio.CancelScope()
    if type(scope).__module__ == "anyio._backends._asyncio":
        _asyncio_scope = type(scope)
    return scope


class _Delivered:
    """One text's delivery so far."""

    __slots__ = ("bytes", "started", "text")

    def __init__(self, text: str, started: float) -> None:
        self.text = text
        self.started = started
        self.bytes = 0
