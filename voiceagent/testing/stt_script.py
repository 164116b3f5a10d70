"""What a fake STT server hears, timed by the audio it receives (not by the clock), so tests order
events by audio: the script items the Pulse and Deepgram fakes share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BYTES_PER_SAMPLE", "Emit", "Speech", "bytes_per_second"]

# Bytes per sample of the encodings whose size says how much audio a stream holds.
BYTES_PER_SAMPLE = {"linear16": 2, "linear32": 4, "alaw": 1, "mulaw": 1}


@dataclass(frozen=True, slots=True)
class Emit:
    """Send ``message`` (or close with ``close_code``) once ``after_bytes`` of audio have arrived."""

    after_bytes: int
    message: Mapping[str, Any] | None = None
    close_code: int | None = None
    close_reason: str = ""


@dataclass(frozen=True, slots=True)
class Speech:
    """The caller says ``text`` from ``start`` to ``end`` seconds of the stream's audio (its timeline is
    the audio received, converted with the session's encoding and sample rate)."""

    text: str
    start: float
    end: float

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError("Speech needs 0 <= start <= end")


def bytes_per_second(query: Mapping[str, str]) -> int:
    """The audio rate a session's query asks for (``sample_rate``, ``encoding``; 16 kHz linear16 if unset)."""
    return int(query.get("sample_rate", "16000")) * BYTES_PER_SAMPLE.get(query.get("encoding", "linear16"), 2)
