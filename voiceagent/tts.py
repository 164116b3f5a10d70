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


@dataclass(frozen=True, slots=True)
class SpokenSpan:
    """One ``speak()`` text and how much of its audio was delivered and heard. ``complete`` is False when
    synthesis stopped early (barge-in, a dropped connection): then ``audio_seconds`` covers only part of
    the text."""

    text: str
    audio_seconds: float
    played_seconds: float
    complete: bool = True

    @property
    def fully_played(self) -> bool:
        return self.complete and self.played_seconds >= self.audio_seconds


@dataclass(frozen=True, slots=True)
class TTFBRecord:
    """Time to first byte of one synthesized chunk: from sending the text to its first audio."""

    text: str
    seconds: float


@runtime_checkable
class AudioOutput(Protocol):
    """Where a sink delivers audio: a file, a test collector, a phone call, a browser.

    Progress is a playhead in seconds: ``written_seconds`` counts audio accepted, ``played_seconds``
    audio the listener has heard (an output that cannot know playback reports what it accepted).
    ``clear()`` drops what has not played yet, after which ``written_seconds == played_seconds``.
    """

    @property
    def sample_rate(self) -> int:
        """The rate ``write`` expects; sinks resample to it."""
        ...

    @property
    def written_seconds(self) -> float: ...

    @property
    def played_seconds(self) -> float: ...

    async def write(self, chunk: AudioChunk) -> None:
        """Accept audio for playback (``chunk.sample_rate`` must equal ``sample_rate``)."""
        ...

    async def wait_played(self) -> None:
        """Return once everything written so far has played."""
        ...

    async def clear(self) -> None:
        """Barge-in: stop playback now and drop everything not yet played."""
        ...
