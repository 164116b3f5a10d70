"""Errors of the Pulse streaming STT adapter."""

from __future__ import annotations

from voiceagent.errors import VoiceAgentError


class PulseError(VoiceAgentError):
    """Base class of Pulse STT errors."""


class PulseHandshakeError(PulseError):
    """The WebSocket upgrade was refused (400 bad query, 401 bad key, ...)."""

    def __init__(self, status_code: int, body: str) -> None:
        super().__init__(f"Pulse refused the connection: HTTP {status_code}: {body.strip()[:200]}")
        self.status_code = status_code
        self.body = body


class PulseServerError(PulseError):
    """The server sent ``{"type": "error", ...}``."""

    def __init__(self, message: str) -> None:
        super().__init__(f"Pulse error: {message}")
        self.message = message


class PulseConcurrencyLimitError(PulseError):
    """The server closed the stream with code 1008: the account's streaming concurrency limit."""


class PulseConnectionError(PulseError):
    """The connection failed or closed before the stream was finished (no ``is_last``)."""


class PulseProtocolError(PulseError):
    """A server message could not be understood."""
