"""A websockets server for Twilio Media Streams: the generic ``MediaStreamServer`` with Twilio's codec,
signature check and defaults."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from websockets.asyncio.server import ServerConnection

from voiceagent.telephony import CallControl, StreamStart
from voiceagent.telephony.credentials import FROM_ENV, upgrade_secret
from voiceagent.telephony.server import ControlFactory, MediaStreamServer
from voiceagent.ws_safety import DEFAULT_SEND_TIMEOUT, DEFAULT_WRITE_LIMIT

from .auth import TwilioSignatureAuth
from .codec import TwilioCodec
from .messages import MAX_FRAME_BYTES
from .stream import TwilioMediaStream

CallHandler = Callable[[TwilioMediaStream], Awaitable[None]]

AUTH_TOKEN_ENV = "TWILIO_AUTH_TOKEN"


class TwilioServer(MediaStreamServer[TwilioMediaStream]):
    """Accepts Media Stream WebSocket connections on ``path`` and runs ``handler(stream)`` for each call.

    ``control_factory`` builds each call's ``CallControl`` (Twilio's REST API) from its start; the
    stream's ``hang_up``/``transfer``/``send_dtmf`` then go through it.

    Each call runs in its own task in the server's task group. A call's bad input (garbage or
    oversized frames, a close reason that does not fit), an abrupt disconnect, a peer that stops
    reading or a failing handler ends THAT call with a logged reason; the other calls carry on.
    Unknown event types are ignored (Twilio adds events). Leaving the ``async with`` cancels the
    calls still running.

    Upgrades are signature-checked: Twilio signs the ``wss://`` URL it dials with your Auth Token
    (``X-Twilio-Signature``). ``auth_token`` defaults to ``$TWILIO_AUTH_TOKEN``; ``public_url`` is the
    URL in your TwiML (default: ``wss://`` + the request's Host header + ``path``, right behind a
    proxy that keeps Host). Without a token the server refuses to start unless you pass
    ``allow_unsigned=True`` (then anyone who learns the URL can run up your STT, LLM and TTS bills).

    Memory per call is bounded: inbound frames over ``max_frame_bytes`` close the call (1009), the
    outbound buffer holds ``write_limit`` bytes, and a send blocked for ``send_timeout`` seconds
    drops the connection.
    """

    def __init__(
        self,
        handler: CallHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/media",
        max_frame_bytes: int = MAX_FRAME_BYTES,
        handshake_timeout: float = 10.0,
        audio_buffer_frames: int = 500,
        auth_token: str | None = FROM_ENV,
        public_url: str | None = None,
        allow_unsigned: bool = False,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        write_limit: int = DEFAULT_WRITE_LIMIT,
        control_factory: ControlFactory | None = None,
    ) -> None:
        auth_token = upgrade_secret(
            auth_token,
            AUTH_TOKEN_ENV,
            allow_unsigned=allow_unsigned,
            refusal=f"TwilioServer needs your Twilio Auth Token to check X-Twilio-Signature: pass "
            f"auth_token= or set {AUTH_TOKEN_ENV}. To accept unsigned upgrades (anyone who learns the URL "
            "can then place calls on your bill) pass allow_unsigned=True.",
        )
        super().__init__(
            handler,
            codec=TwilioCodec(),
            auth=TwilioSignatureAuth(auth_token) if auth_token is not None else None,
            allow_unsigned=allow_unsigned,
            control_factory=control_factory,
            host=host,
            port=port,
            path=path,
            max_frame_bytes=max_frame_bytes,
            handshake_timeout=handshake_timeout,
            audio_buffer_frames=audio_buffer_frames,
            public_url=public_url,
            send_timeout=send_timeout,
            write_limit=write_limit,
        )

    def _unsigned_warning(self) -> str:
        return (
            "TwilioServer is accepting UNSIGNED upgrades (allow_unsigned=True): anyone who learns the "
            f"URL can place calls on your STT, LLM and TTS bills. Pass auth_token= or set {AUTH_TOKEN_ENV}."
        )

    def _open_stream(
        self, ws: ServerConnection, start: StreamStart, control: CallControl | None
    ) -> AbstractAsyncContextManager[TwilioMediaStream]:
        return TwilioMediaStream.open(
            ws,
            start,
            codec=self.codec,
            control=control,
            max_frame_bytes=self._max_frame_bytes,
            audio_buffer_frames=self._audio_buffer_frames,
            send_timeout=self._send_timeout,
        )
