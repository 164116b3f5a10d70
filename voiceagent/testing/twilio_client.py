"""Moved: the fake Twilio call lives beside its adapter, in ``voiceagent.adapters.twilio.fake_call``.

This module re-exports it so older imports keep working; import from the new place.
"""

from voiceagent.adapters.twilio.fake_call import FRAME_BYTES, EchoedMark, FakeTwilioCall, twilio_signature

__all__ = ["FRAME_BYTES", "EchoedMark", "FakeTwilioCall", "twilio_signature"]
