"""G.711 (mu-law / A-law) codecs and a streaming resampler for the telephony adapters (private).

Kept deliberately small and private: voiceagent.audio will own the shared conversions later.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # audioop is deprecated on 3.11/3.12 and provided by the audioop-lts package on 3.13+.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

MULAW_SILENCE = b"\xff"


def ulaw_to_pcm16(data: bytes) -> bytes:
    return audioop.ulaw2lin(data, 2)


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    return audioop.lin2ulaw(pcm, 2)


def pcm16_to_alaw(pcm: bytes) -> bytes:
    return audioop.lin2alaw(pcm, 2)


class PCM16Resampler:
    """Converts a stream of mono PCM16 chunks from one rate to another, keeping filter state between
    chunks (so chunk boundaries do not click) and carrying over a dangling odd byte."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._state: tuple[int, tuple[tuple[int, int], ...]] | None = None
        self._odd = b""

    def convert(self, pcm: bytes) -> bytes:
        data = self._odd + pcm
        cut = len(data) - (len(data) % 2)
        data, self._odd = data[:cut], data[cut:]
        if self.from_rate == self.to_rate or not data:
            return data
        out, self._state = audioop.ratecv(data, 2, 1, self.from_rate, self.to_rate, self._state)
        return out

    def reset(self) -> None:
        self._state = None
        self._odd = b""
