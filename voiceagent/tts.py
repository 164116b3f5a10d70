"""The TTS side of the pipeline: the ``TTSSink`` protocol and the audio it produces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Mono 16-bit little-endian PCM, with the text it speaks (empty when unknown)."""

    pcm16: bytes
    sample_rate: int
    text_span: str = ""

    @property
    def duration(self) -> float:
        return len(self.pcm16) / 2 / self.sample_rate


@runtime_checkable
class TTSSink(Protocol):
    """Where a turn's speakable text goes.

    The turn calls ``speak`` from one task, in order, never concurrently, so an implementation may
    take as long as synthesis (or playback) takes: the turn keeps reading the LLM stream and running
    tools meanwhile. ``played_chars`` lets barge-in keep only what the listener actually heard.
    """

    async def speak(self, text: str) -> None:
        """Synthesize ``text`` and deliver its audio downstream; return once it is delivered."""
        ...

    async def flush(self) -> None:
        """The utterance is complete: return once everything delivered has finished playing."""
        ...

    async def cancel(self) -> None:
        """Barge-in: stop at once, drop undelivered audio, stop playback."""
        ...

    @property
    def played_chars(self) -> int:
        """Characters of text, over the sink's life, whose audio the listener has heard (or, when
        the sink cannot know playback, that it has delivered)."""
        ...
