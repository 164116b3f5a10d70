"""The transport: where caller audio comes from and bot audio goes to (phone, browser)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from voiceagent.tts import AudioChunk

if TYPE_CHECKING:
    from voiceagent.transport_output import TransportOutput


@runtime_checkable
class Transport(Protocol):
    def audio_in(self) -> AsyncIterator[bytes]:
        """Caller audio as PCM16 mono at ``input_sample_rate``."""
        ...

    @property
    def input_sample_rate(self) -> int: ...

    async def send_audio(self, chunk: AudioChunk) -> None: ...

    async def mark(self, name: str) -> None:
        """Ask the far end to report back when everything sent before this mark has played."""
        ...

    async def clear(self) -> None:
        """Drop the far end's buffered, unplayed audio (barge-in)."""
        ...

    def played_marks(self) -> AsyncIterator[str]:
        """Names of marks as the far end reports them played."""
        ...


@runtime_checkable
class TextDisplay(Protocol):
    """A transport that can also show the conversation as text (the web page does; a phone cannot).
    ``Session`` sends it the caller's transcripts and the agent's words as they are queued to speak."""

    async def send_transcript(self, text: str, *, is_final: bool) -> None:
        """What the caller is saying (partial) or said (final)."""
        ...

    async def send_agent_text(self, text: str, *, final: bool = True) -> None:
        """More of the agent's reply; ``final`` ends the reply."""
        ...


@runtime_checkable
class OwnsOutput(Protocol):
    """A transport that owns its ``AudioOutput``: a ``TransportOutput`` at the far end's rate (so audio
    is resampled once, by the ``Speaker``). Build the TTS sink on ``transport.output``; ``Session``
    follows its marks."""

    @property
    def output(self) -> TransportOutput: ...
