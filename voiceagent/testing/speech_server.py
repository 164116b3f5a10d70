"""Moved: the OpenAI speech fake lives beside its adapter, in ``voiceagent.adapters.openai_speech_fake``.

This module re-exports it so older imports keep working; import from the new place.
"""

from voiceagent.adapters.openai_speech_fake import (
    FORMATS,
    MAX_INPUT,
    SAMPLE_RATE,
    FakeSpeechServer,
    SpeechRequest,
)

__all__ = ["FORMATS", "MAX_INPUT", "SAMPLE_RATE", "FakeSpeechServer", "SpeechRequest"]
