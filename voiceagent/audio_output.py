"""Two ``AudioOutput``s in core: a WAV file (optionally paced like a listener) and an in-memory collector."""

from __future__ import annotations

import os
import struct
from os import PathLike
from types import TracebackType

import anyio

from voiceagent.audio import SAMPLE_WIDTH, bytes_for_duration
from voiceagent.tts import AudioChunk

__all__ = ["CollectingOutput", "WavFileOutput"]

_HEADER_SIZE = 44


def _check_chunk(chunk: AudioChunk, sample_rate: int) -> None:
    if chunk.sample_rate != sample_rate:
        raise ValueError(f"chunk is {chunk.sample_rate} Hz but this output plays {sample_rate} Hz")
    if len(chunk.pcm16) % SAMPLE_WIDTH:
        raise ValueError(f"PCM16 chunk has an odd byte count ({len(chunk.pcm16)})")


def _wav_header(sample_rate: int, data_bytes: int) -> bytes:
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        sample_rate,
        sample_rate * SAMPLE_WIDTH,
        SAMPLE_WIDTH,
        16,
        b"data",
        data_bytes,
    )


class _Playhead:
    """A simulated listener: audio plays back to back from when it is written, in real time."""

    def __init__(self) -> None:
        self.written = 0.0
        self._end = 0.0  # event-loop time at which everything written will have played
        self._cleared = anyio.Event()

    def add(self, seconds: float) -> None:
        now = anyio.current_time()
        self._end = max(self._end, now) + seconds
        self.written += seconds

    @property
    def played(self) -> float:
        # Rounded to the nanosecond: (start + d) - start is not exactly d in floating point.
        return round(max(0.0, self.written - max(0.0, self._end - anyio.current_time())), 9)

    async def wait(self) -> None:
        while (remaining := self._end - anyio.current_time()) > 0:
            cleared = self._cleared
            with anyio.move_on_after(remaining):
                await cleared.wait()

    def clear(self) -> float:
        self.written = self.played
        self._end = anyio.current_time()
        self._cleared.set()
        self._cleared = anyio.Event()
        return self.written


class WavFileOutput:
    """Writes a playable mono 16-bit WAV (the header is patched after every write, so the file is valid
    at any moment).

    ``realtime=False``: audio counts as played once written; ``wait_played`` returns at once.
    ``realtime=True``: a simulated listener plays the audio in real time, so ``wait_played`` takes the
    audio's duration, ``played_seconds`` advances with the clock, and ``clear()`` truncates the file to
    what was heard: the WAV is what the listener got.
    """

    def __init__(self, path: str | PathLike[str], sample_rate: int, *, realtime: bool = False) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.path = os.fspath(path)
        self._sample_rate = sample_rate
        self.realtime = realtime
        self._data_bytes = 0
        self._playhead = _Playhead()
        self._lock = anyio.Lock()
        self._file = open(self.path, "w+b")
        self._file.write(_wav_header(sample_rate, 0))
        self._file.flush()

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def written_seconds(self) -> float:
        return self._playhead.written

    @property
    def played_seconds(self) -> float:
        return self._playhead.played if self.realtime else self._playhead.written

    def _append(self, pcm16: bytes) -> None:
        self._file.seek(0, os.SEEK_END)
        self._file.write(pcm16)
        self._data_bytes += len(pcm16)
        self._patch_header()

    def _truncate(self, data_bytes: int) -> None:
        self._data_bytes = min(data_bytes, self._data_bytes)
        self._file.truncate(_HEADER_SIZE + self._data_bytes)
        self._patch_header()

    def _patch_header(self) -> None:
        self._file.seek(0)
        self._file.write(_wav_header(self._sample_rate, self._data_bytes))
        self._file.flush()

    async def write(self, chunk: AudioChunk) -> None:
        _check_chunk(chunk, self._sample_rate)
        if not chunk.pcm16:
            return
        async with self._lock:
            if self._file.closed:
                raise RuntimeError(f"{self.path} is closed")
            await anyio.to_thread.run_sync(self._append, chunk.pcm16)
            self._playhead.add(chunk.duration)

    async def wait_played(self) -> None:
        if self.realtime:
            await self._playhead.wait()

    async def clear(self) -> None:
        if not self.realtime:
            return
        async with self._lock:
            heard = self._playhead.clear()
            if not self._file.closed:
                await anyio.to_thread.run_sync(self._truncate, bytes_for_duration(heard, self._sample_rate))

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    async def aclose(self) -> None:
        async with self._lock:
            self.close()

    async def __aenter__(self) -> WavFileOutput:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class CollectingOutput:
    """Keeps every chunk in memory, for tests and benchmarks.

    ``auto_play=True``: written audio counts as played at once. ``auto_play=False``: a test drives the
    listener with ``play(seconds)``, and ``wait_played`` blocks until it has played everything; no
    clocks, so tests stay deterministic.
    """

    def __init__(self, sample_rate: int, *, auto_play: bool = True) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self._sample_rate = sample_rate
        self.auto_play = auto_play
        self.chunks: list[AudioChunk] = []
        self.clears = 0
        self._written = 0.0
        self._played = 0.0
        self._progress = anyio.Event()
        self.first_write = anyio.Event()

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def written_seconds(self) -> float:
        return self._written

    @property
    def played_seconds(self) -> float:
        return self._written if self.auto_play else self._played

    @property
    def pcm16(self) -> bytes:
        """Everything written, cleared audio included."""
        return b"".join(c.pcm16 for c in self.chunks)

    @property
    def text(self) -> str:
        return "".join(c.text_span for c in self.chunks)

    async def write(self, chunk: AudioChunk) -> None:
        _check_chunk(chunk, self._sample_rate)
        self.chunks.append(chunk)
        self._written += chunk.duration
        self.first_write.set()
        self._notify()

    def play(self, seconds: float | None = None) -> None:
        """Advance the listener by ``seconds`` (all written audio when None)."""
        target = self._written if seconds is None else self._played + seconds
        self._played = min(target, self._written)
        self._notify()

    def _notify(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()

    async def wait_played(self) -> None:
        while self.played_seconds < self._written:
            await self._progress.wait()

    async def clear(self) -> None:
        self.clears += 1
        self._written = self.played_seconds
        self._played = self._written
        self._notify()
