"""Moved to ``voiceagent.replay.timeline`` (record and replay are one package now).

This module re-exports it so older imports keep working; import from the new place.
"""

from voiceagent.replay.timeline import (
    BARGE_IN,
    LEGEND,
    ChunkMark,
    PlayedSpan,
    RoundSpan,
    SpeechMark,
    Timeline,
    TurnTimeline,
)

__all__ = [
    "BARGE_IN",
    "LEGEND",
    "ChunkMark",
    "PlayedSpan",
    "RoundSpan",
    "SpeechMark",
    "Timeline",
    "TurnTimeline",
]
