"""A streaming STT over one WebSocket: the lifecycle Deepgram and Pulse share, vendor parts left to hooks.

The base connects (mapping a refused upgrade and a failed connection to the vendor's errors), batches
the caller's audio into binary frames, serializes every send behind one lock, sends keepalives when the
audio pauses, finalizes, closes gracefully (flush, the vendor's close message, wait for its last
message, then close the socket) and turns a lost connection into the vendor's error. A vendor writes
its URL and auth header, its control messages, the parsing of what the server sends (``_on_message``)
and, if it has them, the close codes that mean something (``_closed_error``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio
from anyio.abc import TaskGroup
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .audio import pcm16_to_alaw, pcm16_to_ulaw
from .errors import VoiceAgentError
from .logs import get_logger, register_secret
from .stt_session import STTSession

logger = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class STTErrors:
    """A vendor's error classes: its base, the refused upgrade (status, body) and the lost connection."""

    base: type[VoiceAgentError]
    handshake: Callable[[int, str], VoiceAgentError]
    connection: Callable[[str], VoiceAgentError]


def encode_pcm16(pcm: bytes, encoding: str) -> bytes:
    """PCM16 as the wire's ``encoding``: G.711 is encoded here, anything else is sent as given."""
    if encoding == "mulaw":
        return pcm16_to_ulaw(pcm)
    if encoding == "alaw":
        return pcm16_to_alaw(pcm)
    return pcm


class WebSocketSTT(STTSession):
    """Subclasses set ``vendor``, ``errors``, ``end_marker`` (the last message's name, for messages) and
    ``close_name`` (the close message's), and implement ``_on_message``, ``_close_message`` and
    ``_finalize_message``. Audio is sent in frames of ``frame_bytes`` once ``flush_bytes`` are batched."""

    errors: ClassVar[STTErrors]
    end_marker: ClassVar[str] = "the end of the stream"
    close_name: ClassVar[str] = "close"

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        secret: str,
        encoding: str,
        frame_bytes: int,
        flush_bytes: int,
        keepalive: float | None = None,
        open_timeout: float = 10.0,
        close_timeout: float = 10.0,
    ) -> None:
        super().__init__()
        self.url = url
        register_secret(secret)  # never in a log line
        self._headers = dict(headers)
        self._encoding = encoding
        self._frame_bytes = frame_bytes
        self._flush_bytes = flush_bytes
        self._keepalive = keepalive
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._ws: ClientConnection | None = None
        self._batch = bytearray()
        self._send_lock = anyio.Lock()
        self._ended = False  # the server sent its last message
        self._last_send = 0.0
        self.frames_sent = 0
        self.bytes_sent = 0
        self.keepalives_sent = 0

    # ---- the vendor's parts ---------------------------------------------------------------------

    def _on_message(self, raw: str | bytes) -> bool:
        """Handle one server message (emit events, raise the vendor's error); True when it was the last."""
        raise NotImplementedError

    def _close_message(self) -> dict[str, Any]:
        raise NotImplementedError

    def _finalize_message(self) -> dict[str, Any]:
        raise NotImplementedError

    def _keepalive_message(self) -> dict[str, Any]:
        raise NotImplementedError

    def _closed_error(self, code: int | None, reason: str) -> VoiceAgentError | None:
        """The error a close code means even while closing (a limit, a server fault); None for none."""
        return None

    # ---- lifecycle ------------------------------------------------------------------------------

    async def _open(self) -> None:
        try:
            self._ws = await connect(
                self.url, additional_headers=self._headers, open_timeout=self._open_timeout
            )
        except InvalidStatus as exc:
            body = exc.response.body.decode("utf-8", "replace") if exc.response.body else ""
            raise self.errors.handshake(exc.response.status_code, body) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise self.errors.connection(f"cannot connect to {self.vendor}: {exc}") from exc
        self._last_send = anyio.current_time()

    def _start(self, tg: TaskGroup) -> None:
        tg.start_soon(self._read_loop)
        if self._keepalive is not None:
            tg.start_soon(self._keepalive_loop, self._keepalive)

    async def aclose(self) -> None:
        """Flush, send the close message, wait (up to ``close_timeout``) for the last message, then close."""
        if self._ws is None:
            return  # never connected: nothing to close
        if self._closing:
            await self._finished.wait()
            return
        self._closing = True
        try:
            if not self._finished.is_set():
                async with self._send_lock:
                    await self._send_batch(len(self._batch))
                    await self._send_json(self._close_message())
                with anyio.move_on_after(self._close_timeout):
                    await self._finished.wait()
                if not self._ended:
                    logger.warning(
                        "%s stream closed without %s; the last words may be lost",
                        self.vendor,
                        self.end_marker,
                    )
        except self.errors.base as exc:
            logger.warning("%s %s failed: %s", self.vendor, self.close_name, exc)
        finally:
            await self._abort()

    async def _abort(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            await self._finished.wait()

    # ---- audio and control ----------------------------------------------------------------------

    async def send_audio(self, pcm: bytes) -> None:
        encoded = encode_pcm16(pcm, self._encoding)
        async with self._send_lock:
            self._check_open()
            self._batch += encoded
            if len(self._batch) >= self._flush_bytes:
                await self._send_batch(len(self._batch) - len(self._batch) % self._flush_bytes)

    async def flush(self) -> None:
        """Send any batched audio now."""
        async with self._send_lock:
            self._check_open()
            await self._send_batch(len(self._batch))

    async def finalize(self) -> None:
        """Make the words the service still holds final now; the stream stays open."""
        async with self._send_lock:
            self._check_open()
            await self._send_batch(len(self._batch))
            await self._send_json(self._finalize_message())

    async def _send_batch(self, size: int) -> None:
        data, self._batch = bytes(self._batch[:size]), self._batch[size:]
        for offset in range(0, len(data), self._frame_bytes):
            frame = data[offset : offset + self._frame_bytes]
            await self._send(frame)
            self.frames_sent += 1
            self.bytes_sent += len(frame)

    async def _send_json(self, message: dict[str, Any]) -> None:
        await self._send(json.dumps(message))

    async def _send(self, data: str | bytes) -> None:
        assert self._ws is not None
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise self._failure or self.errors.connection(f"{self.vendor} connection closed: {exc}") from None
        self._last_send = anyio.current_time()

    def _check_open(self) -> None:
        if self._ws is None:
            name = type(self).__name__
            raise self.errors.connection(f"{name} is not connected; use 'async with {name}(...)'")
        if self._failure is not None:
            raise self._failure
        if self._closing or self._finished.is_set():
            raise self.errors.connection(f"the {self.vendor} stream is closed")

    async def _keepalive_loop(self, interval: float) -> None:
        # Services close a stream idle for a few seconds: fill pauses in the audio.
        while not self._finished.is_set():
            await anyio.sleep(max(0.0, self._last_send + interval - anyio.current_time()))
            if self._closing or self._finished.is_set():
                return
            if anyio.current_time() - self._last_send >= interval:
                async with self._send_lock:
                    try:
                        await self._send_json(self._keepalive_message())
                    except self.errors.base:
                        return  # the read loop reports the failure
                    self.keepalives_sent += 1

    # ---- what the server sends ------------------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._ws is not None
        failure: VoiceAgentError | None = None
        try:
            async for raw in self._ws:
                if self._on_message(raw):
                    self._ended = True
                    break
        except self.errors.base as exc:
            failure = exc
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            reason = exc.rcvd.reason if exc.rcvd is not None else "no close frame"
            failure = self._closed_error(code, reason)
            if failure is None and not self._closing:
                failure = self.errors.connection(f"{self.vendor} connection lost (code {code}, {reason})")
        else:
            if not self._ended and not self._closing:
                failure = self.errors.connection(f"{self.vendor} closed the stream before {self.end_marker}")
        finally:
            self._finish(failure)
