"""``TelnyxServer``: the generic ``MediaStreamServer`` with Telnyx's codec, stream token and call control.

Point Telnyx at it with ``stream_url`` (``wss://your.host/media``), ``stream_bidirectional_mode: rtp``,
the codecs you give ``TelnyxCodec`` (``stream_codec`` / ``stream_bidirectional_codec`` /
``stream_bidirectional_sampling_rate``) and ``stream_auth_token`` on the Call Control command that
starts the stream (``stream_parameters`` builds them), or a TeXML ``<Stream>`` with the token in the
URL (``query_param="token"``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from websockets.asyncio.server import ServerConnection

from voiceagent.telephony import CallControl, StreamStart
from voiceagent.telephony.credentials import FROM_ENV, credential, upgrade_secret
from voiceagent.telephony.server import ControlFactory, MediaStreamServer
from voiceagent.ws_safety import DEFAULT_SEND_TIMEOUT, DEFAULT_WRITE_LIMIT

from .auth import TOKEN_ENV, TelnyxStreamAuth
from .codec import TelnyxCodec
from .control import API_KEY_ENV, DEFAULT_BASE_URL, telnyx_control_factory
from .messages import MAX_FRAME_BYTES
from .stream import TelnyxMediaStream

__all__ = ["CallHandler", "TelnyxServer", "stream_parameters"]

CallHandler = Callable[[TelnyxMediaStream], Awaitable[None]]


def stream_parameters(
    stream_url: str,
    *,
    stream_auth_token: str,
    codec: str = "PCMU",
    sample_rate: int = 8000,
    track: str = "inbound_track",
) -> dict[str, Any]:
    """The Call Control fields (for ``answer``, ``dial`` or ``streaming_start``) that start a
    bidirectional stream this server can carry: the same codec both ways, and the token it checks."""
    return {
        "stream_url": stream_url,
        "stream_track": track,
        "stream_codec": codec,
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": codec,
        "stream_bidirectional_sampling_rate": sample_rate,
        "stream_auth_token": stream_auth_token,
    }


class TelnyxServer(MediaStreamServer[TelnyxMediaStream]):
    """Accepts Telnyx media-stream WebSocket connections on ``path`` and runs ``handler(stream)`` per call
    (a ``TelnyxMediaStream``).

        Upgrades must carry your stream auth token (``x-telnyx-streaming-auth-token``, or the
        ``query_param`` URL parameter for TeXML); it defaults to ``$TELNYX_STREAM_AUTH_TOKEN``. Without one
        the server refuses to start unless you pass ``allow_unsigned=True`` (then anyone who learns the URL
        can run up your STT, LLM and TTS bills). Rejected upgrades get 403.

        ``bidirectional_codec``/``bidirectional_sample_rate`` must be what Telnyx was told
        (``stream_bidirectional_codec``/``..._sampling_rate``; Telnyx's defaults are PCMU at 8000 Hz;
        ``None``: the same as the inbound stream). With a Telnyx API key (``api_key``, default
        ``$TELNYX_API_KEY``) each call gets a ``TelnyxCallControl``: the stream's ``hang_up``,
        ``transfer`` and ``send_dtmf`` go to Call Control v2; ``control_factory`` overrides it. Every other
        behaviour and bound is the generic ``MediaStreamServer``'s.
    """

    def __init__(
        self,
        handler: CallHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/media",
        stream_auth_token: str | None = FROM_ENV,
        query_param: str | None = None,
        allow_unsigned: bool = False,
        bidirectional_codec: str | None = "PCMU",
        bidirectional_sample_rate: int | None = None,
        api_key: str | None = FROM_ENV,
        api_base_url: str = DEFAULT_BASE_URL,
        control_factory: ControlFactory | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        handshake_timeout: float = 10.0,
        audio_buffer_frames: int = 500,
        public_url: str | None = None,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        write_limit: int = DEFAULT_WRITE_LIMIT,
    ) -> None:
        stream_auth_token = upgrade_secret(
            stream_auth_token,
            TOKEN_ENV,
            allow_unsigned=allow_unsigned,
            refusal=f"TelnyxServer needs the stream_auth_token you give Telnyx, to check each upgrade: pass "
            f"stream_auth_token= or set {TOKEN_ENV}. To accept unchecked upgrades (anyone who learns "
            "the URL can then place calls on your bill) pass allow_unsigned=True.",
        )
        api_key = credential(api_key, API_KEY_ENV)
        if control_factory is None and api_key is not None:
            control_factory = telnyx_control_factory(api_key=api_key, base_url=api_base_url)
        super().__init__(
            handler,
            codec=TelnyxCodec(
                bidirectional_codec=bidirectional_codec,
                bidirectional_sample_rate=bidirectional_sample_rate,
                max_frame_bytes=max_frame_bytes,
            ),
            auth=(
                TelnyxStreamAuth(stream_auth_token, query_param=query_param)
                if stream_auth_token is not None
                else None
            ),
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
            "TelnyxServer is accepting UNCHECKED upgrades (allow_unsigned=True): anyone who learns the URL "
            f"can place calls on your STT, LLM and TTS bills. Pass stream_auth_token= or set {TOKEN_ENV}."
        )

    def _open_stream(
        self, ws: ServerConnection, start: StreamStart, control: CallControl | None
    ) -> AbstractAsyncContextManager[TelnyxMediaStream]:
        return TelnyxMediaStream.open(
            ws,
            start,
            codec=self.codec,
            control=control,
            max_frame_bytes=self._max_frame_bytes,
            audio_buffer_frames=self._audio_buffer_frames,
            send_timeout=self._send_timeout,
        )
