"""``PlivoServer``: the generic ``MediaStreamServer`` with Plivo's codec, signature check and defaults."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from voiceagent.telephony.credentials import FROM_ENV
from voiceagent.telephony.server import ControlFactory, MediaStreamServer
from voiceagent.telephony.stream import MediaStream
from voiceagent.ws_safety import DEFAULT_SEND_TIMEOUT, DEFAULT_WRITE_LIMIT

from .auth import AUTH_TOKEN_ENV, plivo_upgrade_auth
from .codec import PlivoCodec
from .messages import MAX_FRAME_BYTES

CallHandler = Callable[[MediaStream], Awaitable[None]]


class PlivoServer(MediaStreamServer[MediaStream]):
    """Accepts Plivo audio-stream WebSocket connections on ``path`` and runs ``handler(stream)`` per call.

    Point a ``<Stream bidirectional="true" keepCallAlive="true">`` at it (``stream_xml`` writes the
    answer). Upgrades are checked with ``X-Plivo-Signature-V3`` against ``auth_token`` (default
    ``$PLIVO_AUTH_TOKEN``); ``public_url`` is the ``wss://`` URL in your XML (default ``wss://`` + Host +
    path). Without a token the server refuses to start unless ``allow_unsigned=True``.
    ``control_factory`` (e.g. ``PlivoCallControl.factory(transfer_url=...)``) gives each call hang-up,
    transfer and DTMF over Plivo's Call API; without it ``hang_up`` closes the stream, which ends a call
    whose XML had nothing after the ``<Stream>``, and DTMF still goes out on the stream (``sendDTMF``).
    Every bound of ``MediaStreamServer`` applies per call.
    """

    def __init__(
        self,
        handler: CallHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/plivo",
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
        super().__init__(
            handler,
            codec=PlivoCodec(max_frame_bytes=max_frame_bytes),
            auth=plivo_upgrade_auth(auth_token, public_url=public_url, allow_unsigned=allow_unsigned),
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
            "PlivoServer is accepting UNSIGNED upgrades (allow_unsigned=True): anyone who learns the URL "
            f"can place calls on your STT, LLM and TTS bills. Pass auth_token= or set {AUTH_TOKEN_ENV}."
        )
