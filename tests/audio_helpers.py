"""Signal checks for tests, stdlib only."""

from __future__ import annotations

import math
import struct


def samples(pcm16: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(pcm16) // 2}h", pcm16)


def tone_power(pcm16: bytes, sample_rate: int, frequency: float) -> float:
    """Goertzel: the normalized power of one frequency, so a test can tell a 440 Hz tone from noise."""
    xs = samples(pcm16)
    coeff = 2 * math.cos(2 * math.pi * frequency / sample_rate)
    s_prev = s_prev2 = 0.0
    for x in xs:
        s = x + coeff * s_prev - s_prev2
        s_prev2, s_prev = s_prev, s
    power = s_prev2**2 + s_prev**2 - coeff * s_prev * s_prev2
    return power / max(len(xs), 1) ** 2
