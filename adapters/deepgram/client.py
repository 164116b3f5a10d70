"""Deepgram live streaming STT: a voiceagent ``STTSource`` over one ``/v1/listen`` WebSocket.

Deepgram's events map onto the end-of-turn detector (``voiceagent.endpointing``) so:
- ``Results`` become ``Transcript``s (empty ones skipped); a final's ``end_of_turn`` is its
  ``speech_final`` (Deepgram's endpointing heard a pause) or ``from_finalize`` (it answers our
  ``Finalize``);
- ``SpeechStarted`` (Deepgram's VAD) is ``SpeechStarted``; the first words after an end count as a start
  too, since Deepgram's VAD event is not guaranteed for every utterance;
- the end of speech is a ``speech_final`` or an ``UtteranceEnd`` (the fallback in noise, where
  endpointing never fires), whichever comes first: one ``SpeechEnded`` per utterance.
"""

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
    DeepgramConnectionError,
    DeepgramError,
    DeepgramHandshakeError,
    DeepgramProtocolError,
    DeepgramServerError,
)
from .messages import (
    CLOSE_STREAM,
    FINALIZE,
    KEEP_ALIVE,
    DeepgramErrorMessage,
    DeepgramMetadata,
    DeepgramResults,
    DeepgramSpeechStarted,
    DeepgramUtteranceEnd,
    parse_server_message,
)
from .options import DEFAULT_URL, DeepgramOptions, build_url

logger = get_logger(__name__)


class DeepgramSTT:
    """Streams caller audio (PCM16 mono at ``options.sample_rate``; mu-law/A-law encoded here) in
    frames of ``chunk_ms`` (Deepgram asks for 20-100 ms), sends ``KeepAlive`` after ``keepalive``
    seconds without audio (Deepgram closes an idle stream after 10 s, NET-0001), and yields
    ``Transcript``/``SpeechStarted``/``SpeechEnded``. Use as ``async with DeepgramSTT(key) as stt``;
    ``aclose`` sends ``CloseStream`` and waits for ``Metadata``; failures surface from ``events()`` as
    ``DeepgramError`` subclasses."""

    def __init__(
        self,
        api_key: str,
        options: DeepgramOptions | None = None,
        *,
        url: str = DEFAULT_URL,
        chunk_ms: float = 50.0,
        keepalive: float = 5.0,
        open_timeout: float = 10.0,
        close_timeout: float = 10.0,
    ) -> None:
        if chunk_ms <= 0 or keepalive <= 0:
            raise ValueError("chunk_ms and keepalive must be positive")
        self.options = options or DeepgramOptions()
        self.url = build_url(self.options, url)
        self._api_key = api_key
        register_secret(api_key)
        width = 2 if self.options.encoding == "linear16" else 1
        self._chunk_bytes = max(width, int(self.options.sample_rate * chunk_ms / 1000) * width)
        self._keepalive = keepalive
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._ws: ClientConnection | None = None
        self._tg: TaskGroup | None = None
        self._batch = bytearray()
        self._send_lock = anyio.Lock()
        self._events_tx, self._events_rx = anyio.create_memory_object_stream[STTEvent | DeepgramError](
            math.inf
        )
        self._finished = anyio.Event()
        self._closing = False
        self._got_metadata = False
        self._failure: DeepgramError | None = None
        self._speaking = False  # between a speech start and its end, as we reported them
        self._started_at = 0.0
        self._last_send = 0.0
        self.keepalives_sent = 0

    @property
    def vad_events(self) -> bool:
        """Deepgram reports speech start and end itself unless both endpointing and UtteranceEnd are off."""
        return self.options.endpointing is not False or self.options.utterance_end_ms is not None

    async def __aenter__(self) -> DeepgramSTT:
        try:
            self._ws = await connect(
                self.url,
                additional_headers={"Authorization": f"Token {self._api_key}"},
                open_timeout=self._open_timeout,
            )
        except InvalidStatus as exc:
            body = exc.response.body.decode("utf-8", "replace") if exc.response.body else ""
            raise DeepgramHandshakeError(exc.response.status_code, body) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise DeepgramConnectionError(f"cannot connect to Deepgram: {exc}") from exc
        self._last_send = anyio.current_time()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._read_loop)
        self._tg.start_soon(self._keepalive_loop)
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
        """Flush, send ``CloseStream``, wait (up to ``close_timeout``) for ``Metadata``, then close."""
        if self._ws is None:
            return  # never connected: nothing to close
        if self._closing:
            await self._finished.wait()
            return
        self._closing = True
        try:
            if not self._finished.is_set():
                async with self._send_lock:
                    await self._flush()
                    await self._send(json.dumps(CLOSE_STREAM))
                with anyio.move_on_after(self._close_timeout):
                    await self._finished.wait()
                if not self._got_metadata:
                    logger.warning("Deepgram stream closed without Metadata; the last words may be lost")
        except DeepgramError as exc:
            logger.warning("Deepgram CloseStream failed: %s", exc)
        finally:
            await self._close_socket()

    async def _close_socket(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            await self._finished.wait()

    async def send_audio(self, pcm: bytes) -> None:
        if self.options.encoding == "mulaw":
            pcm = pcm16_to_ulaw(pcm)
        elif self.options.encoding == "alaw":
            pcm = pcm16_to_alaw(pcm)
        async with self._send_lock:
            self._check_open()
            self._batch += pcm
            while len(self._batch) >= self._chunk_bytes:
                frame, self._batch = bytes(self._batch[: self._chunk_bytes]), self._batch[self._chunk_bytes :]
                await self._send(frame)

    async def finalize(self) -> None:
        """Make the words Deepgram still holds final now (``Finalize``); the stream stays open."""
        async with self._send_lock:
            self._check_open()
            await self._flush()
            await self._send(json.dumps(FINALIZE))

    async def _flush(self) -> None:
        if self._batch:
            frame, self._batch = bytes(self._batch), bytearray()
            await self._send(frame)

    async def _send(self, data: str | bytes) -> None:
        assert self._ws is not None
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise self._failure or DeepgramConnectionError(f"Deepgram connection closed: {exc}") from None
        self._last_send = anyio.current_time()

    def _check_open(self) -> None:
        if self._ws is None:
            raise DeepgramConnectionError("DeepgramSTT is not connected; use 'async with DeepgramSTT(...)'")
        if self._failure is not None:
            raise self._failure
        if self._closing or self._finished.is_set():
            raise DeepgramConnectionError("the Deepgram stream is closed")

    async def _keepalive_loop(self) -> None:
        while not self._finished.is_set():
            await anyio.sleep(max(0.0, self._last_send + self._keepalive - anyio.current_time()))
            if self._closing or self._finished.is_set():
                return
            if anyio.current_time() - self._last_send >= self._keepalive:
                async with self._send_lock:
                    try:
                        await self._send(json.dumps(KEEP_ALIVE))
                    except DeepgramError:
                        return  # the read loop reports the failure
                    self.keepalives_sent += 1

    async def events(self) -> AsyncIterator[STTEvent]:
        """Transcripts and speech events; ends after ``Metadata``; raises ``DeepgramError`` on failure."""
        async for item in self._events_rx:
            if isinstance(item, DeepgramError):
                raise item
            yield item

    def _emit(self, event: STTEvent) -> None:
        self._events_tx.send_nowait(event)

    def _map(self, message: object) -> None:
        if isinstance(message, DeepgramResults):
            if message.text.strip():
                self._start(message.start)
                end = message.is_final and (message.speech_final or message.from_finalize)
                self._emit(Transcript(message.text, message.is_final, end))
            if message.speech_final:
                self._end(message.start + message.duration)
        elif isinstance(message, DeepgramSpeechStarted):
            self._start(message.timestamp)
        elif isinstance(message, DeepgramUtteranceEnd):
            self._end(message.last_word_end)
        else:
            logger.debug("ignoring Deepgram message %r", message)

    def _start(self, at: float) -> None:
        if self.vad_events and not self._speaking:
            self._speaking, self._started_at = True, at
            self._emit(SpeechStarted(at=at))

    def _end(self, at: float) -> None:
        # An UtteranceEnd about words from before the latest start is stale: the caller went on.
        if self.vad_events and self._speaking and at >= self._started_at:
            self._speaking = False
            self._emit(SpeechEnded(at=at))

    async def _read_loop(self) -> None:
        assert self._ws is not None
        failure: DeepgramError | None = None
        try:
            async for raw in self._ws:
                message = parse_server_message(raw)
                if isinstance(message, DeepgramMetadata):
                    self._got_metadata = True
                    break
                if isinstance(message, DeepgramErrorMessage):
                    failure = DeepgramServerError(f"{message.variant}: {message.description}".lstrip(": "))
                    break
                self._map(message)
        except DeepgramProtocolError as exc:
            failure = exc
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            reason = exc.rcvd.reason if exc.rcvd is not None else "no close frame"
            if code in (1008, 1011):  # DATA-0000 (audio it cannot decode), NET-0000/NET-0001 (timeouts)
                failure = DeepgramServerError(f"{code} {reason}", code=code)
            elif not self._closing:
                failure = DeepgramConnectionError(f"Deepgram connection lost (code {code}, {reason})")
        else:
            if not self._got_metadata and failure is None and not self._closing:
                failure = DeepgramConnectionError("Deepgram closed the stream before Metadata")
        finally:
            if failure is not None:
                logger.warning("Deepgram stream failed: %s", failure)
                self._failure = failure
                self._events_tx.send_nowait(failure)
            self._events_tx.close()
            self._finished.set()
