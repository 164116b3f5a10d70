"""A scripted fake telephony provider that dials a real media-stream server, for any provider.

The provider-neutral part of every fake (Twilio's, Telnyx's, Plivo's): it connects over a real
WebSocket, sends the handshake, streams caller audio as 20 ms frames, sends DTMF and stop, and "plays"
the bot's audio: media is consumed in order at ``playback_speed`` times real time (``math.inf``:
instantly), and each mark is reported once the audio before it has played. A clear drops unplayed
audio and, for providers that do, echoes the pending marks. Playback can be paused so tests can
order events without timing.

What differs per provider is its ``ProviderWire``: the frames it sends and how it reads the bot's.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voiceagent.audio import read_wav, resample

from .events import AudioFormat
from .formats import bytes_per_sample, decode, encode, frame_bytes


@dataclass(frozen=True, slots=True)
class BotFrame:
    """One frame the bot sent, as the provider understood it."""

    kind: Literal["media", "mark", "clear", "dtmf"]
    payload: bytes = b""  # media: audio in the wire's outbound_format
    name: str = ""  # mark: its name; dtmf: the digits


@dataclass(frozen=True, slots=True)
class Received:
    """What the provider made of one inbound frame: the decoded ``message`` (kept in ``received``,
    ``None`` when it did not even decode), the ``frame`` it acts on, or the ``error`` the real
    provider would report."""

    message: Any = None
    frame: BotFrame | None = None
    error: str | None = None


class ProviderWire(Protocol):
    """The provider side of one call's wire protocol, written from the provider's docs (not from the
    adapter's codec it tests)."""

    @property
    def inbound_format(self) -> AudioFormat:
        """What the caller's audio is sent as."""
        ...

    @property
    def outbound_format(self) -> AudioFormat:
        """What the bot's audio must arrive as to be played (usually ``inbound_format``)."""
        ...

    @property
    def echoes_cleared_marks(self) -> bool:
        """Whether a clear makes the provider echo the marks it dropped (Twilio does)."""
        ...

    def upgrade_headers(self) -> Sequence[tuple[str, str]]:
        """Headers the provider sends on the upgrade (its request signature)."""
        ...

    def handshake(self) -> list[str]:
        """Frames the provider sends once connected (e.g. ``connected`` then ``start``)."""
        ...

    def media(self, payload: bytes) -> str:
        """One frame of caller audio (``payload``: at most 20 ms in ``inbound_format``)."""
        ...

    def dtmf(self, digit: str) -> str: ...

    def stop(self) -> str: ...

    def mark_played(self, name: str) -> str:
        """The provider's report that mark ``name`` has played (or was cleared, where it echoes those)."""
        ...

    def clear_done(self) -> str | None:
        """The provider's confirmation of a clear, if it sends one."""
        ...

    def read(self, raw: str | bytes) -> Received:
        """Understand one frame from the bot."""
        ...


@dataclass(frozen=True, slots=True)
class EchoedMark:
    name: str
    flushed: bool  # True when echoed because of a clear rather than after playing


class FakeMediaCall:
    """One fake call over ``wire``: ``async with`` dials ``url`` and (``handshake``) starts the stream."""

    def __init__(
        self,
        url: str,
        wire: ProviderWire,
        *,
        playback_speed: float = math.inf,
        start_paused: bool = False,
        handshake: bool = True,
    ) -> None:
        self.url = url
        self.wire = wire
        self.playback_speed = playback_speed
        self._handshake = handshake
        self.received: list[Any] = []  # every decoded message from the app, in order
        self.frames: list[BotFrame] = []  # every frame from the app the provider acted on, in order
        self.played_audio = bytearray()  # in the wire's outbound_format
        self.echoed_marks: list[EchoedMark] = []
        self.clears = 0
        self.dtmf_sent: list[str] = []  # digits the bot sent on the stream
        self.errors: list[str] = []  # what the real provider would reject
        self.close_code: int | None = None
        self.close_reason = ""
        self._queue: deque[BotFrame] = deque()
        self._clear_generation = 0
        self._paused = start_paused
        self._pause_after: str | None = None
        self._changed = anyio.Event()
        self._ws: ClientConnection | None = None
        self._tg: TaskGroup | None = None
        self.closed = anyio.Event()

    # ---- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._ws = await connect(self.url, additional_headers=list(self.wire.upgrade_headers()))
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._read_loop)
        self._tg.start_soon(self._play_loop)
        if self._handshake:
            for frame in self.wire.handshake():
                await self.send_raw(frame)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._tg is not None and self._ws is not None
        await self._ws.close()
        self._tg.cancel_scope.cancel()
        return await self._tg.__aexit__(exc_type, exc, tb)

    # ---- caller side ------------------------------------------------------------------------------

    async def send_raw(self, data: str | bytes) -> None:
        assert self._ws is not None
        await self._ws.send(data)

    async def send_json(self, message: Mapping[str, Any]) -> None:
        await self.send_raw(json.dumps(message))

    async def send_audio(self, encoded: bytes) -> None:
        """Caller audio (in the wire's ``inbound_format``) as the provider sends it: 20 ms frames."""
        size = frame_bytes(self.wire.inbound_format)
        for offset in range(0, len(encoded), size):
            await self.send_raw(self.wire.media(encoded[offset : offset + size]))

    async def send_pcm(self, pcm16: bytes, sample_rate: int) -> None:
        fmt = self.wire.inbound_format
        await self.send_audio(encode(fmt, resample(pcm16, sample_rate, fmt.sample_rate)))

    async def send_wav(self, path: str | Path) -> None:
        pcm, rate = read_wav(path)
        await self.send_pcm(pcm, rate)

    async def send_dtmf(self, digit: str) -> None:
        await self.send_raw(self.wire.dtmf(digit))

    async def stop(self) -> None:
        await self.send_raw(self.wire.stop())

    # ---- playback control and observation ---------------------------------------------------------

    @property
    def played_pcm16(self) -> bytes:
        return decode(self.wire.outbound_format, bytes(self.played_audio))

    @property
    def received_audio(self) -> bytes:
        """All bot audio received (played or not), in the wire's ``outbound_format``."""
        return b"".join(f.payload for f in self.frames if f.kind == "media")

    def pause_playback(self) -> None:
        self._paused = True

    def resume_playback(self) -> None:
        self._paused = False
        self._notify()

    def play_until_mark(self, name: str) -> None:
        """Resume playback and pause again right after echoing mark ``name``."""
        self._pause_after = name
        self.resume_playback()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while True:
            changed = self._changed
            if predicate():
                return
            await changed.wait()

    async def wait_closed(self) -> tuple[int | None, str]:
        await self.closed.wait()
        return self.close_code, self.close_reason

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # ---- provider side ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                await self._handle(raw)
                self._notify()
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self._ws.close_code
            self.close_reason = self._ws.close_reason or ""
            self.closed.set()
            self._notify()

    async def _handle(self, raw: str | bytes) -> None:
        got = self.wire.read(raw)
        if got.message is not None:
            self.received.append(got.message)
        if got.error is not None:
            self.errors.append(got.error)
            return
        frame = got.frame
        if frame is None:
            return
        self.frames.append(frame)
        if frame.kind in ("media", "mark"):
            self._queue.append(frame)
        elif frame.kind == "dtmf":
            self.dtmf_sent.append(frame.name)
        else:
            self.clears += 1
            self._clear_generation += 1
            pending = [f.name for f in self._queue if f.kind == "mark"]
            self._queue.clear()
            if self.wire.echoes_cleared_marks:
                for name in pending:
                    await self._echo_mark(name, flushed=True)
            done = self.wire.clear_done()
            if done is not None:
                await self._send_quietly(done)

    async def _play_loop(self) -> None:
        fmt = self.wire.outbound_format
        bytes_per_second = fmt.sample_rate * bytes_per_sample(fmt)
        while True:
            changed = self._changed
            if self._paused or not self._queue:
                await changed.wait()
                continue
            frame = self._queue.popleft()
            if frame.kind == "mark":
                await self._echo_mark(frame.name, flushed=False)
                if frame.name == self._pause_after:
                    self._paused, self._pause_after = True, None
            else:
                generation = self._clear_generation
                if math.isfinite(self.playback_speed):
                    await anyio.sleep(len(frame.payload) / bytes_per_second / self.playback_speed)
                else:
                    await anyio.lowlevel.checkpoint()  # let the reader see a clear between frames
                if generation == self._clear_generation:  # a clear mid-frame cuts it off
                    self.played_audio += frame.payload
            self._notify()

    async def _echo_mark(self, name: str, *, flushed: bool) -> None:
        self.echoed_marks.append(EchoedMark(name, flushed))
        await self._send_quietly(self.wire.mark_played(name))

    async def _send_quietly(self, frame: str) -> None:
        try:
            await self.send_raw(frame)
        except ConnectionClosed:
            pass
