"""One call's Twilio Media Stream over a websockets connection, as a voiceagent ``Transport``."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from voiceagent.audio import Resampler, pcm16_to_ulaw, ulaw_to_pcm16
from voiceagent.logs import get_logger
from voiceagent.marks import MarkLedger, MarkOutcome
from voiceagent.transport_output import TransportOutput
from voiceagent.tts import AudioChunk
from voiceagent.ws_safety import DEFAULT_SEND_TIMEOUT, SendStalledError, close_bounded, send_bounded

from .errors import TwilioProtocolError, TwilioStreamClosed
from .messages import (
    MAX_FRAME_BYTES,
    Connected,
    Dtmf,
    Mark,
    Media,
    Start,
    Stop,
    UnknownEvent,
    build_clear,
    build_mark,
    build_media,
    parse_inbound,
)

logger = get_logger(__name__)

TWILIO_RATE = 8000
FRAME_BYTES = 160  # 20 ms of mu-law at 8 kHz: the frame size Twilio itself uses
MULAW_SILENCE = b"\xff"
DTMF_BUFFER = 64  # digits held for an app that has not read them yet; more are dropped


async def read_start(ws: Connection, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> Start:
    """Read the handshake: an optional ``connected`` and then ``start``. Anything else is a protocol error."""
    seen_connected = False
    while True:
        event = parse_inbound(await ws.recv(), max_bytes=max_frame_bytes)
        if isinstance(event, UnknownEvent):
            logger.debug("ignoring unknown event %r before start", event.event)
            continue
        if isinstance(event, Start):
            if (
                event.media_format.encoding != "audio/x-mulaw"
                or event.media_format.sample_rate != TWILIO_RATE
            ):
                raise TwilioProtocolError(f"start: unsupported media format {event.media_format}")
            return event
        if isinstance(event, Connected) and not seen_connected:
            seen_connected = True
            continue
        raise TwilioProtocolError(f"expected 'start', got {type(event).__name__.lower()!r}")


class TwilioMediaStream:
    """A bidirectional Media Stream for one call.

    Inbound mu-law is decoded to PCM16 at 8 kHz (``audio_in``); outbound ``AudioChunk``s are resampled
    to 8 kHz, mu-law encoded and sent as 20 ms media frames. ``mark``/``played_marks`` and the
    ``heard_*`` properties report what the caller has actually heard. Open with ``TwilioMediaStream.open``
    (``TwilioServer`` does it for you); the stream ends on ``stop``, on disconnect, or on bad input,
    and ``close_reason`` says which.
    """

    def __init__(
        self,
        ws: Connection,
        start: Start,
        *,
        audio_buffer_frames: int = 500,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
    ) -> None:
        self._ws = ws
        self._send_timeout = send_timeout
        self._stalled: str | None = None  # set when a send timed out and the connection was dropped
        self.start = start
        self.close_reason: str | None = None
        self.dropped_audio_frames = 0
        self._ledger = MarkLedger(echoes_cleared=True)
        self._send_lock = anyio.Lock()
        self._pending = bytearray()  # mu-law not yet sent: less than one 20 ms frame
        self._resampler: Resampler | None = None
        self._output: TransportOutput | None = None
        self._closed = anyio.Event()
        self._audio_tx, self._audio_rx = anyio.create_memory_object_stream[bytes](audio_buffer_frames)
        self._marks_tx, self._marks_rx = anyio.create_memory_object_stream[str](math.inf)
        # Bounded: a caller (or anyone on the socket) can press keys faster than an app reads them.
        self._dtmf_tx, self._dtmf_rx = anyio.create_memory_object_stream[str](DTMF_BUFFER)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        ws: Connection,
        start: Start,
        *,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        audio_buffer_frames: int = 500,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
    ) -> AsyncIterator[TwilioMediaStream]:
        """Run the stream's reader for the body (the start event must already have been read).

        A send blocked for ``send_timeout`` seconds (Twilio, or whoever holds the socket, stopped
        reading) drops the connection: the call ends with a reason instead of buffering audio."""
        stream = cls(ws, start, audio_buffer_frames=audio_buffer_frames, send_timeout=send_timeout)
        async with anyio.create_task_group() as tg:
            tg.start_soon(stream._read_loop, max_frame_bytes)
            try:
                yield stream
            finally:
                stream._finish("closed by the application")  # no-op when the call already ended
                tg.cancel_scope.cancel()

    # ---- start metadata ---------------------------------------------------------------------------

    @property
    def stream_sid(self) -> str:
        return self.start.stream_sid

    @property
    def call_sid(self) -> str:
        return self.start.call_sid

    @property
    def custom_parameters(self) -> Mapping[str, str]:
        return self.start.custom_parameters

    @property
    def input_sample_rate(self) -> int:
        return TWILIO_RATE

    @property
    def output(self) -> TransportOutput:
        """The call's ``AudioOutput`` (8 kHz, so nothing is resampled here): give it to the TTS sink;
        ``Session`` follows its marks."""
        if self._output is None:
            self._output = TransportOutput(self, TWILIO_RATE, ledger=self._ledger)  # marks counted once
        return self._output

    # ---- what the caller heard --------------------------------------------------------------------

    @property
    def sent_seconds(self) -> float:
        return self._ledger.sent_seconds

    @property
    def heard_seconds(self) -> float:
        """Seconds of bot audio proven played (up to the last played mark)."""
        return self._ledger.heard_seconds

    @property
    def heard_text(self) -> str:
        """``text_span``s of the chunks proven played, in order."""
        return self._ledger.heard_text

    @property
    def pending_marks(self) -> tuple[str, ...]:
        return self._ledger.pending_marks

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> str:
        await self._closed.wait()
        assert self.close_reason is not None
        return self.close_reason

    # ---- inbound ----------------------------------------------------------------------------------

    async def audio_in(self) -> AsyncIterator[bytes]:
        """Caller audio, PCM16 mono 8 kHz, one chunk per Twilio media frame; ends when the call ends."""
        async for pcm in self._audio_rx:
            yield pcm

    async def played_marks(self) -> AsyncIterator[str]:
        """Names of marks Twilio reports played (marks flushed by ``clear`` are not reported)."""
        async for name in self._marks_rx:
            yield name

    async def dtmf(self) -> AsyncIterator[str]:
        """DTMF digits the caller pressed."""
        async for digit in self._dtmf_rx:
            yield digit

    # ---- outbound ---------------------------------------------------------------------------------

    async def send_audio(self, chunk: AudioChunk) -> None:
        async with self._send_lock:
            if self._resampler is None or self._resampler.from_rate != chunk.sample_rate:
                self._resampler = Resampler(chunk.sample_rate, TWILIO_RATE, carry_odd_byte=True)
            self._pending += pcm16_to_ulaw(self._resampler.process(chunk.pcm16))
            self._ledger.audio_sent(chunk.duration, chunk.text_span)
            await self._send_full_frames()

    async def _send_full_frames(self) -> None:
        full = len(self._pending) - len(self._pending) % FRAME_BYTES
        frames, self._pending = bytes(self._pending[:full]), self._pending[full:]
        for offset in range(0, full, FRAME_BYTES):
            await self._send(build_media(self.stream_sid, frames[offset : offset + FRAME_BYTES]))

    async def mark(self, name: str) -> None:
        """Send any partial frame (padded with silence to 20 ms), then the mark."""
        async with self._send_lock:
            if self._resampler is not None:
                # The mark follows everything sent so far, including what is still in the filter.
                self._pending += pcm16_to_ulaw(self._resampler.flush())
                await self._send_full_frames()
            await self._flush_pending()
            message = build_mark(self.stream_sid, name)
            self._ledger.mark_sent(name)
            await self._send(message)

    async def flush(self) -> None:
        """Send the last partial frame now, padded with silence to 20 ms."""
        async with self._send_lock:
            await self._flush_pending()

    async def clear(self) -> None:
        """Barge-in: Twilio drops its unplayed audio; unsent audio here is dropped too."""
        async with self._send_lock:
            self._pending.clear()
            if self._resampler is not None:
                self._resampler.reset()
            flushed = self._ledger.cleared()
            if flushed:
                logger.debug("clear flushes pending marks %s", flushed)
            await self._send(build_clear(self.stream_sid))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await close_bounded(self._ws, code, reason)

    async def _flush_pending(self) -> None:
        if self._pending:
            frame = bytes(self._pending) + MULAW_SILENCE * (FRAME_BYTES - len(self._pending))
            self._pending.clear()
            await self._send(build_media(self.stream_sid, frame))

    async def _send(self, message: str) -> None:
        if self.closed:
            raise TwilioStreamClosed(f"stream {self.stream_sid} is closed: {self.close_reason}")
        try:
            await send_bounded(self._ws, message, seconds=self._send_timeout)
        except ConnectionClosed as exc:
            raise TwilioStreamClosed(f"stream {self.stream_sid} is closed: {exc}") from None
        except SendStalledError as exc:
            self._stalled = str(exc)
            logger.warning("dropping stream %s: %s", self.stream_sid, exc)
            raise TwilioStreamClosed(f"stream {self.stream_sid} is closed: {exc}") from None

    # ---- reader -----------------------------------------------------------------------------------

    async def _read_loop(self, max_frame_bytes: int) -> None:
        reason = "connection closed"
        try:
            while True:
                raw = await self._ws.recv()
                event = parse_inbound(raw, max_bytes=max_frame_bytes)
                if isinstance(event, Stop):
                    reason = "stop received"
                    break
                self._dispatch(event)
        except TwilioProtocolError as exc:
            reason = f"protocol error: {exc.reason}"
            logger.warning("closing stream %s: %s", self.stream_sid, reason)
            await close_bounded(self._ws, 1008, exc.reason)  # 1008: policy violation
        except ConnectionClosed as exc:
            reason = self._stalled or describe_close(exc)
            if exc.rcvd is None or exc.rcvd.code not in (1000, 1001):
                logger.warning("stream %s ended without stop: %s", self.stream_sid, reason)
        finally:
            self._finish(reason)

    def _dispatch(self, event: Any) -> None:
        if isinstance(event, Media):
            self._check_sid(event.stream_sid)
            if event.track in ("inbound", "inbound_track"):
                self._put_audio(ulaw_to_pcm16(event.payload))
        elif isinstance(event, Mark):
            self._check_sid(event.stream_sid)
            outcome = self._ledger.mark_echoed(event.name)
            if outcome is MarkOutcome.PLAYED:
                self._marks_tx.send_nowait(event.name)
            elif outcome is MarkOutcome.UNKNOWN:
                logger.warning("echo of unknown mark %r ignored", event.name[:80])
        elif isinstance(event, Dtmf):
            self._check_sid(event.stream_sid)
            try:
                self._dtmf_tx.send_nowait(event.digit)
            except anyio.WouldBlock:
                logger.warning("dtmf consumer is behind; dropping digit %r", event.digit)
        elif isinstance(event, UnknownEvent):
            logger.debug("ignoring unknown event %r", event.event)  # Twilio adds event types
        else:
            raise TwilioProtocolError(f"unexpected {type(event).__name__.lower()!r} after start")

    def _check_sid(self, stream_sid: str) -> None:
        if stream_sid != self.stream_sid:
            raise TwilioProtocolError(f"streamSid {stream_sid[:40]!r} does not match {self.stream_sid!r}")

    def _put_audio(self, pcm: bytes) -> None:
        # Live audio: when the consumer is far behind, the oldest frame is the least useful one, and
        # blocking here would also stall mark echoes (and with them barge-in accounting).
        try:
            self._audio_tx.send_nowait(pcm)
        except anyio.WouldBlock:
            self._audio_rx.receive_nowait()
            self._audio_tx.send_nowait(pcm)
            if self.dropped_audio_frames == 0:
                logger.warning("audio consumer is behind; dropping the oldest caller audio")
            self.dropped_audio_frames += 1
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            # The stream has ended (the app returned, a send timed out) while the caller still talks:
            # nobody will read this frame, and it is no reason to fail the call.
            self.dropped_audio_frames += 1

    def _finish(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
            logger.info("stream %s ended: %s", self.stream_sid, reason)
        for tx in (self._audio_tx, self._marks_tx, self._dtmf_tx):
            tx.close()
        self._closed.set()


def describe_close(exc: ConnectionClosed) -> str:
    if exc.sent is not None and exc.sent.code == 1009:
        return "oversized frame (1009 message too big)"
    if exc.rcvd is None:
        return "abrupt disconnect (no close frame)"
    detail = f", {exc.rcvd.reason}" if exc.rcvd.reason else ""
    return f"peer closed the connection (code {exc.rcvd.code}{detail})"
