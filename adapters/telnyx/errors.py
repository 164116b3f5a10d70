"""Errors of the Telnyx media-streaming adapter."""

from __future__ import annotations

from voiceagent.telephony.errors import MediaStreamProtocolError


class TelnyxProtocolError(MediaStreamProtocolError):
    """An inbound Telnyx media-streaming frame is malformed or out of protocol; ``reason`` says how."""
