"""Fast deterministic test audio for the fake servers: a 440 Hz tone cut from a cached one-second loop
(440 whole cycles, so the loop is seamless), instead of computing every sample per request."""

from __future__ import annotations

from functools import lru_cache

from voiceagent.audio import SAMPLE_WIDTH, sine_pcm16

__all__ = ["tone"]

FREQUENCY = 440


@lru_cache(maxsize=8)
def _one_second(sample_rate: int) -> bytes:
    return sine_pcm16(FREQUENCY, 1.0, sample_rate)


def tone(seconds: float, sample_rate: int) -> bytes:
    """``seconds`` of a 440 Hz tone as PCM16 at ``sample_rate`` (equal to ``sine_pcm16(440, ...)``)."""
    loop = _one_second(sample_rate)
    size = int(seconds * sample_rate) * SAMPLE_WIDTH
    return (loop * (size // len(loop) + 1))[:size]
