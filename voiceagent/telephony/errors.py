"""Errors of the generic media-stream layer; each provider's errors subclass these."""

from __future__ import annotations

from voiceagent.errors import VoiceAgentError


class MediaStreamProtocolError(VoiceAgentError):
    """An inbound media-stream frame is malformed or out of protocol; ``reason`` says how. The stream
    closes that call (1008) with the reason; other calls carry on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MediaStreamClosed(VoiceAgentError):
    """Audio, a mark, a clear or DTMF was sent on a stream whose WebSocket is already closed."""
