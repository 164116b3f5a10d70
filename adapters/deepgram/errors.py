"""Errors of the Deepgram streaming STT adapter."""

from __future__ import annotations

from voiceagent.errors import VoiceAgentError


class DeepgramError(VoiceAgentError):
    """Base class of Deepgram STT errors."""


class DeepgramHandshakeError(DeepgramError):
    """The WebSocket upgrade was refused (400 bad query, 401 bad key, 402 no credit, ...)."""

    def __init__(self, status_code: int, body: str) -> None:
        super().__init__(f"Deepgram refused the connection: HTTP {status_code}: {body.strip()[:200]}")
        self.status_code = status_code
        self.body = body


class DeepgramServerError(DeepgramError):
    """The server sent ``{"type": "Error", ...}`` or closed with a DATA/NET error code."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(f"Deepgram error: {message}")
        self.message = message
        self.code = code


class DeepgramConnectionError(DeepgramError):
    """The connection failed or closed before the stream was finished (no ``Metadata``)."""


class DeepgramProtocolError(DeepgramError):
    """A server message could not be understood."""
