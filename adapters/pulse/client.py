"""Pulse streaming STT client: a voiceagent ``STTSource`` over one WebSocket."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from types import TracebackType

import anyio
from anyio.abc import TaskGroup
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from voiceagent.audio import pcm16_to_alaw, pcm16_to_ulaw
from voiceagent.logs import get_logger, register_secret
from voiceagent.stt import SpeechEnded, SpeechStarted, STTEvent, Transcript

from .errors import (
    PulseConcurrencyLimitError,
    PulseConnectionError,
    PulseError,
    PulseHandshakeError,
    PulseProtocolError,
    PulseServerError,
)
from .messages import PulseErrorMessage, PulseSpeechEvent, PulseTranscript, has_words, parse_server_message
from .options import DEFAULT_URL, PulseOptions, build_url

logger = get_logger(__name__)

CONCURRENCY_LIMIT_CLOSE_CODE = 1008


class PulseSTT:
    """Streams caller audio to Pulse and yields ``Transcript``/``SpeechStarted``/``SpeechEnded``.

    ``send_audio`` takes PCM16 mono at ``options.sample_rate`` and encodes it as ``options.encoding``
    (mulaw/alaw are encoded here; linear16 is sent as is; for linear32, opus and ogg_opus pass bytes
    already in that encoding). Audio goes out in binary frames of about ``batch_bytes`` (4096, as
    recommended), or sooner once a batch holds ``max_batch_ms`` of audio, so that slow encodings
    (mu-law at 8 kHz fills 4096 bytes only every half second) do not add latency.

    Use as ``async with PulseSTT(key, options) as stt``. ``aclose`` flushes, sends ``close_stream``
    and waits for the ``is_last`` transcript before closing; ``events()`` then ends. Failures surface
    from ``events()`` as ``PulseError`` subclasses (``PulseConcurrencyLimitError`` on close code 1008).
    """

    def __init__(
        self,
        api_key: str,
        options: PulseOptions | None = None,
        *,
        url: str = DEFAULT_URL,
        batch_bytes: int = 4096,
        max_batch_ms: float = 128.0,
        open_timeout: float = 10.0,
        close_timeout: float = 10.0,
    ) -> None:
        if batch_bytes <= 0:
            raise ValueError("batch_bytes must be positive")
        self.options = options or PulseOptions()
        self.url = build_url(self.options, url)
        self._api_key = api_key
        register_secret(api_key)  # never in a log line
        self._batch_bytes = batch_bytes
        self._flush_bytes = self.options.batch_size(batch_bytes, max_batch_ms)
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._ws: ClientConnection | None = None
        self._tg: TaskGroup | None = None
        self._batch = bytearray()
        self._send_lock = anyio.Lock()
        self._events_tx, self._events_rx = anyio.create_memory_object_stream[STTEvent | PulseError](math.inf)
        self._finished = anyio.Event()
        self._closing = False
        self._got_last = False
        self._failure: PulseError | None = None
        self.frames_sent = 0
        self.bytes_sent = 0

    @property
    def vad_events(self) -> bool:
        """True when Pulse was asked for ``speech_started``/``speech_ended`` (``options.vad_events``)."""
        return self.options.vad_events

    # ---- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> PulseSTT:
        try:
            self._ws = await connect(
                self.url,
                additional_headers={"Authorization": f"Bearer {self._api_key}"},
                open_timeout=self._open_timeout,
            )
        except InvalidStatus as exc:
            body = exc.response.body.decode("utf-8", "replace") if exc.response.body else ""
            raise PulseHandshakeError(exc.response.status_code, body) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise PulseConnectionError(f"cannot connect to Pulse: {exc}") from exc
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._read_loop)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._tg is not None
        try:
            if exc_type is None:
                await self.aclose()
            else:
                await self._close_socket()
        finally:
            self._tg.cancel_scope.cancel()
            result = await self._tg.__aexit__(exc_type, exc, tb)
        return result

    async def aclose(self) -> None:
        """Flush, send ``close_stream``, wait (up to ``close_timeout``) for ``is_last``, then close."""
        if self._closing:
            await self._finished.wait()
            return
        self._closing = True
        try:
            if not self._finished.is_set():
                async with self._send_lock:
                    await self._send_batch(len(self._batch))
                    await self._send_json({"type": "close_stream"})
                with anyio.move_on_after(self._close_timeout):
                    await self._finished.wait()
                if not self._got_last:
                    logger.warning("Pulse stream closed without is_last; the last words may be lost")
        except PulseError as exc:
            logger.warning("Pulse close_stream failed: %s", exc)
        finally:
            await self._close_socket()

    async def _close_socket(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        await self._finished.wait()

    # ---- audio and control ------------------------------------------------------------------------

    async def send_audio(self, pcm: bytes) -> None:
        encoded = self._encode(pcm)
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
        """Force a final transcript of what was said so far; the stream stays open."""
        async with self._send_lock:
            self._check_open()
            await self._send_batch(len(self._batch))
            await self._send_json({"type": "finalize"})

    def _encode(self, pcm: bytes) -> bytes:
        if self.options.encoding == "mulaw":
            return pcm16_to_ulaw(pcm)
        if self.options.encoding == "alaw":
            return pcm16_to_alaw(pcm)
        return pcm

    async def _send_batch(self, size: int) -> None:
        data, self._batch = bytes(self._batch[:size]), self._batch[size:]
        for offset in range(0, len(data), self._batch_bytes):
            frame = data[offset : offset + self._batch_bytes]
            await self._send(frame)
            self.frames_sent += 1
            self.bytes_sent += len(frame)

    async def _send_json(self, message: dict[str, str]) -> None:
        await self._send(json.dumps(message))

    async def _send(self, data: str | bytes) -> None:
        assert self._ws is not None
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise self._failure or PulseConnectionError(f"Pulse connection closed: {exc}") from None

    def _check_open(self) -> None:
        if self._ws is None:
            raise PulseConnectionError("PulseSTT is not connected; use 'async with PulseSTT(...)'")
        if self._failure is not None:
            raise self._failure
        if self._closing or self._finished.is_set():
            raise PulseConnectionError("the Pulse stream is closed")

    # ---- events -----------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[STTEvent]:
        """Transcripts (empty ones skipped) and VAD events; ends after ``is_last``; raises on failure."""
        async for item in self._events_rx:
            if isinstance(item, PulseError):
                raise item
            yield item

    async def _read_loop(self) -> None:
        assert self._ws is not None
        failure: PulseError | None = None
        try:
            async for raw in self._ws:
                message = parse_server_message(raw)
                if isinstance(message, PulseTranscript):
                    # A final is the end of a segment; the server ends the turn only on is_last, an
                    # answer to finalize, or speech_final (LiveKit's plugin reads the same flags).
                    end = message.is_final and (
                        message.is_last or message.from_finalize or message.speech_final
                    )
                    if has_words(message.text):
                        self._events_tx.send_nowait(Transcript(message.text, message.is_final, end))
                    if message.is_last:
                        self._got_last = True
                        break
                elif isinstance(message, PulseSpeechEvent):
                    event = SpeechStarted if message.started else SpeechEnded
                    self._events_tx.send_nowait(event(at=message.timestamp))
                elif isinstance(message, PulseErrorMessage):
                    failure = PulseServerError(message.message)
                    break
                else:
                    logger.debug("ignoring Pulse message of type %r", message.type)
        except PulseProtocolError as exc:
            failure = exc
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            reason = exc.rcvd.reason if exc.rcvd is not None else "no close frame"
            if code == CONCURRENCY_LIMIT_CLOSE_CODE:
                failure = PulseConcurrencyLimitError(f"Pulse concurrency limit reached (1008 {reason})")
            elif not self._closing:
                failure = PulseConnectionError(f"Pulse connection lost (code {code}, {reason})")
        else:
            if not self._got_last and failure is None and not self._closing:
                failure = PulseConnectionError("Pulse closed the stream before is_last")
        finally:
            if failure is not None:
                logger.warning("Pulse stream failed: %s", failure)
                self._failure = failure
                self._events_tx.send_nowait(failure)
            self._events_tx.close()
            self._finished.set()
