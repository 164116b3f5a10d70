"""A scripted fake Twilio: plays the Media Streams protocol against a real server.

It connects over a real WebSocket, sends ``connected`` and ``start`` (with customParameters), streams
caller audio as 20 ms mu-law media frames, sends dtmf and stop, and "plays" the bot's audio: media is
consumed in order at ``playback_speed`` times real time (``math.inf``: instantly), and each mark is
echoed once the audio before it has played. ``clear`` drops unplayed audio and echoes pending marks,
as Twilio does. Playback can be paused so tests can order events without timing.

With ``auth_token`` it signs the upgrade as Twilio does: ``X-Twilio-Signature`` is the HMAC-SHA1 of
``public_url`` (default: ``url`` with its scheme made ``wss``, the URL Twilio would have dialed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voiceagent.audio import pcm16_to_ulaw, read_wav, resample, ulaw_to_pcm16

FRAME_BYTES = 160  # 20 ms of mu-law at 8 kHz


def twilio_signature(auth_token: str, url: str) -> str:
    """What Twilio puts in ``X-Twilio-Signature`` for a request to ``url`` without parameters
    (written here from the documented algorithm, not taken from the adapter it tests)."""
    mac = hmac.new(auth_token.encode("utf-8"), url.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


@dataclass(frozen=True, slots=True)
class EchoedMark:
    name: str
    flushed: bool  # True when echoed because of a clear rather than after playing


class FakeTwilioCall:
    def __init__(
        self,
        url: str,
        *,
        custom_parameters: Mapping[str, str] | None = None,
        stream_sid: str = "MZ00000000000000000000000000000001",
        call_sid: str = "CA00000000000000000000000000000001",
        account_sid: str = "AC00000000000000000000000000000001",
        playback_speed: float = math.inf,
        start_paused: bool = False,
        handshake: bool = True,
        auth_token: str | None = None,
        public_url: str | None = None,
    ) -> None:
        self.url = url
        self.auth_token = auth_token
        self.public_url = public_url or "wss://" + url.split("://", 1)[1]
        self.custom_parameters = dict(custom_parameters or {})
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.playback_speed = playback_speed
        self._handshake = handshake
        self.received: list[dict[str, Any]] = []  # every message from the app, in order
        self.played_mulaw = bytearray()
        self.echoed_marks: list[EchoedMark] = []
        self.clears = 0
        self.errors: list[str] = []  # what real Twilio would reject (error 31924 and friends)
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

    async def __aenter__(self) -> FakeTwilioCall:
        headers = {}
        if self.auth_token is not None:
            headers["X-Twilio-Signature"] = twilio_signature(self.auth_token, self.public_url)
        self._ws = await connect(self.url, additional_headers=headers)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._read_loop)
        self._tg.start_soon(self._play_loop)
        if self._handshake:
            await self.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            await self.send_json(self.start_message())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._tg is not None and self._ws is not None
        await self._ws.close()
        self._tg.cancel_scope.cancel()
        return await self._tg.__aexit__(exc_type, exc, tb)

    def start_message(self) -> dict[str, Any]:
        return {
            "event": "start",
            "sequenceNumber": str(next(self._sequence)),
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": self.custom_parameters,
            },
            "streamSid": self.stream_sid,
        }

    # ---- caller side ------------------------------------------------------------------------------

    async def send_raw(self, data: str | bytes) -> None:
        assert self._ws is not None
        await self._ws.send(data)

    async def send_json(self, message: Mapping[str, Any]) -> None:
        await self.send_raw(json.dumps(message))

    async def send_mulaw(self, mulaw: bytes) -> None:
        """Caller audio as Twilio sends it: 20 ms media frames with chunk and timestamp counters."""
        for offset in range(0, len(mulaw), FRAME_BYTES):
            frame = mulaw[offset : offset + FRAME_BYTES]
            await self.send_json(
                {
                    "event": "media",
                    "sequenceNumber": str(next(self._sequence)),
                    "media": {
                        "track": "inbound",
                        "chunk": str(next(self._chunk)),
                        "timestamp": str(self._media_ms),
                        "payload": base64.b64encode(frame).decode("ascii"),
                    },
                    "streamSid": self.stream_sid,
                }
            )
            self._media_ms += len(frame) // 8

    async def send_pcm(self, pcm16: bytes, sample_rate: int) -> None:
        await self.send_mulaw(pcm16_to_ulaw(resample(pcm16, sample_rate, 8000)))

    async def send_wav(self, path: str | Path) -> None:
        pcm, rate = read_wav(path)
        await self.send_pcm(pcm, rate)

    async def send_dtmf(self, digit: str) -> None:
        await self.send_json(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": str(next(self._sequence)),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    async def stop(self) -> None:
        await self.send_json(
            {
                "event": "stop",
                "sequenceNumber": str(next(self._sequence)),
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                "streamSid": self.stream_sid,
            }
        )

    # ---- playback control and observation ---------------------------------------------------------

    @property
    def played_pcm16(self) -> bytes:
        return ulaw_to_pcm16(bytes(self.played_mulaw))

    @property
    def received_mulaw(self) -> bytes:
        """All bot audio received (played or not)."""
        return b"".join(
            base64.b64decode(m["media"]["payload"]) for m in self.received if m.get("event") == "media"
        )

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

    # ---- Twilio side ------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                await self._handle(raw)
                self._notify()
        except ConnectionClosed:
            pass
        finally:
            close = self._ws.close_code
            self.close_code = close
            self.close_reason = self._ws.close_reason or ""
            self.closed.set()
            self._notify()

    async def _handle(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            self.errors.append("binary frame (Twilio expects JSON text)")
            return
        try:
            message = json.loads(raw)
        except ValueError:
            self.errors.append(f"invalid JSON: {raw[:60]!r}")
            return
        self.received.append(message)
        event = message.get("event") if isinstance(message, dict) else None
        if not isinstance(message, dict) or message.get("streamSid") != self.stream_sid:
            self.errors.append(f"missing or wrong streamSid: {raw[:80]!r}")
            return
        if event == "media":
            try:
                payload = base64.b64decode(message["media"]["payload"], validate=True)
            except (KeyError, TypeError, binascii.Error):
                self.errors.append(f"bad media payload: {raw[:80]!r}")
                return
            self._queue.append(("media", payload))
        elif event == "mark":
            name = message.get("mark", {}).get("name")
            if not isinstance(name, str):
                self.errors.append(f"bad mark: {raw[:80]!r}")
                return
            self._queue.append(("mark", name))
        elif event == "clear":
            self.clears += 1
            self._clear_generation += 1
            pending = [item for kind, item in self._queue if kind == "mark"]
            self._queue.clear()
            for name in pending:
                assert isinstance(name, str)
                await self._echo_mark(name, flushed=True)
        else:
            self.errors.append(f"31924: unsupported event {event!r}")

    async def _play_loop(self) -> None:
        while True:
            changed = self._changed
            if self._paused or not self._queue:
                await changed.wait()
                continue
            kind, item = self._queue.popleft()
            if kind == "mark":
                assert isinstance(item, str)
                await self._echo_mark(item, flushed=False)
                if item == self._pause_after:
                    self._paused, self._pause_after = True, None
            else:
                assert isinstance(item, bytes)
                generation = self._clear_generation
                if math.isfinite(self.playback_speed):
                    await anyio.sleep(len(item) / 8000 / self.playback_speed)
                else:
                    await anyio.lowlevel.checkpoint()  # let the reader see a clear between frames
                if generation == self._clear_generation:  # a clear mid-frame cuts it off
                    self.played_mulaw += item
            self._notify()

    async def _echo_mark(self, name: str, *, flushed: bool) -> None:
        self.echoed_marks.append(EchoedMark(name, flushed))
        message = {
            "event": "mark",
            "sequenceNumber": str(next(self._sequence)),
            "streamSid": self.stream_sid,
            "mark": {"name": name},
        }
        try:
            await self.send_json(message)
        except ConnectionClosed:
            pass
