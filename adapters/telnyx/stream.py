"""``TelnyxMediaStream``: the generic ``MediaStream`` for one Telnyx call, with Telnyx's names.

A frame that names no stream is this call's, as for every provider (``voiceagent.telephony.events``):
each WebSocket carries exactly one Telnyx stream. A frame naming another stream ends the call (1008).
"""

from __future__ import annotations

from voiceagent.telephony.stream import MediaStream

__all__ = ["TelnyxMediaStream"]


class TelnyxMediaStream(MediaStream):
    @property
    def call_control_id(self) -> str:
        """The id Call Control v2 acts on (``start.call_control_id``)."""
        return self.start.call_id
