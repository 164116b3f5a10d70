"""A real fake of Smallest AI Lightning TTS on 127.0.0.1: the WebSocket route (websockets library) and the
HTTP sync and SSE routes (``loopback_http``), speaking the Waves API's wire protocol.

It "synthesizes" a deterministic 440 Hz tone whose length is proportional to the text (``seconds_per_char``),
at the requested sample rate, in ``chunk_seconds`` pieces. It enforces what the real service enforces
(Bearer auth, 250-character texts, retired models, one request in flight per API key, the idle timeout
from ``?timeout=N``) and misbehaves on command:

- ``fail_next(frame)``: answer the next request with this error frame (``spec_error``/``flat_error``).
- ``drop_next(after_chunks)``: drop the connection abruptly after that many chunks of the next request.
- ``first_byte_gate``: an ``anyio.Event`` every request waits on before its first chunk (slow first byte).
- ``close_after_complete``: close the socket after each ``complete`` (one of the two documented behaviours).
- ``omit_complete``: never send ``complete`` (as if the server sent one per turn, not per flush).
- ``reject_status``: refuse WebSocket upgrades and HTTP requests with this status (e.g. 429).
- ``expire_idle()``: send the idle-timeout frame to every idle connection and close it, now.
- ``freeze_reads()`` / ``thaw_reads()``: stop and resume reading every open connection.
- ``keepalive_reply``: what a blank keepalive (``{"text": " "}`` without ``continue``/``flush``) is
  answered with; ``{"status": "complete"}`` by default, None for silence (UNCONFIRMED which one).
  ``hold_keepalive_replies``: send those answers late, just before the next request's first chunk.

The HTTP routes honour ``output_format`` (``pcm`` raw, ``wav``, ``ulaw``/``alaw`` G.711; the sync route
wraps only ``wav`` in a WAV header; ``mp3`` is refused: the fake cannot encode it). The WebSocket
always streams PCM (as LiveKit notes). A ``cancel_request`` message (LiveKit's, UNCONFIRMED) stops the
connection's synthesis in progress without an answer. ``GET .../lightning-v3.1/get_voices`` serves
``voices`` (on the HTTP server and on the WebSocket port).

Everything it saw is recorded (``messages``, ``upgrades``, ``http_requests``, ``cancels``...);
``wait_until(predicate)`` lets a test wait for a state without sleeping.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
from anyio.abc import TaskGroup
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voiceagent.audio import SAMPLE_WIDTH, pcm16_to_alaw, pcm16_to_ulaw, wav_bytes
from voiceagent.logs import get_logger
from voiceagent.testing.fake_server import FakeWebSocketServer, headers_of, json_response
from voiceagent.testing.loopback_http import HTTPRequest, LoopbackHTTPServer, Responder
from voiceagent.testing.tone import tone

__all__ = ["DEFAULT_CATALOG", "FakeLightningServer", "catalog_voice", "flat_error", "spec_error"]

logger = get_logger(__name__)

MODELS = ("lightning_v3.1", "lightning_v3.1_pro")
RETIRED_MODELS = ("lightning", "lightning-large", "lightning-v2")
SAMPLE_RATES = (8000, 16000, 24000, 44100)
MAX_CHARS = 250
OUTPUT_FORMATS = ("pcm", "mp3", "wav", "ulaw", "alaw")
VOICES_PATH = "/waves/v1/lightning-v3.1/get_voices"


def catalog_voice(voice_id: str, *languages: str, accent: str = "american") -> dict[str, Any]:
    """One entry of the get_voices answer."""
    return {
        "voiceId": voice_id,
        "displayName": voice_id.title(),
        "tags": {"language": list(languages), "accent": accent, "gender": "", "age": "", "emotions": []},
    }


# A few voices of both model cards (the real catalog is their union).
DEFAULT_CATALOG = (
    catalog_voice("magnus", "english"),
    catalog_voice("olivia", "english"),
    catalog_voice("sophia", "english"),
    catalog_voice("devansh", "hindi", "english", accent="indian"),
    catalog_voice("meher", "hindi", "english", accent="indian"),
    catalog_voice("sophie", "english", accent="british"),
)


def spec_error(message: str, code: str = "BAD_REQUEST") -> dict[str, Any]:
    """The AsyncAPI error shape."""
    return {"status": "error", "error": {"message": message, "code": code}}


def flat_error(message: str) -> dict[str, Any]:
    """The shape the idle-timeout frame has."""
    return {"status": "error", "message": message}


class _RequestError(Exception):
    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        super().__init__(payload)
        self.status = status
        self.payload = payload


@dataclass(eq=False)
class _WSConn:
    ws: ServerConnection
    api_key: str
    timeout: float
    buffer: str = ""
    busy: bool = False
    closed_by_server: bool = False
    # Synthesis runs beside the reader so that a cancel_request can stop it; one at a time.
    speaking: anyio.Lock = field(default_factory=anyio.Lock)
    synthesis: anyio.CancelScope | None = None
    held_replies: list[dict[str, Any]] = field(default_factory=list)
    # The fields of the buffered messages: an option set on any of them holds for the utterance.
    buffered_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Upgrade:
    path: str
    headers: dict[str, str]


@dataclass
class Utterance:
    """One synthesized request: the text and the PCM the fake sent for it."""

    text: str
    sample_rate: int
    pcm16: bytes
    transport: str  # "ws" | "sync" | "sse"
    payload: dict[str, Any] = field(default_factory=dict)


class FakeLightningServer(FakeWebSocketServer):
    def __init__(
        self,
        *,
        api_key: str = "test-key",
        extra_keys: tuple[str, ...] = (),
        seconds_per_char: float = 0.06,
        chunk_seconds: float = 0.2,
    ) -> None:
        super().__init__()
        self.api_keys = {api_key, *extra_keys}
        self.seconds_per_char = seconds_per_char
        self.chunk_seconds = chunk_seconds
        # misbehaviour switches
        self.first_byte_gate: anyio.Event | None = None
        self.close_after_complete = False
        self.omit_complete = False
        self.keepalive_reply: dict[str, Any] | None = {"status": "complete"}
        self.hold_keepalive_replies = False
        self.voices: list[dict[str, Any]] = [dict(v) for v in DEFAULT_CATALOG]
        self._fail_next: deque[dict[str, Any]] = deque()
        # records
        self.messages: list[dict[str, Any]] = []
        self.upgrades: list[Upgrade] = []
        self.http_requests: list[HTTPRequest] = []
        self.utterances: list[Utterance] = []
        self.closed_by_client = 0
        self.keepalives = 0
        self.cancels: list[dict[str, Any]] = []
        self.cancelled_syntheses = 0
        self.voice_lookups: list[dict[str, str]] = []  # headers of each get_voices request
        self.in_flight: dict[str, int] = {}
        self.max_in_flight = 0
        self.concurrency_violations = 0
        self.requests_started = 0
        self._open: set[_WSConn] = set()
        self._http = LoopbackHTTPServer(self._handle_http)
        self._request_counter = 0

    # --- lifecycle and addresses -------------------------------------------------------------

    async def __aenter__(self) -> FakeLightningServer:
        await super().__aenter__()
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.__aexit__(exc_type, exc, tb)
        await super().__aexit__(exc_type, exc, tb)

    @property
    def ws_url(self) -> str:
        return f"{self.base_url}/waves/v1/tts/live"

    @property
    def http_base(self) -> str:
        return f"{self._http.url}/waves/v1"

    @property
    def voices_url(self) -> str:
        return f"{self._http.url}{VOICES_PATH}"

    # --- commands ----------------------------------------------------------------------------

    def fail_next(self, frame: dict[str, Any]) -> None:
        self._fail_next.append(frame)

    def freeze_reads(self) -> None:
        """Stop reading every open connection (a stalled server): a client's close frame goes unanswered."""
        for ws in self._sockets:
            ws.transport.pause_reading()

    def thaw_reads(self) -> None:
        for ws in self._sockets:
            ws.transport.resume_reading()

    async def expire_idle(self) -> int:
        """Time out every idle connection now, as the real server does after ``timeout`` seconds."""
        idle = [c for c in self._open if not c.busy]
        for conn in idle:
            await self._time_out(conn)
        return len(idle)

    def seconds_for(self, text: str) -> float:
        return self.seconds_per_char * len(text.strip())

    # --- shared request logic ----------------------------------------------------------------

    def _check_auth(self, authorization: str | None) -> str:
        scheme, _, key = (authorization or "").partition(" ")
        if scheme != "Bearer" or key not in self.api_keys:
            raise _RequestError(
                401, {"status": "error", "error_code": "UNAUTHORIZED", "message": "Invalid API key"}
            )
        return key

    def _check_payload(self, payload: Any, *, ws: bool) -> None:
        if not isinstance(payload, dict):
            raise _RequestError(400, spec_error("request must be a JSON object"))
        model = payload.get("model", "lightning_v3.1")
        if model in RETIRED_MODELS:
            raise _RequestError(
                410, {"status": "error", "error_code": "MODEL_DEPRECATED", "message": f"{model} is retired"}
            )
        if model not in MODELS:
            raise _RequestError(400, spec_error(f"unknown model {model}", "INVALID_MODEL"))
        if not payload.get("voice_id"):
            raise _RequestError(400, spec_error("voice_id is required", "MISSING_VOICE"))
        if payload.get("sample_rate", 44100) not in SAMPLE_RATES:
            raise _RequestError(400, spec_error("unsupported sample_rate", "INVALID_SAMPLE_RATE"))
        if payload.get("output_format", "pcm") not in OUTPUT_FORMATS:
            raise _RequestError(400, spec_error("unsupported output_format", "INVALID_OUTPUT_FORMAT"))
        if not ws and payload.get("output_format") == "mp3":
            raise _RequestError(400, spec_error("this fake does not encode mp3", "UNSUPPORTED_BY_FAKE"))
        text = payload.get("text")
        if not isinstance(text, str) or (not ws and not text.strip()):
            raise _RequestError(400, spec_error("text is required", "MISSING_TEXT"))
        if len(text) > MAX_CHARS:
            raise _RequestError(400, spec_error(f"text exceeds {MAX_CHARS} characters", "TEXT_TOO_LONG"))

    def _begin(self, key: str) -> None:
        if self.in_flight.get(key, 0) >= 1:
            self.concurrency_violations += 1
            raise _RequestError(429, spec_error("Concurrency limit reached", "429"))
        self.in_flight[key] = self.in_flight.get(key, 0) + 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight[key])
        self.requests_started += 1
        self._notify()

    def _end(self, key: str) -> None:
        self.in_flight[key] -= 1
        self._notify()

    def _synthesize(self, text: str, sample_rate: int) -> list[bytes]:
        pcm = tone(self.seconds_for(text), sample_rate)
        size = max(int(self.chunk_seconds * sample_rate), 1) * SAMPLE_WIDTH
        return [pcm[i : i + size] for i in range(0, len(pcm), size)]

    async def _wait_first_byte(self, closed: Callable[[], Any] | None = None) -> None:
        gate = self.first_byte_gate
        if gate is None:
            return
        async with anyio.create_task_group() as tg:

            async def gate_opens() -> None:
                await gate.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(gate_opens)
            if closed is not None:
                await closed()  # the client went away: stop waiting
                tg.cancel_scope.cancel()

    # --- WebSocket ---------------------------------------------------------------------------

    def _voices_answer(self, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.voice_lookups.append(headers)
        self._notify()
        try:
            self._check_auth(headers.get("authorization"))
        except _RequestError as exc:
            return exc.status, exc.payload
        return 200, {"voices": self.voices}

    def _process_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        headers = headers_of(request)
        if urlsplit(request.path).path == VOICES_PATH and "upgrade" not in headers:
            # A plain GET on the WebSocket port: the catalog route beside /tts/live, as on the real host.
            status, payload = self._voices_answer(headers)
            return json_response(status, payload, "OK" if status == 200 else "Error")
        self.upgrades.append(Upgrade(request.path, headers))
        self._notify()
        if self.reject_status is not None:
            error = spec_error("Too many requests", str(self.reject_status))
            return json_response(self.reject_status, error, "Rejected")
        try:
            self._check_auth(request.headers.get("Authorization"))
        except _RequestError as exc:
            return json_response(exc.status, exc.payload, "Unauthorized")
        if urlsplit(request.path).path != "/waves/v1/tts/live":
            return connection.respond(404, "no such route\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path if ws.request else "").query)
        timeout = float(query.get("timeout", ["60"])[0])
        key = (ws.request.headers.get("Authorization") or "").partition(" ")[2] if ws.request else ""
        conn = _WSConn(ws, key, timeout)
        self._open.add(conn)
        try:
            async with anyio.create_task_group() as tg:
                try:
                    await self._read_ws(conn, tg)
                except ConnectionClosed:
                    if not conn.closed_by_server:
                        self.closed_by_client += 1
                tg.cancel_scope.cancel()
        finally:
            self._open.discard(conn)

    async def _read_ws(self, conn: _WSConn, tg: TaskGroup) -> None:
        while True:
            with anyio.move_on_after(conn.timeout) as idle:
                message = await conn.ws.recv()
            if idle.cancelled_caught:
                if conn.busy:
                    continue  # inactivity is the client's silence while nothing is being synthesized
                await self._time_out(conn)
                return
            await self._on_message(conn, message, tg)
            if conn.closed_by_server:
                return

    async def _time_out(self, conn: _WSConn) -> None:
        conn.closed_by_server = True
        seconds = int(conn.timeout) if conn.timeout == int(conn.timeout) else conn.timeout
        try:
            await conn.ws.send(
                json.dumps(flat_error(f"Connection timed out after {seconds} seconds of inactivity"))
            )
            await conn.ws.close()
        except ConnectionClosed:
            pass

    async def _on_message(self, conn: _WSConn, message: str | bytes, tg: TaskGroup) -> None:
        try:
            payload = json.loads(message)
        except (json.JSONDecodeError, UnicodeDecodeError):
            await conn.ws.send(json.dumps(spec_error("invalid JSON")))
            return
        self.messages.append(payload)
        self._notify()
        if isinstance(payload, dict) and payload.get("cancel_request") is True:
            self.cancels.append(payload)
            if conn.synthesis is not None:
                conn.synthesis.cancel()
                self.cancelled_syntheses += 1
            conn.buffer, conn.buffered_options = "", {}
            self._notify()
            return
        try:
            self._check_payload(payload, ws=True)
        except _RequestError as exc:
            await conn.ws.send(json.dumps(exc.payload if "error" in exc.payload else spec_error(str(exc))))
            return
        text = payload["text"]
        if payload.get("continue") and not payload.get("flush"):
            conn.buffer += text
            conn.buffered_options.update(payload)
            return
        utterance, conn.buffer = conn.buffer + text, ""
        payload, conn.buffered_options = {**conn.buffered_options, **payload}, {}
        if not utterance.strip():
            if not payload.get("flush"):
                self.keepalives += 1  # Pipecat's keepalive: a blank text without continue or flush
                reply = self.keepalive_reply
            else:
                reply = {"status": "complete"}
            if reply is not None and self.hold_keepalive_replies and not payload.get("flush"):
                conn.held_replies.append(reply)
            elif reply is not None:
                await conn.ws.send(json.dumps(reply))
            self._notify()
            return
        tg.start_soon(self._run_synthesis, conn, utterance, payload)

    async def _run_synthesis(self, conn: _WSConn, text: str, payload: dict[str, Any]) -> None:
        async with conn.speaking:
            with anyio.CancelScope() as scope:
                conn.synthesis = scope
                try:
                    await self._speak_ws(conn, text, payload)
                except ConnectionClosed:
                    pass  # the reader sees the close too
                finally:
                    conn.synthesis = None

    async def _speak_ws(self, conn: _WSConn, text: str, payload: dict[str, Any]) -> None:
        ws = conn.ws
        try:
            self._begin(conn.api_key)
        except _RequestError as exc:
            await ws.send(json.dumps(exc.payload))
            return
        conn.busy = True
        try:
            if self._fail_next:
                await ws.send(json.dumps(self._fail_next.popleft()))
                return
            drop_after = self._take_drop()
            await self._wait_first_byte(ws.wait_closed)
            self._request_counter += 1
            request_id = f"req-{self._request_counter}"
            rate = int(payload.get("sample_rate", 44100))
            chunks = self._synthesize(text, rate)
            self.utterances.append(Utterance(text, rate, b"".join(chunks), "ws", payload))
            while conn.held_replies:  # late keepalive answers land just before this request's audio
                await ws.send(json.dumps(conn.held_replies.pop(0)))
            words = text.split()
            for index, chunk in enumerate(chunks):
                if drop_after is not None and index >= drop_after:
                    conn.closed_by_server = True
                    ws.transport.abort()  # no close frame: a crash, as the client sees it
                    return
                frame = {
                    "session_id": "sess-1",
                    "request_id": request_id,
                    "status": "chunk",
                    "data": {"audio": base64.b64encode(chunk).decode()},
                }
                await ws.send(json.dumps(frame))
                if payload.get("word_timestamps") and index < len(words):
                    start = index * self.chunk_seconds
                    stamp = {
                        "id": index,
                        "word": words[index],
                        "start": start,
                        "end": start + self.chunk_seconds,
                    }
                    await ws.send(json.dumps({"status": "word_timestamp", "data": stamp}))
            if self.omit_complete:
                return
            await ws.send(json.dumps({"status": "complete"}))
            if self.close_after_complete:
                conn.closed_by_server = True
                await ws.close()
        finally:
            conn.busy = False
            self._end(conn.api_key)

    # --- HTTP: sync and SSE ------------------------------------------------------------------

    async def _handle_http(self, request: HTTPRequest, responder: Responder) -> None:
        if request.method == "GET" and request.path == VOICES_PATH:
            status, answer = self._voices_answer(dict(request.headers))
            await responder.send_json(status, answer)
            return
        self.http_requests.append(request)
        self._notify()
        try:
            if self.reject_status is not None:
                raise _RequestError(
                    self.reject_status, spec_error("Too many requests", str(self.reject_status))
                )
            key = self._check_auth(request.headers.get("authorization"))
            if request.method != "POST" or request.path not in ("/waves/v1/tts", "/waves/v1/tts/live"):
                raise _RequestError(404, spec_error(f"no route {request.method} {request.path}", "NOT_FOUND"))
            try:
                payload = request.json()
            except json.JSONDecodeError:
                raise _RequestError(400, spec_error("invalid JSON")) from None
            self._check_payload(payload, ws=False)
            self._begin(key)
        except _RequestError as exc:
            await responder.send_json(exc.status, exc.payload)
            return
        try:
            if self._fail_next:
                await responder.send_json(500, self._fail_next.popleft())
                return
            drop_after = self._take_drop()
            await self._wait_first_byte()
            rate = int(payload.get("sample_rate", 44100))
            chunks = self._synthesize(payload["text"], rate)
            sse = request.path.endswith("/live")
            self.utterances.append(
                Utterance(payload["text"], rate, b"".join(chunks), "sse" if sse else "sync", payload)
            )
            headers = {"X-Request-Id": f"http-{len(self.http_requests)}"}
            output_format = str(payload.get("output_format", "pcm"))
            if sse:
                await self._stream_sse(responder, chunks, output_format, headers, drop_after)
            else:
                await self._stream_sync(responder, chunks, rate, output_format, headers, drop_after)
        finally:
            self._end(key)

    async def _stream_sse(
        self,
        responder: Responder,
        chunks: list[bytes],
        output_format: str,
        headers: dict[str, str],
        drop_after: int | None,
    ) -> None:
        await responder.start(200, {"Content-Type": "text/event-stream", **headers})
        for index, chunk in enumerate(chunks):
            if drop_after is not None and index >= drop_after:
                await responder.abort()
                return
            encoded = _encode(chunk, output_format)
            data = {"audio": base64.b64encode(encoded).decode(), "done": False, "status": "206"}
            await responder.write(f"event: audio\ndata: {json.dumps(data)}\n\n".encode())
        await responder.write(b'data: {"status":"200","done":true}\n\n')

    async def _stream_sync(
        self,
        responder: Responder,
        chunks: list[bytes],
        rate: int,
        output_format: str,
        headers: dict[str, str],
        drop_after: int | None,
    ) -> None:
        # output_format decides the body (UNCONFIRMED: what the service sends for pcm with Accept: audio/wav).
        pcm = b"".join(chunks)
        body = wav_bytes(pcm, rate) if output_format == "wav" else _encode(pcm, output_format)
        content_type = {"wav": "audio/wav", "ulaw": "audio/basic", "alaw": "audio/x-alaw-basic"}.get(
            output_format, "application/octet-stream"
        )
        await responder.start(200, {"Content-Type": content_type, **headers})
        piece = max(len(body) // max(len(chunks), 1), 1)
        for index, start in enumerate(range(0, len(body), piece)):
            if drop_after is not None and index >= drop_after:
                await responder.abort()
                return
            await responder.write(body[start : start + piece])


def _encode(pcm16: bytes, output_format: str) -> bytes:
    if output_format == "ulaw":
        return pcm16_to_ulaw(pcm16)
    if output_format == "alaw":
        return pcm16_to_alaw(pcm16)
    return pcm16  # pcm (and wav chunks over SSE: UNCONFIRMED, sent as PCM)
