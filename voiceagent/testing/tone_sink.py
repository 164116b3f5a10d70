"""ToneEngine: a deterministic ``TTSEngine`` that "speaks" by synthesizing tones, for recordings and
replays; ``ToneSink`` is it wrapped in a ``Speaker``, the way every vendor's engine is.

Every character becomes 20 ms of a sine whose pitch depends on the character, so the same text always
gives byte-identical PCM: cassettes can carry audio digests that a replay must reproduce. Audio goes to
``output`` (by default an in-memory ``CollectingOutput`` at 8 kHz, where written audio counts as played).
"""

from __future__ import annotations

import math
import struct
from collections.abc import AsyncIterator
from functools import lru_cache

from voiceagent.audio_output import CollectingOutput
from voiceagent.speaker import Speaker
from voiceagent.tts import AudioOutput

__all__ = ["SAMPLE_RATE", "CollectingOutput", "ToneEngine", "ToneSink", "tone_pcm"]

SAMPLE_RATE = 8000
_SECONDS_PER_CHAR = 0.02


@lru_cache(maxsize=512)
def _char_tone(char: str, sample_rate: int) -> bytes:
    # Not testing.tone's 440 Hz loop: the pitch, amplitude and int() truncation here are what the
    # recorded cassettes' audio digests were made from, so the bytes must stay exactly these.
    samples_per_char = int(sample_rate * _SECONDS_PER_CHAR)
    freq = 180.0 + (ord(char) % 64) * 12.0
    amplitude = 0 if char.isspace() else 8000
    step = 2 * math.pi * freq
    return struct.pack(
        f"<{samples_per_char}h",
        *(int(amplitude * math.sin(step * i / sample_rate)) for i in range(samples_per_char)),
    )


def tone_pcm(text: str, sample_rate: int = SAMPLE_RATE) -> bytes:
    return b"".join(_char_tone(char, sample_rate) for char in text)


class ToneEngine:
    """The smallest ``TTSEngine`` (docs/adding-a-vendor.md): every character as a 20 ms tone, yielded
    in ``piece_bytes`` pieces that may split a sample, the way a vendor's byte stream does."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, *, piece_bytes: int = 333) -> None:
        self.sample_rate = sample_rate
        self.piece_bytes = piece_bytes
        self.texts: list[str] = []
        self.interrupts = 0

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.texts.append(text)
        pcm = tone_pcm(text, self.sample_rate)
        for start in range(0, len(pcm), self.piece_bytes):
            yield pcm[start : start + self.piece_bytes]

    async def interrupt(self) -> None:
        self.interrupts += 1


class ToneSink(Speaker):
    """A ``ToneEngine`` in a ``Speaker``: the one playback path every vendor's sink takes. ``texts``
    (read from the engine) are the texts synthesized."""

    def __init__(self, output: AudioOutput | None = None) -> None:
        output = output or CollectingOutput(SAMPLE_RATE)
        super().__init__(ToneEngine(output.sample_rate), output)
