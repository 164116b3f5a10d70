"""One call's Twilio Media Stream: the generic ``MediaStream`` over ``TwilioCodec``, with Twilio's names."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Self

from websockets.asyncio.connection import Connection

from voiceagent.telephony import CallControl, MediaCodec, StreamStart
from voiceagent.telephony.errors import MediaStreamClosed
from voiceagent.telephony.stream import DTMF_BUFFER, MediaStream, describe_close
from voiceagent.telephony.stream import read_start as read_stream_start
from voiceagent.ws_safety import DEFAULT_SEND_TIMEOUT

from .codec import TWILIO_RATE, TwilioCodec, stream_start
from .errors import TwilioStreamClosed
from .messages import MAX_FRAME_BYTES, Start

FRAME_BYTES = 160  # 20 ms of mu-law at 8 kHz: the frame size Twilio itself uses
MULAW_SILENCE = b"\xff"

__all__ = [
    "DTMF_BUFFER",
    "FRAME_BYTES",
    "MULAW_SILENCE",
    "TWILIO_RATE",
    "TwilioMediaStream",
    "describe_close",
    "read_start",
]


async def read_start(ws: Connection, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> StreamStart:
    """Read the handshake: an optional ``connected`` and then ``start``. Anything else is a protocol error."""
    return await read_stream_start(ws, TwilioCodec(), max_frame_bytes=max_frame_bytes)


class TwilioMediaStream(MediaStream):
    """A bidirectional Twilio Media Stream for one call (``MediaStream`` with ``TwilioCodec``).

    Inbound mu-law is decoded to PCM16 at 8 kHz (``audio_in``); outbound ``AudioChunk``s are resampled
    to 8 kHz, mu-law encoded and sent as 20 ms media frames. ``mark``/``played_marks`` and the
    ``heard_*`` properties report what the caller has actually heard. Open with ``TwilioMediaStream.open``
    (``TwilioServer`` does it for you); the stream ends on ``stop``, on disconnect, or on bad input,
    and ``close_reason`` says which. ``hang_up()`` without call control closes the stream, which ends
    a ``<Connect><Stream>`` call with no TwiML verb after it.
    """

    def __init__(
        self,
        ws: Connection,
        start: Start | StreamStart,
        *,
        codec: MediaCodec | None = None,
        control: CallControl | None = None,
        audio_buffer_frames: int = 500,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
    ) -> None:
        super().__init__(
            ws,
            stream_start(start) if isinstance(start, Start) else start,
            codec=codec if codec is not None else TwilioCodec(),
            control=control,
            audio_buffer_frames=audio_buffer_frames,
            send_timeout=send_timeout,
        )

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        ws: Connection,
        start: Start | StreamStart,
        *,
        codec: MediaCodec | None = None,
        control: CallControl | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        audio_buffer_frames: int = 500,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
    ) -> AsyncIterator[Self]:
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

    @property
    def stream_sid(self) -> str:
        return self.start.stream_id

    @property
    def call_sid(self) -> str:
        return self.start.call_id

    @property
    def account_sid(self) -> str:
        return self.start.account_id

    def _closed_error(self, message: str) -> MediaStreamClosed:
        return TwilioStreamClosed(message)
