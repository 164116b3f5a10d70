"""``TelnyxMediaStream``: the generic ``MediaStream`` for one Telnyx call, with Telnyx's names.

Telnyx's documented frames name their stream (``stream_id``), and the generic stream checks that name.
A frame that names none is taken as this call's: each WebSocket carries exactly one Telnyx stream, so
that is the only stream it can belong to, and hanging up a live call over a missing field would be
worse than the check is worth. A frame naming another stream still ends the call (1008).
"""

from __future__ import annotations

from voiceagent.telephony.stream import MediaStream

__all__ = ["TelnyxMediaStream"]


class TelnyxMediaStream(MediaStream):
    @property
    def call_control_id(self) -> str:
        """The id Call Control v2 acts on (``start.call_control_id``)."""
        return self.start.call_id

    def _check_id(self, stream_id: str) -> None:
        if stream_id:
            super()._check_id(stream_id)
