"""``TelnyxStreamAuth``: the stream auth token Telnyx sends on a media-stream upgrade.

Telnyx signs its webhooks (Ed25519: ``telnyx-signature-ed25519`` over ``telnyx-timestamp|body``,
https://developers.telnyx.com/api-reference/callbacks/call-streaming-failed) but documents no signature
on the media-stream WebSocket. What it documents for the stream is a shared token: pass
``stream_auth_token`` on the Call Control command that starts the stream (dial, answer or
``streaming_start``; "An authentication token to be sent as part of the WebSocket connection", at most
4000 characters, https://developers.telnyx.com/api-reference/call-commands/streaming-start) and
Telnyx "sends it as the x-telnyx-streaming-auth-token WebSocket header" and repeats it in the
``connected`` frame
(https://developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket).

So the upgrade is accepted when that header equals your token (constant-time compare). TeXML's
``<Stream>`` has no token attribute: there, put the token in the stream URL's query
(``wss://host/media?token=...``) and pass ``query_param="token"``; the header is still preferred when
both are present.
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs, urlsplit

from voiceagent.logs import register_secret
from voiceagent.telephony.auth import UpgradeRequest

__all__ = ["MAX_TOKEN_CHARS", "STREAM_AUTH_HEADER", "TOKEN_ENV", "TelnyxStreamAuth"]

STREAM_AUTH_HEADER = "x-telnyx-streaming-auth-token"
TOKEN_ENV = "TELNYX_STREAM_AUTH_TOKEN"
MAX_TOKEN_CHARS = 4000  # Telnyx's documented maximum for stream_auth_token


def _same(given: str, expected: bytes) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected)


class TelnyxStreamAuth:
    """An ``UpgradeAuth`` for Telnyx: the ``x-telnyx-streaming-auth-token`` header (or, with
    ``query_param``, that URL query parameter) must equal ``token``."""

    def __init__(self, token: str, *, query_param: str | None = None) -> None:
        if not isinstance(token, str) or not token:
            raise ValueError("the Telnyx stream auth token must be a non-empty string")
        if len(token) > MAX_TOKEN_CHARS:
            raise ValueError(f"Telnyx accepts stream_auth_token of at most {MAX_TOKEN_CHARS} characters")
        register_secret(token)
        self._expected = token.encode("utf-8", "surrogatepass")
        self._query_param = query_param

    def check(self, request: UpgradeRequest) -> str | None:
        values = request.get_all(STREAM_AUTH_HEADER)
        if len(values) > 1:
            return f"{len(values)} {STREAM_AUTH_HEADER} headers"
        if values:
            return None if _same(values[0], self._expected) else f"wrong {STREAM_AUTH_HEADER}"
        if self._query_param is None:
            return f"no {STREAM_AUTH_HEADER} header"
        given = parse_qs(urlsplit(request.path).query, keep_blank_values=True).get(self._query_param, [])
        if len(given) != 1:
            return f"no {STREAM_AUTH_HEADER} header and {len(given)} {self._query_param!r} query values"
        return None if _same(given[0], self._expected) else f"wrong {self._query_param!r} query value"
