"""TransportOutput: an ``AudioOutput`` that plays through a ``Transport`` (phone call, browser).

Each written chunk is followed by a mark; the far end echoes a mark once the audio before it has
played, which moves the playhead. That is how barge-in knows what the caller actually heard. After
``clear()`` the far end may still echo pending marks (Twilio does): they name audio that was dropped,
so they are ignored.
"""

from __future__ import annotations

import itertools
from collections import deque

import anyio

from voiceagent.transport import Transport
from voiceagent.tts import AudioChunk

_EPSILON = 1e-6


class TransportOutput:
    def __init__(self, transport: Transport, sample_rate: int = 16000) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self._transport = transport
        self._sample_rate = sample_rate
        self._written = 0.0
        self._played = 0.0
        self._marks: deque[tuple[str, float]] = deque()  # (mark name, playhead once it has played)
        self._names = itertools.count(1)
        self._progress = anyio.Event()
        self._closed = False

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def written_seconds(self) -> float:
        return self._written

    @property
    def played_seconds(self) -> float:
        return self._played

    async def write(self, chunk: AudioChunk) -> None:
        if chunk.sample_rate != self._sample_rate:
            raise ValueError(f"chunk is {chunk.sample_rate} Hz, this output takes {self._sample_rate} Hz")
        await self._transport.send_audio(chunk)
        self._written += chunk.duration
        name = f"va-{next(self._names)}"
        self._marks.append((name, self._written))
        await self._transport.mark(name)

    async def wait_played(self) -> None:
        while not self._closed and self._played < self._written - _EPSILON:
            await self._progress.wait()

    async def clear(self) -> None:
        self._marks.clear()
        self._written = self._played
        await self._transport.clear()
        self._notify()

    async def run(self) -> None:
        """Follow the far end's mark echoes until the transport closes. Run it in the session's task group."""
        try:
            async for name in self._transport.played_marks():
                if all(mark != name for mark, _ in self._marks):
                    continue  # dropped by clear(), or not one of ours
                # Marks play in order: every earlier mark's audio has played too.
                while self._marks:
                    mark, self._played = self._marks.popleft()
                    if mark == name:
                        break
                self._notify()
        finally:
            self._closed = True
            self._notify()

    def _notify(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()
