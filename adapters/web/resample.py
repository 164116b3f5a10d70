"""Streaming PCM16 mono resampling that keeps filter state across chunks (no clicks at chunk seams)."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # audioop is deprecated in 3.11/3.12 and provided by audioop-lts from 3.13 (a core dependency).
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


class Resampler:
    """Converts chunks from any source rate to ``target_rate``; one instance per outgoing stream."""

    def __init__(self, target_rate: int) -> None:
        self.target_rate = target_rate
        self._source_rate: int | None = None
        self._state: tuple[int, tuple[tuple[int, int], ...]] | None = None

    def convert(self, pcm16: bytes, source_rate: int) -> bytes:
        if len(pcm16) % 2:
            raise ValueError("PCM16 audio must have an even number of bytes")
        if source_rate <= 0:
            raise ValueError("sample rate must be positive")
        if source_rate == self.target_rate:
            return pcm16
        if source_rate != self._source_rate:
            self._source_rate, self._state = source_rate, None
        out, self._state = audioop.ratecv(pcm16, 2, 1, source_rate, self.target_rate, self._state)
        return out

    def reset(self) -> None:
        """Forget the filter state: the next chunk starts a new utterance (after a clear)."""
        self._source_rate, self._state = None, None
