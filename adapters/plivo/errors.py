"""Errors of the Plivo audio-stream adapter."""

from __future__ import annotations

from voiceagent.telephony.errors import MediaStreamProtocolError


class PlivoProtocolError(MediaStreamProtocolError):
    """An audio-stream frame (from Plivo, or to Plivo in the fake) is malformed or out of protocol;
    ``reason`` says how."""
