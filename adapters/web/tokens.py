"""Short-lived page tokens: HMAC-SHA256 signed expiry, checked on the WebSocket upgrade.

A token is ``v1.<expiry unix seconds>.<random nonce>.<signature>`` where the signature is the
URL-safe base64 HMAC-SHA256 of everything before it under the server secret. The server embeds a
fresh token in the page it serves; the browser must present it on the upgrade within ``ttl``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from voiceagent.errors import VoiceAgentError

_VERSION = "v1"
_MIN_SECRET_BYTES = 16


class InvalidTokenError(VoiceAgentError):
    """The token is malformed, forged, signed with another secret, or expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenSigner:
    def __init__(self, secret: bytes, *, ttl: float = 600.0, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < _MIN_SECRET_BYTES:
            raise ValueError(f"the token secret must be at least {_MIN_SECRET_BYTES} bytes")
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._secret = secret
        self.ttl = ttl
        self._clock = clock

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, ttl: float | None = None) -> str:
        expires = int(self._clock() + (self.ttl if ttl is None else ttl))
        payload = f"{_VERSION}.{expires}.{secrets.token_urlsafe(12)}"
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str) -> None:
        """Return if the token is genuine and unexpired, else raise ``InvalidTokenError`` with the reason."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != _VERSION or not parts[1].isdigit() or not token.isascii():
            raise InvalidTokenError("malformed token")
        payload, signature = token.rsplit(".", 1)
        # Constant-time: the comparison must not reveal how many leading characters matched.
        if not hmac.compare_digest(signature.encode("ascii"), self._sign(payload).encode("ascii")):
            raise InvalidTokenError("bad token signature")
        if int(parts[1]) <= self._clock():
            raise InvalidTokenError("token expired")
