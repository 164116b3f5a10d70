"""One call's media stream over a websockets connection, as a voiceagent ``Transport`` (any provider).

Everything provider-specific sits behind a ``MediaCodec``: the stream parses frames with it into
``ProviderEvent``s and builds outbound frames with it; the audio (de)coding, 20 ms framing, the mark
ledger, DTMF, bounded buffers and send deadlines are here, once.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Self

import anyio
from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from voiceagent.audio import SAMPLE_WIDTH, Resampler
from voiceagent.logs import get_logger
from voiceagent.marks import MarkLedger, MarkOutcome
from voiceagent.transport_output import TransportOutput
from voiceagent.tts import AudioChunk
from voiceagent.ws_safety import DEFAULT_SEND_TIMEOUT, SendStalledError, close_bounded, send_bounded

from .codec import MediaCodec
from .control import CallControl, CallControlError
from .errors import MediaStreamClosed, MediaStreamProtocolError
from .events import (
    ClearDone,
    DtmfReceived,
    Ignored,
    InboundAudio,
    MarkPlayed,
    Preamble,
    ProviderEvent,
    StreamStart,
    StreamStop,
)
from .formats import decode, encode, frame_bytes, silence

logger = get_logger(__name__)

# Real frames are a few hundred bytes (a 20 ms media frame is ~300 as JSON); a start with many custom
# parameters stays far below this.
MAX_FRAME_BYTES = 64 * 1024
DTMF_BUFFER = 64  # digits held for an app that has not read them yet; more are dropped
DTMF_DIGITS = frozenset("0123456789*#ABCD")

_KINDS: dict[type, str] = {
    StreamStart: "start",
    InboundAudio: "media",
    MarkPlayed: "mark",
    ClearDone: "clear",
    DtmfReceived: "dtmf",
    StreamStop: "stop",
}


def event_kind(event: ProviderEvent) -> str:
    """The wire-neutral name of an event for error messages: ``start``, ``media``, ``mark``, ..."""
    if isinstance(event, Preamble | Ignored):
        return event.event
    return _KINDS[type(event)]


def parse_frame(
    codec: MediaCodec, raw: str | bytes, *, max_frame_bytes: int = MAX_FRAME_BYTES
) -> ProviderEvent:
    """Cap one inbound frame's size, then parse it: ``MediaStreamProtocolError`` on bad input."""
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > max_frame_bytes:
        raise MediaStreamProtocolError(f"frame of {size} bytes exceeds the {max_frame_bytes}-byte limit")
    return codec.parse(raw)


async def read_start(
    ws: Connection, codec: MediaCodec, *, max_frame_bytes: int = MAX_FRAME_BYTES
) -> StreamStart:
    """Read the handshake: an optional ``Preamble`` and then ``StreamStart``, whose formats the codec
    must carry (``codec.check_start``). Anything else is a ``MediaStreamProtocolError``."""
    seen_preamble = False
    while True:
        event = parse_frame(codec, await ws.recv(), max_frame_bytes=max_frame_bytes)
        if isinstance(event, Ignored):
            logger.debug("ignoring unknown event %r before start", event.event)
            continue
        if isinstance(event, StreamStart):
            for fmt in (event.inbound_format, event.outbound_format):
                if fmt.channels != 1:
                    raise MediaStreamProtocolError(f"start: {fmt.channels}-channel audio is not supported")
            codec.check_start(event)
            return event
        if isinstance(event, Preamble) and not seen_preamble:
            seen_preamble = True
            continue
        raise MediaStreamProtocolError(f"expected 'start', got {event_kind(event)!r}")


class MediaStream:
    """A bidirectional media stream for one call, over any provider's ``MediaCodec``.

    Inbound audio is decoded to PCM16 at the inbound rate (``audio_in``); outbound ``AudioChunk``s are
    resampled once to the outbound rate, encoded and sent as 20 ms frames of the outbound format (the
    last one padded with the encoding's silence before a mark). ``mark``/``played_marks`` and the
    ``heard_*`` properties report what the caller has actually heard. Open with ``MediaStream.open``
    (``MediaStreamServer`` does it for you); the stream ends on stop, on disconnect, or on bad input,
    and ``close_reason`` says which.

    It is also the call's ``CallControl``: ``hang_up``/``transfer``/``send_dtmf`` go to the per-call
    ``control`` (the provider's REST API) where one is given. Without one, ``hang_up`` closes the
    stream (for Twilio's ``<Connect><Stream>`` with no verb after it, that ends the call), ``transfer``
    raises ``CallControlError``, and ``send_dtmf`` works only where the stream itself carries DTMF.
    """

    def __init__(
        self,
        ws: Connection,
        start: StreamStart,
        *,
        codec: MediaCodec,
        control: CallControl | None = None,
        audio_buffer_frames: int = 500,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
    ) -> None:
        self._ws = ws
        self.codec = codec
        self.control = control
        self._send_timeout = send_timeout
        self._stalled: str | None = None  # set when a send timed out and the connection was dropped
        self._ending: str | None = None  # set when the app hangs up by closing the stream
        self.start = start
        self.close_reason: str | None = None
        self.dropped_audio_frames = 0
        self._frame_bytes = frame_bytes(start.outbound_format)
        self._ledger = MarkLedger(echoes_cleared=codec.echoes_cleared_marks)
        self._send_lock = anyio.Lock()
        self._pending = bytearray()  # encoded audio not yet sent: less than one 20 ms frame
        self._inbound_odd = b""  # l16 only: a payload may end mid-sample
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
        start: StreamStart,
        *,
        codec: MediaCodec,
        control: CallControl | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        audio_buffer_frames: int = 500,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
    ) -> AsyncIterator[Self]:
        """Run the stream's reader for the body (the start event must already have been read).

        A send blocked for ``send_timeout`` seconds (the provider, or whoever holds the socket, stopped
        reading) drops the connection: the call ends with a reason instead of buffering audio."""
        stream = cls(
            ws,
            start,
            codec=codec,
            control=control,
            audio_buffer_frames=audio_buffer_frames,
            send_timeout=send_timeout,
        )
        async with stream.running(max_frame_bytes):
            yield stream

    @asynccontextmanager
    async def running(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> AsyncIterator[None]:
        """The reader's task, for the body; leaving it ends the stream."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._read_loop, max_frame_bytes)
            try:
                yield
            finally:
                self._finish("closed by the application")  # no-op when the call already ended
                tg.cancel_scope.cancel()

    # ---- start metadata ---------------------------------------------------------------------------

    @property
    def stream_id(self) -> str:
        return self.start.stream_id

    @property
    def call_id(self) -> str:
        return self.start.call_id

    @property
    def custom_parameters(self) -> Mapping[str, str]:
        return self.start.custom_parameters

    @property
    def input_sample_rate(self) -> int:
        return self.start.inbound_format.sample_rate

    @property
    def output_sample_rate(self) -> int:
        return self.start.outbound_format.sample_rate

    @property
    def output(self) -> TransportOutput:
        """The call's ``AudioOutput`` at the outbound rate (so nothing is resampled here): give it to
        the TTS sink; ``Session`` follows its marks."""
        if self._output is None:
            # One ledger: the output reads the stream's marks, so they are counted once.
            self._output = TransportOutput(self, self.output_sample_rate, ledger=self._ledger)
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
        """Caller audio, PCM16 mono at ``input_sample_rate``, one chunk per media frame, until the end."""
        async for pcm in self._audio_rx:
            yield pcm

    async def played_marks(self) -> AsyncIterator[str]:
        """Names of marks the provider reports played (marks flushed by ``clear`` are not reported)."""
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
                self._resampler = Resampler(chunk.sample_rate, self.output_sample_rate, carry_odd_byte=True)
            self._pending += encode(self.start.outbound_format, self._resampler.process(chunk.pcm16))
            self._ledger.audio_sent(chunk.duration, chunk.text_span)
            await self._send_full_frames()

    async def _send_full_frames(self) -> None:
        size = self._frame_bytes
        full = len(self._pending) - len(self._pending) % size
        frames, self._pending = bytes(self._pending[:full]), self._pending[full:]
        for offset in range(0, full, size):
            await self._send(self.codec.build_media(self.start, frames[offset : offset + size]))

    async def mark(self, name: str) -> None:
        """Send any partial frame (padded with silence to 20 ms), then the mark."""
        async with self._send_lock:
            if self._resampler is not None:
                # The mark follows everything sent so far, including what is still in the filter.
                self._pending += encode(self.start.outbound_format, self._resampler.flush())
                await self._send_full_frames()
            await self._flush_pending()
            message = self.codec.build_mark(self.start, name)
            self._ledger.mark_sent(name)
            await self._send(message)

    async def flush(self) -> None:
        """Send the last partial frame now, padded with silence to 20 ms."""
        async with self._send_lock:
            await self._flush_pending()

    async def clear(self) -> None:
        """Barge-in: the provider drops its unplayed audio; unsent audio here is dropped too."""
        async with self._send_lock:
            self._pending.clear()
            if self._resampler is not None:
                self._resampler.reset()
            flushed = self._ledger.cleared()
            if flushed:
                logger.debug("clear flushes pending marks %s", flushed)
            await self._send(self.codec.build_clear(self.start))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await close_bounded(self._ws, code, reason)

    async def _flush_pending(self) -> None:
        if self._pending:
            fmt = self.start.outbound_format
            frame = bytes(self._pending) + silence(fmt, self._frame_bytes - len(self._pending))
            self._pending.clear()
            await self._send(self.codec.build_media(self.start, frame))

    async def _send(self, message: str | bytes) -> None:
        if self.closed:
            raise self._closed_error(f"stream {self.stream_id} is closed: {self.close_reason}")
        try:
            await send_bounded(self._ws, message, seconds=self._send_timeout)
        except ConnectionClosed as exc:
            raise self._closed_error(f"stream {self.stream_id} is closed: {exc}") from None
        except SendStalledError as exc:
            self._stalled = str(exc)
            logger.warning("dropping stream %s: %s", self.stream_id, exc)
            raise self._closed_error(f"stream {self.stream_id} is closed: {exc}") from None

    def _closed_error(self, message: str) -> MediaStreamClosed:
        """The error a send on a closed stream raises (a provider's subclass narrows it)."""
        return MediaStreamClosed(message)

    # ---- call control -----------------------------------------------------------------------------

    async def hang_up(self) -> None:
        """End the call: through the provider's call control when there is one, else by closing the
        stream (the provider then ends a call whose stream was its last step)."""
        if self.control is not None:
            await self.control.hang_up()
            return
        self._ending = "hung up by the application"
        await self.close(1000, "call ended")

    async def transfer(self, to: str) -> None:
        if self.control is None:
            raise CallControlError(
                f"transfer needs call control (REST credentials) for this {self.codec.provider} call: "
                "pass control_factory= to the server"
            )
        await self.control.transfer(to)

    async def send_dtmf(self, digits: str) -> None:
        """DTMF tones to the far end: on the stream where the provider carries them, else through
        call control; ``CallControlError`` when neither can."""
        if not digits or not all(d in DTMF_DIGITS for d in digits):
            raise ValueError(f"DTMF digits must be 0-9, *, # or A-D: {digits[:20]!r}")
        frame = self.codec.build_dtmf(self.start, digits)
        if frame is not None:
            async with self._send_lock:
                await self._send(frame)
        elif self.control is not None:
            await self.control.send_dtmf(digits)
        else:
            raise CallControlError(
                f"{self.codec.provider}'s media stream cannot send DTMF; it needs call control "
                "(REST credentials): pass control_factory= to the server"
            )

    # ---- reader -----------------------------------------------------------------------------------

    async def _read_loop(self, max_frame_bytes: int) -> None:
        reason = "connection closed"
        try:
            while True:
                event = parse_frame(self.codec, await self._ws.recv(), max_frame_bytes=max_frame_bytes)
                if isinstance(event, StreamStop):
                    reason = f"stop received ({event.reason})" if event.reason else "stop received"
                    break
                self._dispatch(event)
        except MediaStreamProtocolError as exc:
            reason = f"protocol error: {exc.reason}"
            logger.warning("closing stream %s: %s", self.stream_id, reason)
            await close_bounded(self._ws, 1008, exc.reason)  # 1008: policy violation
        except ConnectionClosed as exc:
            reason = self._stalled or self._ending or describe_close(exc)
            if self._ending is None and (exc.rcvd is None or exc.rcvd.code not in (1000, 1001)):
                logger.warning("stream %s ended without stop: %s", self.stream_id, reason)
        finally:
            self._finish(reason)

    def _dispatch(self, event: ProviderEvent) -> None:
        if isinstance(event, InboundAudio):
            self._check_id(event.stream_id)
            if event.track == "inbound":
                self._put_audio(self._decode_inbound(event.payload))
        elif isinstance(event, MarkPlayed):
            self._check_id(event.stream_id)
            outcome = self._ledger.mark_echoed(event.name)
            if outcome is MarkOutcome.PLAYED:
                self._marks_tx.send_nowait(event.name)
            elif outcome is MarkOutcome.UNKNOWN:
                logger.warning("echo of unknown mark %r ignored", event.name[:80])
        elif isinstance(event, DtmfReceived):
            self._check_id(event.stream_id)
            try:
                self._dtmf_tx.send_nowait(event.digit)
            except anyio.WouldBlock:
                logger.warning("dtmf consumer is behind; dropping digit %r", event.digit)
        elif isinstance(event, ClearDone):
            self._check_id(event.stream_id)
            logger.debug("provider confirmed the clear")
        elif isinstance(event, Ignored):
            logger.debug("ignoring unknown event %r", event.event)  # providers add event types
        else:
            raise MediaStreamProtocolError(f"unexpected {event_kind(event)!r} after start")

    def _decode_inbound(self, payload: bytes) -> bytes:
        fmt = self.start.inbound_format
        if fmt.encoding == "l16":  # a payload may end mid-sample: hold the byte for the next one
            payload = self._inbound_odd + payload
            cut = len(payload) - len(payload) % SAMPLE_WIDTH
            payload, self._inbound_odd = payload[:cut], payload[cut:]
        elif fmt.encoding == "l16be" and len(payload) % SAMPLE_WIDTH:  # RTP's L16 is whole samples
            raise MediaStreamProtocolError(f"media: L16 payload of odd length {len(payload)}")
        return decode(fmt, payload)

    def _check_id(self, stream_id: str) -> None:
        # "" is this connection's stream (events.py): one stream per WebSocket, and some providers'
        # frames do not name it. Naming another stream is a protocol error.
        if stream_id and stream_id != self.stream_id:
            raise MediaStreamProtocolError(f"stream id {stream_id[:40]!r} does not match {self.stream_id!r}")

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
            logger.info("stream %s ended: %s", self.stream_id, reason)
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
