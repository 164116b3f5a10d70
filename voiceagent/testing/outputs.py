"""Test outputs: a ``CollectingOutput`` whose writes can be held, to catch a sink mid-delivery."""

from __future__ import annotations

import anyio

from voiceagent.audio_output import CollectingOutput
from voiceagent.tts import AudioChunk

__all__ = ["GatedOutput"]


class GatedOutput(CollectingOutput):
    """Accepts ``free_writes`` chunks, then blocks each write until ``release()`` (``blocked`` is set
    while a write waits), so a test can cancel a sink while it is provably in the middle of delivering."""

    def __init__(self, sample_rate: int, *, free_writes: int = 1, auto_play: bool = True) -> None:
        super().__init__(sample_rate, auto_play=auto_play)
        self.free_writes = free_writes
        self.blocked = anyio.Event()
        self._gate = anyio.Event()

    def release(self) -> None:
        self._gate.set()

    async def write(self, chunk: AudioChunk) -> None:
        if len(self.chunks) >= self.free_writes and not self._gate.is_set():
            self.blocked.set()
            await self._gate.wait()
        await super().write(chunk)
