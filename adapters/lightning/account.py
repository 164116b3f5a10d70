"""One in-flight Lightning request per account (base plan): a limiter shared by every sink on an API key.

Lightning allows up to 5 WebSocket connections per account but only one request in flight across them
and the HTTP routes; going over is a 429 or an error frame. Waiting for the slot here costs nothing.
"""

from __future__ import annotations

import hashlib

from voiceagent.limiter import ConcurrencyLimiter

__all__ = ["account_limiter"]

# Keyed by a digest so the registry never holds (or logs) the key itself.
_LIMITERS: dict[str, ConcurrencyLimiter] = {}


def account_limiter(api_key: str, concurrency: int = 1) -> ConcurrencyLimiter:
    """The process-wide limiter for ``api_key``. The first call creates it with ``concurrency`` slots
    (raise it for plans that allow more concurrent TTS requests); later calls share that one."""
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    limiter = _LIMITERS.get(digest)
    if limiter is None:
        limiter = _LIMITERS[digest] = ConcurrencyLimiter(concurrency)
    return limiter
