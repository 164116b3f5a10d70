"""The transport: where caller audio comes from and bot audio goes to (phone, browser)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from voiceagent.tts import AudioChunk


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
