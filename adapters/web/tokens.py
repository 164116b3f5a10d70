"""Short-lived, single-use page tokens bound to the WebSocket path, checked on the upgrade.

A token is ``v2.<expiry unix seconds>.<random nonce>.<signature>`` where the signature is the
URL-safe base64 HMAC-SHA256, under the server secret, of everything before it plus the path the
token opens (so a token issued for ``/ws`` opens nothing else). The server embeds a fresh token in
the page it serves; the browser must present it on the upgrade within ``ttl``, and only once: a
redeemed nonce is remembered until the token would have expired anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from voiceagent.errors import VoiceAgentError

_VERSION = "v2"
_MIN_SECRET_BYTES = 16
DEFAULT_TTL = 120.0
# Redeemed-but-unexpired nonces kept; past this many the signer refuses new redemptions for a while
# rather than grow (every entry is a session that really opened within the last ``ttl`` seconds).
MAX_REDEEMED = 100_000


class InvalidTokenError(VoiceAgentError):
    """The token is malformed, forged, signed with another secret or for another path, expired or used."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenSigner:
    def __init__(
        self,
        secret: bytes,
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
        max_redeemed: int = MAX_REDEEMED,
    ) -> None:
        if len(secret) < _MIN_SECRET_BYTES:
            raise ValueError(f"the token secret must be at least {_MIN_SECRET_BYTES} bytes")
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._secret = secret
        self.ttl = ttl
        self._clock = clock
        self._max_redeemed = max_redeemed
        self._redeemed: dict[str, int] = {}  # nonce -> expiry, in redemption order

    def _sign(self, payload: str, path: str) -> str:
        message = f"{payload}|{path}".encode("utf-8", "surrogatepass")
        return _b64(hmac.new(self._secret, message, hashlib.sha256).digest())

    def issue(self, path: str = "/ws", ttl: float | None = None) -> str:
        """A token that opens ``path`` once, within ``ttl`` seconds (default: the signer's)."""
        expires = int(self._clock() + (self.ttl if ttl is None else ttl))
        payload = f"{_VERSION}.{expires}.{secrets.token_urlsafe(12)}"
        return f"{payload}.{self._sign(payload, path)}"

    def check(self, token: str, path: str = "/ws") -> None:
        """Raise ``InvalidTokenError`` unless the token is genuine, for ``path``, unexpired and unused."""
        self._parse(token, path)

    def redeem(self, token: str, path: str = "/ws") -> None:
        """``check`` the token, then use it up: the same token is refused from now on."""
        nonce, expires = self._parse(token, path)
        self._forget_expired()
        if len(self._redeemed) >= self._max_redeemed:
            raise InvalidTokenError("too many sessions opened recently; retry shortly")
        self._redeemed[nonce] = expires

    def _parse(self, token: str, path: str) -> tuple[str, int]:
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != _VERSION or not parts[1].isdigit() or not token.isascii():
            raise InvalidTokenError("malformed token")
        payload, signature = token.rsplit(".", 1)
        # Constant-time: the comparison must not reveal how many leading characters matched.
        if not hmac.compare_digest(signature.encode("ascii"), self._sign(payload, path).encode("ascii")):
            raise InvalidTokenError("bad token signature")
        expires = int(parts[1])
        if expires <= self._clock():
            raise InvalidTokenError("token expired")
        if parts[2] in self._redeemed:
            raise InvalidTokenError("token already used")
        return parts[2], expires

    def _forget_expired(self) -> None:
        now = self._clock()
        for nonce, expires in list(self._redeemed.items()):
            if expires <= now:
                del self._redeemed[nonce]
            elif len(self._redeemed) < self._max_redeemed:
                break  # roughly expiry-ordered: stop at the first live one unless we must make room
