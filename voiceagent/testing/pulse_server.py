"""Moved: the Pulse STT fake lives beside its adapter, in ``voiceagent.adapters.pulse.fake``.

This module re-exports it so older imports keep working; import from the new place.
"""

from voiceagent.adapters.pulse.fake import (
    BOOLEAN_PARAMS,
    ENCODINGS,
    PATH,
    SAMPLE_RATES,
    STREAMING_MODELS,
    FakePulseServer,
    PulseSession,
    ScriptItem,
    error_message,
    speech_ended,
    speech_started,
    transcript,
)
from voiceagent.testing.stt_script import BYTES_PER_SAMPLE, Emit, Speech

__all__ = [
    "BOOLEAN_PARAMS",
    "BYTES_PER_SAMPLE",
    "ENCODINGS",
    "PATH",
    "SAMPLE_RATES",
    "STREAMING_MODELS",
    "Emit",
    "FakePulseServer",
    "PulseSession",
    "ScriptItem",
    "Speech",
    "error_message",
    "speech_ended",
    "speech_started",
    "transcript",
]
