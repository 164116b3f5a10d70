"""Errors of the Twilio Media Streams adapter."""

from __future__ import annotations

from voiceagent.errors import VoiceAgentError


class TwilioProtocolError(VoiceAgentError):
    """An inbound Media Streams frame is malformed or out of protocol; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TwilioStreamClosed(VoiceAgentError):
    """Audio, a mark or a clear was sent on a stream whose WebSocket is already closed."""
