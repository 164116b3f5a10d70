"""Smallest AI Lightning TTS over its WebSocket (``wss://api.smallest.ai/waves/v1/tts/live``).

Each ``speak(text)`` is one request: the text (split at 250 characters) goes out as payloads with
``"continue": true``, then ``{"text": "", "flush": true}``; base64 PCM ``chunk`` frames are delivered
as they arrive until ``complete``. One socket is kept open and reused; if the server closed it (after
``complete``, on idle timeout, or by dropping it) the sink reconnects, and resends the request only if
none of its audio had arrived. A keepalive goes out when the socket has been quiet for
``keepalive_interval`` seconds. Requests wait for the per-account slot (one in flight per API key).

Barge-in: the documented API (docs snapshot 2026-08-21, SDK 5.14.0) has no cancel message, so a
cancel during a request retires that socket: the close and the new connection run in the background
at once, the caller's ``cancel()`` returns without waiting for either, and the next request waits
only for whichever of the two is still running (never for both one after the other), so the old
request is released by the server before the next one is sent.

UNCONFIRMED points, each a named option:

- ``keepalive_interval``: the keepalive is Pipecat's ``{"text": " ", "voice_id", "model", "language"}``
  (no ``continue``). Whether the service answers it is not documented; a ``complete`` that answers it
  is told apart from a request's own ``complete`` (it comes before any audio).
- ``cancel_request``: LiveKit's plugin cancels with ``{..., "context_id", "cancel_request": true}``
  under its context-id ("continuations") protocol, which neither the docs snapshot nor the SDK
  describe. With ``cancel_request=True`` every request carries a ``context_id`` and a barge-in sends
  that message before the socket is retired anyway (as LiveKit also does); off by default.
- ``check_voice``: at start-up the voice is looked up in ``GET /waves/v1/lightning-v3.1/get_voices``
  (unknown voice: ``TTSError``). The catalog is the union of both models' voices, so a voice of the
  other model's pool cannot be detected there; ``voice_id`` defaults to a documented voice of
  ``model`` (``DEFAULT_VOICES``).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from voiceagent.adapters.lightning.account import account_limiter
from voiceagent.adapters.lightning.protocol import (
    DEFAULT_VOICES,
    DEFAULT_WS_URL,
    MAX_CHARS,
    MODELS,
    SAMPLE_RATES,
    AudioFrame,
    CompleteFrame,
    ErrorFrame,
    Frame,
    OtherFrame,
    WordTimestamp,
    error_from_body,
    parse_frame,
    split_text,
)
from voiceagent.adapters.lightning.voices import check_voice, voices_url_for_ws
from voiceagent.errors import TTSError, TTSInterruptedError
from voiceagent.limiter import Limiter
from voiceagent.logs import get_logger, register_secret, set_request_id
from voiceagent.speaker import Speaker
from voiceagent.tts import AudioOutput

__all__ = ["LightningEngine", "LightningSink"]

logger = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Closed:
    code: int | None
    reason: str


class _Connection:
    def __init__(self, ws: ClientConnection, frames: MemoryObjectReceiveStream[Frame | _Closed]) -> None:
        self.ws = ws
        self.frames = frames
        self.dead = False
        # A request was sent and its `complete` has not arrived: the server is still working on it.
        self.in_request = False
        self.context_id: str | None = None  # the request's, when cancel_request is on
        # Keepalives whose answer (a `complete`, if the service sends one) has not been seen yet.
        self.keepalive_answers_due = 0
        self.closed = anyio.Event()


class _Retry(Exception):
    """The connection went away; the request may be resent if none of its audio arrived."""


def request_sample_rate(output_rate: int, requested: int | None) -> int:
    if requested is not None:
        if requested not in SAMPLE_RATES:
            raise ValueError(f"Lightning sample_rate must be one of {SAMPLE_RATES}, got {requested}")
        return requested
    # Ask for the output's rate when Lightning has it, so no resampling is needed.
    return output_rate if output_rate in SAMPLE_RATES else 24000


def check_common(model: str, speed: float, voice_id: str | None, api_key: str) -> str:
    """Validate the shared options; returns the voice (``voice_id``, or the model's documented default)."""
    register_secret(api_key)  # never in a log line
    if model not in MODELS:
        raise ValueError(f"unknown Lightning model {model!r}; expected one of {MODELS}")
    if not 0.5 <= speed <= 2:
        raise ValueError(f"speed must be 0.5..2, got {speed}")
    if voice_id is not None and not voice_id:
        raise ValueError("voice_id must not be empty (None picks the model's default voice)")
    if not api_key:
        raise ValueError("api_key is required")
    return voice_id or DEFAULT_VOICES[model]


class LightningEngine:
    """``TTSEngine`` on the Lightning WebSocket. Use as ``async with LightningEngine(...) as engine``
    (or through ``LightningSink``, the ``Speaker`` over it).

    ``complete_backoff_ms`` defaults to 300 instead of the server's 4000: ``speak`` returns on ``complete``,
    so a long backoff would hold back the next sentence. ``idle_timeout`` (seconds) is sent as
    ``?timeout=N``. ``limiter`` defaults to the account-wide one for ``api_key``.

    ``first_byte_timeout``: no audio this long after the flush is an error. ``complete_timeout``: silence
    this long after audio started is taken as the end of the text (with a warning) in case the server
    sends one ``complete`` per turn rather than per flush; by default the backoff plus 3 s.

    ``voice_id`` defaults to ``DEFAULT_VOICES[model]``. ``check_voice``/``voices_url``: the start-up
    catalog lookup (``voices_url`` defaults to the route next to ``url``). ``cancel_request``: see the
    module docstring (UNCONFIRMED).
    """

    def __init__(
        self,
        *,
        api_key: str,
        voice_id: str | None = None,
        model: str = "lightning_v3.1",
        url: str = DEFAULT_WS_URL,
        sample_rate: int | None = None,
        speed: float = 1.0,
        language: str = "en",
        idle_timeout: int | None = None,
        keepalive_interval: float | None = 30.0,
        complete_backoff_ms: int | None = 300,
        max_buffer_flush_ms: int | None = None,
        word_timestamps: bool = False,
        expire_content: bool = False,
        extra: dict[str, Any] | None = None,
        limiter: Limiter | None = None,
        connect_timeout: float = 10.0,
        max_chunk_chars: int = MAX_CHARS,
        max_reconnects: int = 1,
        first_byte_timeout: float = 30.0,
        complete_timeout: float | None = None,
        compression: str | None = None,
        check_voice: bool = True,
        voices_url: str | None = None,
        cancel_request: bool = False,
    ) -> None:
        voice_id = check_common(model, speed, voice_id, api_key)
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be positive, got {idle_timeout}")
        if keepalive_interval is not None and keepalive_interval <= 0:
            raise ValueError(f"keepalive_interval must be positive, got {keepalive_interval}")
        if not 1 <= max_chunk_chars <= MAX_CHARS:
            raise ValueError(f"max_chunk_chars must be 1..{MAX_CHARS}, got {max_chunk_chars}")
        self.sample_rate = request_sample_rate(0, sample_rate)
        self.url = url if idle_timeout is None else f"{url}{'&' if '?' in url else '?'}timeout={idle_timeout}"
        self.keepalive_interval = keepalive_interval
        self.connect_timeout = connect_timeout
        self.max_chunk_chars = max_chunk_chars
        self.max_reconnects = max_reconnects
        self.first_byte_timeout = first_byte_timeout
        # permessage-deflate costs CPU on every base64 audio frame for little gain; opt in with "deflate".
        self.compression = compression
        backoff = 4.0 if complete_backoff_ms is None else complete_backoff_ms / 1000
        self.complete_timeout = complete_timeout if complete_timeout is not None else backoff + 3.0
        self.limiter = limiter or account_limiter(api_key)
        self.voice_id = voice_id
        self.language = language
        self.check_voice = check_voice
        self.voices_url = voices_url or voices_url_for_ws(url)
        self.cancel_request = cancel_request
        self._api_key = api_key
        self._headers = {"Authorization": f"Bearer {api_key}"}
        if expire_content:
            self._headers["x-expire-content"] = "true"
        self._payload: dict[str, Any] = {
            "voice_id": voice_id,
            "model": model,
            "sample_rate": self.sample_rate,
            "speed": speed,
            "language": language,
        }
        if word_timestamps:
            self._payload["word_timestamps"] = True
        if complete_backoff_ms is not None:
            self._payload["complete_backoff_ms"] = complete_backoff_ms
        if max_buffer_flush_ms is not None:
            self._payload["max_buffer_flush_ms"] = max_buffer_flush_ms
        self._payload.update(extra or {})
        self.word_timestamps: list[WordTimestamp] = []
        self.request_ids: list[str] = []
        self.connections_opened = 0
        self.keepalives_sent = 0
        self.cancel_requests_sent = 0
        self.retired_sockets_closed = 0
        self._tg: TaskGroup | None = None
        self._conn: _Connection | None = None
        # The socket a barge-in retired, until it has closed: the next request waits for it.
        self._retired: _Connection | None = None
        self._connect_lock = anyio.Lock()
        self._send_lock = anyio.Lock()
        self._busy = False
        self._last_send = 0.0

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> LightningEngine:
        if self.check_voice and self.voices_url is not None:
            await check_voice(
                self.voice_id,
                self.language,
                url=self.voices_url,
                api_key=self._api_key,
                request_timeout=self.connect_timeout,
            )
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._ensure_connection()  # fail fast on a bad key or URL
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        if self.keepalive_interval is not None:
            self._tg.start_soon(self._keepalive)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        tg, self._tg = self._tg, None
        conn, self._conn = self._conn, None
        if conn is not None:
            await _close(conn)
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(exc_type, exc, tb)

    # --- connection --------------------------------------------------------------------------

    async def _ensure_connection(self) -> _Connection:
        async with self._connect_lock:
            conn = self._conn
            if conn is not None and not conn.dead:
                return conn
            self._conn = await self._connect()
            return self._conn

    async def _connect(self) -> _Connection:
        if self._tg is None:
            raise RuntimeError("use LightningSink as `async with LightningSink(...) as sink:`")
        try:
            ws = await connect(
                self.url,
                additional_headers=self._headers,
                open_timeout=self.connect_timeout,
                close_timeout=2,
                max_size=None,
                compression=self.compression,
            )
        except InvalidStatus as exc:
            response = exc.response
            raise error_from_body(
                response.status_code, response.body or b"", response.headers.get("X-Request-Id")
            ) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise TTSError(f"cannot connect to Lightning at {self.url}: {exc!r}") from exc
        self.connections_opened += 1
        send, receive = anyio.create_memory_object_stream[Frame | _Closed](math.inf)
        self._tg.start_soon(_read_frames, ws, send)
        self._last_send = anyio.current_time()
        logger.debug("connected to %s", self.url)
        return _Connection(ws, receive)

    async def _drop(self, conn: _Connection) -> None:
        conn.dead = True
        if self._conn is conn:
            self._conn = None
        await _close(conn)

    async def _send(self, conn: _Connection, payload: dict[str, Any]) -> None:
        async with self._send_lock:
            await self._send_locked(conn, payload)

    async def _send_locked(self, conn: _Connection, payload: dict[str, Any]) -> None:
        try:
            await conn.ws.send(json.dumps(payload))
        except ConnectionClosed as exc:
            raise _Retry(f"closed while sending ({exc})") from exc
        self._last_send = anyio.current_time()

    async def _keepalive(self) -> None:
        assert self.keepalive_interval is not None
        while True:
            await anyio.sleep(max(self._last_send + self.keepalive_interval - anyio.current_time(), 0.001))
            async with self._send_lock:
                # Checked under the lock, so a keepalive never lands inside a request's messages.
                conn = self._conn
                if conn is None or conn.dead or self._busy:
                    continue
                if anyio.current_time() - self._last_send < self.keepalive_interval:
                    continue
                # Counted before the send: its answer may be read before this task resumes.
                conn.keepalive_answers_due += 1
                try:
                    # Pipecat's keepalive; any message resets the server's idle timer.
                    await self._send_locked(conn, self._keepalive_payload())
                    self.keepalives_sent += 1
                except _Retry:
                    conn.dead = True

    def _keepalive_payload(self) -> dict[str, Any]:
        return {
            "text": " ",
            "voice_id": self._payload["voice_id"],
            "model": self._payload["model"],
            "language": self._payload["language"],
        }

    async def _reconnect_quietly(self) -> None:
        try:
            await self._ensure_connection()
        except TTSError as exc:
            logger.warning("background reconnect failed (the next speak retries): %s", exc)

    async def interrupt(self) -> None:
        # No documented cancel message: retiring the socket is what stops the server. Nothing here
        # waits on the network, so the caller's output is cleared at once; the close and the next
        # connection proceed together in the background.
        conn = self._conn
        if conn is None or not conn.in_request or self._tg is None:
            return  # nothing is being synthesized: the socket can stay
        conn.dead = True
        self._conn = None
        self._retired = conn
        self._tg.start_soon(self._retire, conn)
        self._tg.start_soon(self._reconnect_quietly)

    async def _retire(self, conn: _Connection) -> None:
        if self.cancel_request and conn.context_id is not None:
            # LiveKit's shape: the request's fields and its context, no text.
            message = {**self._payload, "context_id": conn.context_id, "cancel_request": True}
            with anyio.move_on_after(1):
                try:
                    await conn.ws.send(json.dumps(message))
                    self.cancel_requests_sent += 1
                except ConnectionClosed:
                    pass
        await _close(conn)
        self.retired_sockets_closed += 1

    async def _wait_for_retired(self) -> None:
        """The server holds one request per account: the barge-in's socket must be gone first."""
        retired = self._retired
        if retired is not None:
            with anyio.move_on_after(5):
                await retired.closed.wait()
            if self._retired is retired:
                self._retired = None

    # --- requests ----------------------------------------------------------------------------

    # The server buffers text sent with ``continue`` until a flush: a turn's words go out as they are
    # written (``synthesize_stream``), not a whole clause later.
    streams_text = True

    def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """One request: every piece of ``text``, then a flush; the speaker holds the account's slot."""
        return self._synthesize(split_text(text, self.max_chunk_chars), None)

    def synthesize_stream(self, texts: AsyncIterator[str]) -> AsyncIterator[bytes]:
        """One request whose text comes in pieces: each goes out with ``continue`` as it arrives, the
        flush when ``texts`` ends. A reconnect before any audio resends what was sent so far."""
        return self._synthesize([], texts)

    async def _synthesize(self, pieces: list[str], more: AsyncIterator[str] | None) -> AsyncIterator[bytes]:
        await self._wait_for_retired()
        attempt = 0
        yielded = _Count()
        while True:
            conn = await self._ensure_connection()
            try:
                async for data in self._request(conn, pieces, yielded, more):
                    yield data
                return
            except _Retry as exc:
                await self._drop(conn)
                if yielded.bytes:
                    raise TTSInterruptedError(
                        f"Lightning connection lost mid-utterance ({exc}); "
                        f"{yielded.bytes} bytes of audio had been delivered"
                    ) from None
                if attempt >= self.max_reconnects:
                    raise TTSError(f"Lightning connection lost before any audio ({exc})") from None
                attempt += 1
                logger.info("Lightning connection lost (%s); reconnecting", exc)
            finally:
                self._busy = False

    def _discard_stale(self, conn: _Connection) -> None:
        """Frames that arrived while no request was in flight: a close or an idle timeout means the
        socket is gone; anything else is logged and dropped."""
        while True:
            try:
                frame = conn.frames.receive_nowait()
            except anyio.WouldBlock:
                return
            except anyio.EndOfStream:
                raise _Retry("connection had closed") from None
            if isinstance(frame, _Closed):
                raise _Retry(f"server had closed the connection (code {frame.code})")
            if isinstance(frame, CompleteFrame) and conn.keepalive_answers_due:
                conn.keepalive_answers_due -= 1
                continue
            if isinstance(frame, ErrorFrame):
                if frame.is_idle_timeout:
                    raise _Retry(frame.message)
                logger.warning("Lightning error while idle: %s (code=%s)", frame.message, frame.code)
            else:
                logger.debug("stray Lightning frame while idle: %r", frame)

    async def _request(
        self, conn: _Connection, pieces: list[str], yielded: _Count, more: AsyncIterator[str] | None = None
    ) -> AsyncIterator[bytes]:
        """``pieces`` are sent first (all of a text, or what a streamed text had sent before a
        reconnect), then each of ``more`` as it comes (recorded in ``pieces``, for a resend)."""
        self._discard_stale(conn)
        self._busy = True
        conn.in_request = True
        payload = self._payload
        if self.cancel_request:
            conn.context_id = uuid.uuid4().hex
            payload = {**payload, "context_id": conn.context_id}
        for piece in pieces:
            await self._send(conn, {**payload, "text": piece, "continue": True})
        if more is not None:
            async for text in more:
                for piece in split_text(text, self.max_chunk_chars):
                    pieces.append(piece)
                    await self._send(conn, {**payload, "text": piece, "continue": True})
        await self._send(conn, {**payload, "text": "", "flush": True})
        request_id: str | None = None
        while True:
            timeout = self.complete_timeout if yielded.bytes else self.first_byte_timeout
            frame: Frame | _Closed | None = None
            with anyio.move_on_after(timeout):
                try:
                    frame = await conn.frames.receive()
                except anyio.EndOfStream:
                    raise _Retry("connection closed") from None
            if frame is None:
                # The server may still answer this request later; a fresh socket keeps that answer
                # from being read as the next request's.
                await self._drop(conn)
                if not yielded.bytes:
                    raise TTSError(f"Lightning sent no audio within {timeout} s", request_id=request_id)
                logger.warning("no `complete` %.1f s after the last audio; taking the text as done", timeout)
                return
            if isinstance(frame, AudioFrame):
                if frame.request_id and frame.request_id != request_id:
                    request_id = frame.request_id
                    self.request_ids.append(request_id)
                    set_request_id(request_id)
                yielded.bytes += len(frame.pcm16)
                yield frame.pcm16
            elif isinstance(frame, WordTimestamp):
                self.word_timestamps.append(frame)
            elif isinstance(frame, CompleteFrame):
                if not yielded.bytes and conn.keepalive_answers_due:
                    conn.keepalive_answers_due -= 1  # a keepalive's answer that arrived late
                    continue
                conn.in_request = False
                return
            elif isinstance(frame, ErrorFrame):
                if frame.is_idle_timeout:
                    raise _Retry(frame.message)
                conn.in_request = False
                raise frame.to_error(request_id)
            elif isinstance(frame, _Closed):
                raise _Retry(f"server closed the connection (code {frame.code} {frame.reason!r})")
            elif isinstance(frame, OtherFrame):
                logger.debug("ignoring Lightning frame %r", frame.raw)


class _Count:
    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = 0


class LightningSink(Speaker):
    """The ``TTSSink`` on the Lightning WebSocket: a ``Speaker`` over a ``LightningEngine`` built from
    the same keyword arguments. It asks Lightning for ``output``'s rate when Lightning has it, and
    holds the account's slot (``limiter``, by default the account-wide one) for each text.
    Use as ``async with LightningSink(output, api_key=...) as sink``."""

    engine: LightningEngine

    def __init__(self, output: AudioOutput, *, sample_rate: int | None = None, **options: Any) -> None:
        engine = LightningEngine(sample_rate=request_sample_rate(output.sample_rate, sample_rate), **options)
        super().__init__(engine, output, limiter=engine.limiter)


async def _read_frames(ws: ClientConnection, send: MemoryObjectSendStream[Frame | _Closed]) -> None:
    """Owns the socket's receive side for its whole life, so frames sent between requests (an idle
    timeout, a close) are seen by the next request instead of being mistaken for its answer."""
    with send:
        try:
            async for message in ws:
                try:
                    frame: Frame = parse_frame(message)
                except TTSError as exc:
                    frame = ErrorFrame(str(exc), "invalid_frame")
                send.send_nowait(frame)
        except ConnectionClosed:
            pass
        send.send_nowait(_Closed(ws.close_code, ws.close_reason or ""))


async def _close(conn: _Connection) -> None:
    conn.dead = True
    try:
        with anyio.CancelScope(shield=True), anyio.move_on_after(3):
            await conn.ws.close()
    finally:
        conn.closed.set()
