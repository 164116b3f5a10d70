"""A scripted fake Plivo call: plays Plivo's audio-stream protocol against a real server.

Written from Plivo's Stream Event Protocol (https://www.plivo.com/docs/voice/audio-streaming/audio-streaming)
and Plivo's stream SDKs, not from the codec it tests. It dials the server over a real WebSocket (signed
as Plivo signs requests, with ``auth_token``), sends ``start``, streams caller audio as 20 ms ``media``
frames in the stream's ``contentType``, sends ``dtmf``, and hangs up by closing the socket (the current
reference has no stop message; ``send_stop`` sends the one Plivo's Java SDK models).

It "plays" what the bot sends: ``playAudio`` is consumed in order at ``playback_speed`` times real
time (default 1.0; ``math.inf`` plays instantly), a ``checkpoint`` is answered with ``playedStream``
once the audio before it has played, and ``clearAudio`` drops the unplayed audio and the checkpoints
queued with it (never answered: Plivo sends ``playedStream`` "only if the preceding events were played
successfully") and is answered with ``clearedAudio``. ``sendDTMF`` is recorded. What real Plivo would
refuse lands in ``errors``. Playback can be paused so tests can order events without timing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import math
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voiceagent.audio import pcm16_to_ulaw, resample, ulaw_to_pcm16

FRAME_MS = 20


def plivo_signature(auth_token: str, url: str, nonce: str) -> str:
    """``X-Plivo-Signature-V3`` of a GET of ``url`` (no body): HMAC-SHA256 of the URL with its query
    sorted, ``.``, the nonce; base64. Written here from Plivo's docs, not taken from the adapter."""
    parts = urlsplit(url)
    query = "&".join(f"{k}={v}" for k, v in sorted(parse_qsl(parts.query, keep_blank_values=True)))
    signed = urlunsplit((parts.scheme, parts.netloc, parts.path, query, "")) + "." + nonce
    return base64.b64encode(hmac.new(auth_token.encode(), signed.encode(), hashlib.sha256).digest()).decode()


class FakePlivoCall:
    def __init__(
        self,
        url: str,
        *,
        auth_token: str | None = None,
        public_url: str | None = None,
        content_type: str = "audio/x-mulaw;rate=8000",
        extra_headers: Mapping[str, str] | None = None,
        call_id: str | None = None,
        stream_id: str | None = None,
        account_id: str = "MAFAKEAUTHID00000001",
        playback_speed: float = 1.0,
        start_paused: bool = False,
        send_start: bool = True,
    ) -> None:
        kind, _, rate = content_type.partition(";rate=")
        if (kind, rate) not in (("audio/x-mulaw", "8000"), ("audio/x-l16", "8000"), ("audio/x-l16", "16000")):
            raise ValueError(f"not a Plivo stream contentType: {content_type!r}")
        self.url = url
        self.auth_token = auth_token
        self.public_url = public_url or "wss://" + url.split("://", 1)[1]
        self.content_type, self.sample_rate = kind, int(rate)
        self.extra_headers = ";".join(f"{k}={v}" for k, v in (extra_headers or {}).items())
        self.call_id = call_id or str(uuid.uuid4())
        self.stream_id = stream_id or str(uuid.uuid4())
        self.account_id = account_id
        self.playback_speed = playback_speed
        self._send_start = send_start
        self.received: list[dict[str, Any]] = []  # every message from the bot, in order
        self.played = bytearray()  # bot audio played out, in the stream's encoding
        self.played_checkpoints: list[str] = []  # answered with playedStream
        self.dropped_checkpoints: list[str] = []  # dropped by a clearAudio, never answered
        self.clears = 0
        self.dtmf_sent: list[str] = []
        self.errors: list[str] = []  # what real Plivo would refuse
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed = anyio.Event()
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

    # ---- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> FakePlivoCall:
        headers = {}
        if self.auth_token is not None:
            nonce = uuid.uuid4().hex[:20]
            headers["X-Plivo-Signature-V3-Nonce"] = nonce
            headers["X-Plivo-Signature-V3"] = plivo_signature(self.auth_token, self.public_url, nonce)
        self._ws = await connect(self.url, additional_headers=headers)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._read_loop)
        self._tg.start_soon(self._play_loop)
        if self._send_start:
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
            "sequenceNumber": next(self._sequence),
            "start": {
                "callId": self.call_id,
                "streamId": self.stream_id,
                "accountId": self.account_id,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": self.content_type, "sampleRate": self.sample_rate},
            },
            "extra_headers": self.extra_headers,
        }

    # ---- caller side ------------------------------------------------------------------------------

    async def send_raw(self, data: str | bytes) -> None:
        assert self._ws is not None
        await self._ws.send(data)

    async def send_json(self, message: Mapping[str, Any]) -> None:
        await self.send_raw(json.dumps(message))

    async def send_audio(self, encoded: bytes) -> None:
        """Caller audio, already in the stream's encoding, as 20 ms media frames."""
        frame_bytes = self.sample_rate * FRAME_MS // 1000 * (1 if self.content_type == "audio/x-mulaw" else 2)
        for offset in range(0, len(encoded), frame_bytes):
            frame = encoded[offset : offset + frame_bytes]
            await self.send_json(
                {
                    "event": "media",
                    "sequenceNumber": next(self._sequence),
                    "streamId": self.stream_id,
                    "media": {
                        "track": "inbound",
                        "timestamp": str(self._media_ms),
                        "chunk": next(self._chunk),
                        "payload": base64.b64encode(frame).decode("ascii"),
                    },
                    "extra_headers": self.extra_headers,
                }
            )
            self._media_ms += FRAME_MS

    async def send_pcm(self, pcm16: bytes, sample_rate: int) -> None:
        await self.send_audio(self.encode(resample(pcm16, sample_rate, self.sample_rate)))

    async def send_dtmf(self, digit: str) -> None:
        await self.send_json(
            {
                "event": "dtmf",
                "sequenceNumber": next(self._sequence),
                "streamId": self.stream_id,
                "dtmf": {"track": "inbound", "digit": digit, "timestamp": str(self._media_ms)},
                "extra_headers": self.extra_headers,
            }
        )

    async def send_stop(self, reason: str = "") -> None:
        await self.send_json(
            {
                "event": "stop",
                "sequenceNumber": next(self._sequence),
                "streamId": self.stream_id,
                "reason": reason,
            }
        )

    async def hang_up(self) -> None:
        """The caller hangs up: Plivo closes the stream's socket."""
        assert self._ws is not None
        await self._ws.close()

    def encode(self, pcm16: bytes) -> bytes:
        return pcm16_to_ulaw(pcm16) if self.content_type == "audio/x-mulaw" else pcm16

    def decode(self, encoded: bytes) -> bytes:
        return ulaw_to_pcm16(encoded) if self.content_type == "audio/x-mulaw" else encoded

    # ---- playback control and observation ---------------------------------------------------------

    @property
    def played_pcm16(self) -> bytes:
        return self.decode(bytes(self.played))

    @property
    def received_audio(self) -> bytes:
        """All bot audio received (played or not), in the stream's encoding."""
        return b"".join(
            base64.b64decode(m["media"]["payload"]) for m in self.received if m.get("event") == "playAudio"
        )

    def pause_playback(self) -> None:
        self._paused = True

    def resume_playback(self) -> None:
        self._paused = False
        self._notify()

    def play_until_checkpoint(self, name: str) -> None:
        """Resume playback and pause again right after answering checkpoint ``name``."""
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

    # ---- Plivo side -------------------------------------------------------------------------------

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
        if isinstance(raw, bytes):
            self.errors.append("binary frame (Plivo expects JSON text)")
            return
        try:
            message = json.loads(raw)
        except ValueError:
            self.errors.append(f"invalid JSON: {raw[:60]!r}")
            return
        if not isinstance(message, dict):
            self.errors.append(f"not a JSON object: {raw[:60]!r}")
            return
        self.received.append(message)
        event = message.get("event")
        if event == "playAudio":
            self._play_audio(message, raw)
        elif event == "checkpoint":
            name = message.get("name")
            if not self._own_stream(message, raw) or not isinstance(name, str) or not name:
                self.errors.append(f"bad checkpoint: {raw[:80]!r}")
                return
            self._queue.append(("checkpoint", name))
        elif event == "clearAudio":
            if not self._own_stream(message, raw):
                return
            self.clears += 1
            self._clear_generation += 1
            self.dropped_checkpoints += [str(item) for kind, item in self._queue if kind == "checkpoint"]
            self._queue.clear()
            await self._send_event({"sequenceNumber": next(self._sequence), "event": "clearedAudio"})
        elif event == "sendDTMF":
            digits = message.get("dtmf")
            if not isinstance(digits, str) or not digits or not set(digits) <= set("0123456789*#ABCD"):
                self.errors.append(f"bad sendDTMF: {raw[:80]!r}")
                return
            self.dtmf_sent.append(digits)
        else:
            self.errors.append(f"unsupported event {str(event)[:40]!r}")

    def _play_audio(self, message: Mapping[str, Any], raw: str) -> None:
        media = message.get("media")
        if not isinstance(media, dict):
            self.errors.append(f"playAudio without media: {raw[:80]!r}")
            return
        if "streamId" in message and message["streamId"] != self.stream_id:  # optional (Pipecat adds it)
            self.errors.append(f"playAudio for another stream: {raw[:80]!r}")
            return
        if (media.get("contentType"), media.get("sampleRate")) != (self.content_type, self.sample_rate):
            self.errors.append(f"playAudio in {media.get('contentType')!r} at {media.get('sampleRate')!r}")
            return
        try:
            payload = base64.b64decode(media["payload"], validate=True)
        except (KeyError, TypeError, ValueError):
            self.errors.append(f"bad playAudio payload: {raw[:80]!r}")
            return
        self._queue.append(("audio", payload))

    def _own_stream(self, message: Mapping[str, Any], raw: str) -> bool:
        if message.get("streamId") != self.stream_id:
            self.errors.append(f"missing or wrong streamId: {raw[:80]!r}")
            return False
        return True

    async def _play_loop(self) -> None:
        bytes_per_second = self.sample_rate * (1 if self.content_type == "audio/x-mulaw" else 2)
        while True:
            changed = self._changed
            if self._paused or not self._queue:
                await changed.wait()
                continue
            kind, item = self._queue.popleft()
            if kind == "checkpoint":
                assert isinstance(item, str)
                self.played_checkpoints.append(item)
                await self._send_event(
                    {"sequenceNumber": next(self._sequence), "event": "playedStream", "name": item}
                )
                if item == self._pause_after:
                    self._paused, self._pause_after = True, None
            else:
                assert isinstance(item, bytes)
                generation = self._clear_generation
                if math.isfinite(self.playback_speed):
                    await anyio.sleep(len(item) / bytes_per_second / self.playback_speed)
                else:
                    await anyio.lowlevel.checkpoint()  # let the reader see a clear between frames
                if generation == self._clear_generation:  # a clear mid-frame cuts it off
                    self.played += item
            self._notify()

    async def _send_event(self, message: dict[str, Any]) -> None:
        try:
            await self.send_json({**message, "streamId": self.stream_id})
        except ConnectionClosed:
            pass
