"""Errors of the Twilio Media Streams adapter: the generic media-stream errors, named for Twilio."""

from __future__ import annotations

from voiceagent.telephony.errors import MediaStreamClosed, MediaStreamProtocolError


class TwilioProtocolError(MediaStreamProtocolError):
    """An inbound Media Streams frame is malformed or out of protocol; ``reason`` says how."""


class TwilioStreamClosed(MediaStreamClosed):
    """Audio, a mark or a clear was sent on a stream whose WebSocket is already closed."""
