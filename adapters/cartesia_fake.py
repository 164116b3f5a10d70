"""A real fake of Cartesia's TTS WebSocket on 127.0.0.1 (``/tts/websocket``), from Cartesia's docs and
the official ``cartesia`` SDK's types (``GenerationRequestParam``, ``CancelContextRequest``,
``WebsocketResponse``).

Auth is ``Authorization: Bearer KEY`` (the SDK's), an ``X-API-Key`` header or ``?api_key=``; the version
is a ``Cartesia-Version`` header or ``?cartesia_version=`` (either is required). Every generation request
is one message of a context: its transcript "synthesizes" to a deterministic 440 Hz tone
(``seconds_per_char``) at the requested raw ``pcm_s16le`` rate, sent as ``chunk`` messages (base64
``data``), then ``timestamps`` (with ``add_timestamps``) and ``done`` once a message without
``continue: true`` has been spoken. ``{"context_id", "cancel": true}`` stops that context: no more of it is
generated, except ``late_chunks_after_cancel`` chunks already "in flight" (Cartesia does not promise to
stop audio it already generated). Misbehaviour on command:

- ``fail_next(error)``: answer the next request with this ``error`` message (``error_message``).
- ``drop_next(after_chunks)``: abort the connection after that many chunks of the next request.
- ``hold_after``: pause every request after that many chunks until ``resume()`` (or its cancel).
- ``reject_status``: refuse WebSocket upgrades with this status.
- ``close_all()``: close every open connection now (an idle timeout).

Everything is recorded (``messages``, ``cancels``, ``done``, ``upgrades``, ``connections_opened``,
``utterances``);
``wait_until(predicate)`` waits for a state without sleeping.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voiceagent.audio import SAMPLE_WIDTH
from voiceagent.testing.fake_server import FakeWebSocketServer, headers_of, json_response, query_of
from voiceagent.testing.tone import tone

__all__ = ["FakeCartesiaServer", "error_message"]

PATH = "/tts/websocket"
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
ENCODINGS = ("pcm_f32le", "pcm_s16le", "pcm_mulaw", "pcm_alaw")
REQUIRED = ("context_id", "model_id", "output_format", "transcript", "voice")


def error_message(
    message: str,
    *,
    status_code: int = 400,
    error_code: str = "invalid_request",
    context_id: str | None = None,
) -> dict[str, Any]:
    """An ``error`` message in the SDK's ``Error`` shape."""
    frame: dict[str, Any] = {
        "type": "error",
        "done": True,
        "status_code": status_code,
        "error_code": error_code,
        "title": "Error",
        "message": message,
        "request_id": "req-fake",
    }
    if context_id is not None:
        frame["context_id"] = context_id
    return frame


@dataclass
class Upgrade:
    path: str
    headers: dict[str, str]


@dataclass
class Utterance:
    context_id: str
    transcript: str
    sample_rate: int
    pcm16: bytes = b""


@dataclass(eq=False)
class _Conn:
    ws: ServerConnection
    cancelled: set[str] = field(default_factory=set)
    send_lock: anyio.Lock = field(default_factory=anyio.Lock)


class FakeCartesiaServer(FakeWebSocketServer):
    def __init__(
        self, *, api_key: str = "test-key", seconds_per_char: float = 0.02, chunk_seconds: float = 0.1
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.seconds_per_char = seconds_per_char
        self.chunk_seconds = chunk_seconds
        self.hold_after: int | None = None
        self.late_chunks_after_cancel = 0
        self._resumed = False
        self._fail_next: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.cancels: list[dict[str, Any]] = []
        self.upgrades: list[Upgrade] = []
        self.utterances: list[Utterance] = []
        self.done: list[str] = []  # contexts whose done was sent

    @property
    def ws_url(self) -> str:
        """``base_url`` is what the SDK's ``websocket_base_url`` takes (it appends ``/tts/websocket``)."""
        return self.base_url + PATH

    # --- commands -------------------------------------------------------------------------------

    def fail_next(self, error: dict[str, Any]) -> None:
        self._fail_next.append(error)

    def resume(self) -> None:
        self._resumed = True
        self._notify()

    # --- the upgrade: path, auth, version --------------------------------------------------------

    def _process_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        headers = headers_of(request)
        self.upgrades.append(Upgrade(request.path, headers))
        self._notify()
        query = query_of(request.path)
        if urlsplit(request.path).path != PATH:
            return _reject(404, "Not found")
        if self.reject_status is not None:
            return _reject(self.reject_status, "Rejected")
        scheme, _, bearer = headers.get("authorization", "").partition(" ")
        keys = {bearer if scheme == "Bearer" else None, headers.get("x-api-key"), query.get("api_key")}
        if self.api_key not in keys:
            return _reject(401, "Invalid API key")
        if not (headers.get("cartesia-version") or query.get("cartesia_version")):
            return _reject(400, "Cartesia-Version header or cartesia_version query parameter is required")
        return None

    # --- a connection ----------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        conn = _Conn(ws)
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](100)
        with send:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._generate, conn, receive)
                try:
                    async for raw in ws:
                        await self._on_message(conn, raw, send)
                except ConnectionClosed:
                    pass  # inside the task group: it would leave it as an exception group
                tg.cancel_scope.cancel()

    async def _on_message(self, conn: _Conn, raw: str | bytes, requests: Any) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            await self._send(conn, error_message("message is not JSON"))
            return
        if not isinstance(message, dict):
            await self._send(conn, error_message("message is not an object"))
            return
        self.messages.append(message)
        self._notify()
        context_id = message.get("context_id")
        if message.get("cancel") is True:
            if not isinstance(context_id, str):
                await self._send(conn, error_message("cancel needs a context_id"))
                return
            conn.cancelled.add(context_id)
            self.cancels.append(message)
            self._notify()
            return
        problem = _problem(message)
        if problem is not None:
            await self._send(conn, error_message(problem, context_id=_str_or_none(context_id)))
            return
        await requests.send(message)

    async def _generate(self, conn: _Conn, requests: Any) -> None:
        # One request at a time per connection, beside the reader so that a cancel is read meanwhile.
        async for message in requests:
            context_id = message["context_id"]
            if context_id in conn.cancelled:
                continue
            if self._fail_next:
                await self._send(conn, {**self._fail_next.pop(0), "context_id": context_id})
                continue
            await self._speak(conn, message)

    async def _speak(self, conn: _Conn, message: dict[str, Any]) -> None:
        context_id = message["context_id"]
        rate = message["output_format"]["sample_rate"]
        utterance = Utterance(context_id, message["transcript"], rate)
        self.utterances.append(utterance)
        pcm = tone(self.seconds_per_char * len(message["transcript"].strip()), rate)
        size = max(int(self.chunk_seconds * rate), 1) * SAMPLE_WIDTH
        drop = self._take_drop()
        late = 0
        for index, start in enumerate(range(0, len(pcm), size)):
            if drop is not None and index == drop:
                conn.ws.transport.abort()
                return
            if self.hold_after is not None and index == self.hold_after:
                await self.wait_until(lambda: self._resumed or context_id in conn.cancelled)
            if context_id in conn.cancelled:
                if late >= self.late_chunks_after_cancel:
                    return
                late += 1
            piece = pcm[start : start + size]
            utterance.pcm16 += piece
            await self._send(
                conn,
                {
                    "type": "chunk",
                    "context_id": context_id,
                    "data": base64.b64encode(piece).decode(),
                    "done": False,
                    "status_code": 206,
                    "step_time": 1.0,
                },
            )
            await anyio.lowlevel.checkpoint()  # let a cancel be read between chunks
        if context_id in conn.cancelled or message.get("continue") is True:
            return
        if message.get("add_timestamps"):
            words = message["transcript"].split()
            step = len(pcm) / SAMPLE_WIDTH / rate / max(len(words), 1)
            await self._send(
                conn,
                {
                    "type": "timestamps",
                    "context_id": context_id,
                    "done": False,
                    "status_code": 206,
                    "word_timestamps": {
                        "words": words,
                        "start": [i * step for i in range(len(words))],
                        "end": [(i + 1) * step for i in range(len(words))],
                    },
                },
            )
        await self._send(conn, {"type": "done", "context_id": context_id, "done": True, "status_code": 206})
        self.done.append(context_id)
        self._notify()

    async def _send(self, conn: _Conn, frame: dict[str, Any]) -> None:
        async with conn.send_lock:
            try:
                await conn.ws.send(json.dumps(frame))
            except ConnectionClosed:
                pass


def _problem(message: dict[str, Any]) -> str | None:
    missing = [key for key in REQUIRED if key not in message]
    if missing:
        return f"missing required fields: {', '.join(missing)}"
    if not isinstance(message["model_id"], str) or not message["model_id"]:
        return "model_id must be a model's name"
    if not isinstance(message["transcript"], str):
        return "transcript must be a string"
    voice = message["voice"]
    if not (isinstance(voice, str) or (isinstance(voice, dict) and isinstance(voice.get("id"), str))):
        return "voice must be an id or an object with an id"
    fmt = message["output_format"]
    if not isinstance(fmt, dict) or fmt.get("container") != "raw":
        return "this fake serves only the raw container"
    if fmt.get("encoding") not in ENCODINGS:
        return f"encoding must be one of {ENCODINGS}"
    if fmt.get("encoding") != "pcm_s16le":
        return "this fake encodes only pcm_s16le"
    if fmt.get("sample_rate") not in SAMPLE_RATES:
        return f"sample_rate must be one of {SAMPLE_RATES}"
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _reject(status: int, message: str) -> Response:
    return json_response(status, {"title": "Error", "message": message})
