"""A scripted fake Telnyx call: plays Telnyx's media-streaming protocol against a real server.

Written from Telnyx's documentation (https://developers.telnyx.com/docs/voice/programmable-voice/media-streaming,
https://developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket), not from the
adapter it tests. It dials over a real WebSocket with the ``x-telnyx-streaming-auth-token`` header
(when given a token), sends ``connected`` (repeating the token) and ``start`` (``media_format``,
``call_control_id``, ``client_state``, ``custom_parameters``), streams caller audio as 20 ms ``media``
frames in PCMU, PCMA or L16 (RTP payloads: L16 big-endian), sends ``dtmf`` and ``stop``.

It "plays" what the app sends in the bidirectional codec: media in order at ``playback_speed`` times
real time (1.0 by default; ``math.inf``: instantly); a mark comes back once the media before it has
played (at once when nothing is queued); ``clear`` drops unplayed media and sends the queued marks
back, as Telnyx documents. A frame Telnyx would refuse gets an ``error`` frame (100003 malformed) and
is recorded in ``errors``. Playback can be paused so tests can order events without timing.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voiceagent.audio import pcm16_to_alaw, pcm16_to_ulaw, resample, ulaw_to_pcm16

__all__ = ["EchoedMark", "FakeTelnyxCall", "alaw_decode", "decode_to_pcm16", "encode_pcm16"]

FRAME_MS = 20
MIN_PLAYBACK_MS = 20  # "RTP media chunks sent back to Telnyx can contain 20 milliseconds to 30 seconds"
MAX_PLAYBACK_MS = 30_000
AUTH_HEADER = "x-telnyx-streaming-auth-token"


def _alaw_sample(byte: int) -> int:
    # ITU-T G.711 A-law expansion.
    value = byte ^ 0x55
    exponent = (value & 0x70) >> 4
    magnitude = ((value & 0x0F) << 4) + 8
    if exponent:
        magnitude = (magnitude + 0x100) << (exponent - 1)
    return magnitude if value & 0x80 else -magnitude


_ALAW_TABLE = [_alaw_sample(b).to_bytes(2, "little", signed=True) for b in range(256)]


def alaw_decode(data: bytes) -> bytes:
    """A-law to little-endian PCM16 (written from G.711, independent of voiceagent.audio)."""
    return b"".join(_ALAW_TABLE[b] for b in data)


def _swap(data: bytes) -> bytes:
    out = bytearray(len(data) - len(data) % 2)
    out[0::2] = data[1 : len(out) : 2]
    out[1::2] = data[0 : len(out) : 2]
    return bytes(out)


def encode_pcm16(pcm16: bytes, encoding: str) -> bytes:
    """Little-endian PCM16 to a Telnyx RTP payload in ``encoding`` (at the same sample rate)."""
    if encoding == "PCMU":
        return pcm16_to_ulaw(pcm16)
    if encoding == "PCMA":
        return pcm16_to_alaw(pcm16)
    if encoding == "L16":
        return _swap(pcm16)  # RTP L16 is network byte order (RFC 3551, 4.5.11)
    raise ValueError(f"the fake carries PCMU, PCMA and L16, not {encoding!r}")


def decode_to_pcm16(payload: bytes, encoding: str) -> bytes:
    if encoding == "PCMU":
        return ulaw_to_pcm16(payload)
    if encoding == "PCMA":
        return alaw_decode(payload)
    if encoding == "L16":
        return _swap(payload)
    raise ValueError(f"the fake carries PCMU, PCMA and L16, not {encoding!r}")


def _bytes_per_ms(encoding: str, sample_rate: int) -> float:
    return sample_rate / 1000 * (2 if encoding == "L16" else 1)


@dataclass(frozen=True, slots=True)
class EchoedMark:
    name: str
    flushed: bool  # True when sent back because of a clear rather than after playing


class FakeTelnyxCall:
    def __init__(
        self,
        url: str,
        *,
        encoding: str = "PCMU",
        sample_rate: int = 8000,
        bidirectional_codec: str = "PCMU",
        bidirectional_sample_rate: int = 8000,
        stream_auth_token: str | None = None,
        custom_parameters: Mapping[str, str] | None = None,
        client_state: str = "",
        stream_id: str = "32de0dea-53cb-4b21-89a4-9e1819c043bc",
        call_control_id: str = "v3:fake-telnyx-call-control-id-0001",
        call_session_id: str = "ff55a038-6f5d-11ef-9692-02420aeffb1f",
        user_id: str = "3e6f995f-85f7-4705-9741-53b116d28237",
        playback_speed: float = 1.0,
        start_paused: bool = False,
        handshake: bool = True,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.bidirectional_codec = bidirectional_codec
        self.bidirectional_sample_rate = bidirectional_sample_rate
        self.stream_auth_token = stream_auth_token
        self.custom_parameters = dict(custom_parameters or {})
        self.client_state = client_state
        self.stream_id = stream_id
        self.call_control_id = call_control_id
        self.call_session_id = call_session_id
        self.user_id = user_id
        self.playback_speed = playback_speed
        self._handshake = handshake
        self._extra_headers = dict(extra_headers or {})
        self.received: list[dict[str, Any]] = []  # every message from the app, in order
        self.played_payload = bytearray()  # in the bidirectional codec, as received
        self.echoed_marks: list[EchoedMark] = []
        self.clears = 0
        self.errors: list[str] = []  # what real Telnyx would refuse
        self.close_code: int | None = None
        self.close_reason = ""
        self._queue: deque[tuple[str, bytes | str]] = deque()
        self._clear_generation = 0
        self._paused = start_paused
        self._pause_after: str | None = None
        self._changed = anyio.Event()
        self._sequence = itertools.count(1)
        self._chunk = itertools.count(1)
        self._media_ms = 0
        self._ws: ClientConnection | None = None
        self._tg: TaskGroup | None = None
        self.closed = anyio.Event()

    # ---- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeTelnyxCall:
        headers = dict(self._extra_headers)
        if self.stream_auth_token is not None:
            headers[AUTH_HEADER] = self.stream_auth_token
        self._ws = await connect(self.url, additional_headers=headers)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._read_loop)
        self._tg.start_soon(self._play_loop)
        if self._handshake:
            await self.send_json(self.connected_message())
            await self.send_json(self.start_message())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._tg is not None and self._ws is not None
        await self._ws.close()
        self._tg.cancel_scope.cancel()
        return await self._tg.__aexit__(exc_type, exc, tb)

    def connected_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"event": "connected", "version": "1.0.0"}
        if self.stream_auth_token is not None:
            message["connected"] = {AUTH_HEADER: self.stream_auth_token}
        return message

    def start_message(self) -> dict[str, Any]:
        return {
            "event": "start",
            "sequence_number": str(next(self._sequence)),
            "stream_id": self.stream_id,
            "start": {
                "user_id": self.user_id,
                "call_control_id": self.call_control_id,
                "call_session_id": self.call_session_id,
                "from": "+13122010094",
                "to": "+13122123456",
                "tags": ["TAG1"],
                "client_state": self.client_state,
                "custom_parameters": self.custom_parameters,
                "media_format": {"encoding": self.encoding, "sample_rate": self.sample_rate, "channels": 1},
            },
        }

    # ---- caller side ------------------------------------------------------------------------------

    async def send_raw(self, data: str | bytes) -> None:
        assert self._ws is not None
        await self._ws.send(data)

    async def send_json(self, message: Mapping[str, Any]) -> None:
        await self.send_raw(json.dumps(message))

    async def send_payload(self, payload: bytes) -> None:
        """Caller audio already in the stream codec, as Telnyx sends it: 20 ms media frames."""
        step = int(_bytes_per_ms(self.encoding, self.sample_rate) * FRAME_MS)
        for offset in range(0, len(payload), step):
            await self.send_json(self.media_message(payload[offset : offset + step]))

    def media_message(self, frame: bytes, *, track: str = "inbound") -> dict[str, Any]:
        """One media frame as Telnyx sends it (advances the sequence, chunk and timestamp)."""
        message = {
            "event": "media",
            "sequence_number": str(next(self._sequence)),
            "media": {
                "track": track,
                "chunk": str(next(self._chunk)),
                "timestamp": str(self._media_ms),
                "payload": base64.b64encode(frame).decode("ascii"),
            },
            "stream_id": self.stream_id,
        }
        self._media_ms += FRAME_MS
        return message

    def dtmf_message(self, digit: str) -> dict[str, Any]:
        return {
            "event": "dtmf",
            "stream_id": self.stream_id,
            "occurred_at": "2026-12-02T12:04:45.000000Z",
            "sequence_number": str(next(self._sequence)),
            "dtmf": {"digit": digit},
        }

    async def send_pcm(self, pcm16: bytes, sample_rate: int) -> None:
        pcm = resample(pcm16, sample_rate, self.sample_rate)
        await self.send_payload(encode_pcm16(pcm, self.encoding))

    async def send_dtmf(self, digit: str) -> None:
        await self.send_json(self.dtmf_message(digit))

    async def stop(self) -> None:
        await self.send_json(
            {
                "event": "stop",
                "sequence_number": str(next(self._sequence)),
                "stop": {"user_id": self.user_id, "call_control_id": self.call_control_id},
                "stream_id": self.stream_id,
            }
        )

    # ---- playback control and observation ---------------------------------------------------------

    @property
    def played_pcm16(self) -> bytes:
        """What the caller heard, as little-endian PCM16 at ``bidirectional_sample_rate``."""
        return decode_to_pcm16(bytes(self.played_payload), self.bidirectional_codec)

    @property
    def received_payload(self) -> bytes:
        """All bot audio received (played or not), in the bidirectional codec."""
        return b"".join(
            base64.b64decode(m["media"]["payload"]) for m in self.received if m.get("event") == "media"
        )

    def pause_playback(self) -> None:
        self._paused = True

    def resume_playback(self) -> None:
        self._paused = False
        self._notify()

    def play_until_mark(self, name: str) -> None:
        """Resume playback and pause again right after sending mark ``name`` back."""
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

    # ---- Telnyx side ------------------------------------------------------------------------------

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

    async def _refuse(self, why: str) -> None:
        self.errors.append(why)
        await self._send_quietly(
            {
                "event": "error",
                "sequence_number": str(next(self._sequence)),
                "stream_id": self.stream_id,
                "payload": {"code": 100003, "title": "Malformed frame", "detail": why[:120]},
            }
        )

    async def _handle(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            await self._refuse(f"invalid JSON: {raw[:60]!r}")
            return
        if not isinstance(message, dict):
            await self._refuse(f"not a JSON object: {raw[:60]!r}")
            return
        self.received.append(message)
        event = message.get("event")
        if event == "media":
            media = message.get("media")
            try:
                assert isinstance(media, dict)
                payload = base64.b64decode(media["payload"], validate=True)
            except (AssertionError, KeyError, TypeError, binascii.Error):
                await self._refuse(f"bad media payload: {raw[:80]!r}")
                return
            ms = len(payload) / _bytes_per_ms(self.bidirectional_codec, self.bidirectional_sample_rate)
            if not MIN_PLAYBACK_MS <= ms <= MAX_PLAYBACK_MS:
                self.errors.append(f"media chunk of {ms:g} ms (Telnyx takes 20 ms to 30 s)")
            if self.bidirectional_codec == "L16" and len(payload) % 2:
                await self._refuse("L16 media of odd length")
                return
            self._queue.append(("media", payload))
        elif event == "mark":
            mark = message.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str) or not name:
                await self._refuse(f"bad mark: {raw[:80]!r}")
                return
            self._queue.append(("mark", name))
        elif event == "clear":
            self.clears += 1
            self._clear_generation += 1
            pending = [item for kind, item in self._queue if kind == "mark"]
            self._queue.clear()
            for name in pending:
                assert isinstance(name, str)
                await self._send_mark(name, flushed=True)
        else:
            await self._refuse(f"unsupported event {event!r}")

    async def _play_loop(self) -> None:
        while True:
            changed = self._changed
            if self._paused or not self._queue:
                await changed.wait()
                continue
            kind, item = self._queue.popleft()
            if kind == "mark":
                assert isinstance(item, str)
                await self._send_mark(item, flushed=False)
                if item == self._pause_after:
                    self._paused, self._pause_after = True, None
            else:
                assert isinstance(item, bytes)
                generation = self._clear_generation
                if math.isfinite(self.playback_speed):
                    rate = _bytes_per_ms(self.bidirectional_codec, self.bidirectional_sample_rate) * 1000
                    await anyio.sleep(len(item) / rate / self.playback_speed)
                else:
                    await anyio.lowlevel.checkpoint()  # let the reader see a clear between frames
                if generation == self._clear_generation:  # a clear mid-frame cuts it off
                    self.played_payload += item
            self._notify()

    async def _send_mark(self, name: str, *, flushed: bool) -> None:
        self.echoed_marks.append(EchoedMark(name, flushed))
        await self._send_quietly(
            {
                "event": "mark",
                "sequence_number": str(next(self._sequence)),
                "stream_id": self.stream_id,
                "mark": {"name": name},
            }
        )

    async def _send_quietly(self, message: Mapping[str, Any]) -> None:
        try:
            await self.send_json(message)
        except ConnectionClosed:
            pass
