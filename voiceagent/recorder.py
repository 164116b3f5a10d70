"""Moved to ``voiceagent.replay.recorder`` (record and replay are one package now).

This module re-exports it so older imports keep working; import from the new place.
"""

from voiceagent.replay.recorder import (
    Recorder,
    RecordingLLM,
    RecordingSTTSource,
    RecordingTTSSink,
    turn_record,
)

__all__ = [
    "Recorder",
    "RecordingLLM",
    "RecordingSTTSource",
    "RecordingTTSSink",
    "turn_record",
]
