"""Cartesia TTS over its WebSocket (``wss://api.cartesia.ai/tts/websocket``), one socket for many texts.

Each ``synthesize`` is one Cartesia *context* (a fresh ``context_id``) on the same socket: the text is
sent with ``continue: false`` and its audio arrives as ``chunk`` messages (base64 raw ``pcm_s16le``)
until ``done``. A barge-in sends ``{"context_id": ..., "cancel": true}`` on that socket instead of
reconnecting; Cartesia may still send audio it had already generated for that context, so every
message of a context other than the current one is dropped. ``timestamps`` messages (with
``add_timestamps=True``) are kept in ``word_timestamps``. A kept socket that the server closed (idle)
is replaced once if it breaks before any audio of the text; after some audio it is a
``TTSInterruptedError`` (nothing is resent) and the next text reconnects.

Auth and version are headers, as the official ``cartesia`` SDK sends them (``Authorization: Bearer``,
``Cartesia-Version``; SDK 4.2.0 pins ``2026-08-14``).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from voiceagent.errors import TTSError, TTSInterruptedError
from voiceagent.limiter import Limiter
from voiceagent.logs import get_logger, register_secret
from voiceagent.speaker import Speaker
from voiceagent.tts import AudioOutput

__all__ = [
    "CARTESIA_VERSION",
    "DEFAULT_URL",
    "SAMPLE_RATES",
    "CartesiaEngine",
    "CartesiaSink",
    "WordTimestamps",
]

logger = get_logger(__name__)

DEFAULT_URL = "wss://api.cartesia.ai/tts/websocket"
CARTESIA_VERSION = "2026-08-14"  # the official SDK's (4.2.0) default
# The raw output rates the SDK's RawOutputFormatParam allows.
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)


@dataclass(frozen=True)
class WordTimestamps:
    """One ``timestamps`` message: words with their start and end (seconds) in the text's audio."""

    text: str
    words: tuple[str, ...]
    start: tuple[float, ...]
    end: tuple[float, ...]


class CartesiaEngine:
    """``TTSEngine`` on Cartesia's TTS WebSocket. ``voice_id`` is a Cartesia voice id; ``url`` may point
    at any server speaking the protocol (the fake in tests). The socket opens on first use (or on
    ``__aenter__``) and is reopened only after it broke."""

    def __init__(
        self,
        *,
        api_key: str,
        voice_id: str,
        model_id: str = "sonic-3",
        sample_rate: int = 24000,
        language: str | None = "en",
        add_timestamps: bool = False,
        url: str = DEFAULT_URL,
        version: str = CARTESIA_VERSION,
        open_timeout: float = 10.0,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is required")
        if not voice_id:
            raise ValueError("voice_id is required: a Cartesia voice id")
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {SAMPLE_RATES}, got {sample_rate}")
        register_secret(api_key)  # never in a log line
        self.api_key = api_key
        self.voice_id = voice_id
        self.model_id = model_id
        self.sample_rate = sample_rate
        self.language = language
        self.add_timestamps = add_timestamps
        self.url = url
        self.version = version
        self.open_timeout = open_timeout
        self.context_ids: list[str] = []
        self.cancelled_contexts: list[str] = []
        self.word_timestamps: list[WordTimestamps] = []
        self.connections = 0
        self._ws: ClientConnection | None = None
        self._unfinished: str | None = None  # a context left before its done: cancel it

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> CartesiaEngine:
        await self._connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def _connect(self) -> ClientConnection:
        if self._ws is not None:
            return self._ws
        headers = {"Authorization": f"Bearer {self.api_key}", "Cartesia-Version": self.version}
        try:
            self._ws = await connect(
                self.url, additional_headers=headers, open_timeout=self.open_timeout, max_size=None
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise TTSError(
                f"Cartesia refused the connection: {_body_message(exc.response.body)}", status_code=status
            ) from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise TTSError(f"cannot reach Cartesia at {self.url}: {exc!r}") from exc
        self.connections += 1
        self._unfinished = None  # a new socket has no contexts
        return self._ws

    # -- TTSEngine ---------------------------------------------------------------------------------

    def request(self, text: str, context_id: str) -> dict[str, Any]:
        """The generation request for ``text`` (a whole text: ``continue`` false ends the context)."""
        message: dict[str, Any] = {
            "context_id": context_id,
            "model_id": self.model_id,
            "transcript": text,
            "voice": {"id": self.voice_id},  # the SDK's VoiceSpecifier object
            "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": self.sample_rate},
            "continue": False,
        }
        if self.language is not None:
            message["language"] = self.language
        if self.add_timestamps:
            message["add_timestamps"] = True
        return message

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        await self._cancel_unfinished()
        # A socket kept from an earlier text may have been closed by the server meanwhile (Cartesia
        # closes idle ones): if it breaks before any audio of this text, one new socket is tried.
        retry = self._ws is not None
        while True:
            ws = await self._connect()
            context_id = str(uuid.uuid4())
            self.context_ids.append(context_id)
            self._unfinished = context_id
            yielded = False
            try:
                await ws.send(json.dumps(self.request(text, context_id)))
                while True:
                    message = _parse(await ws.recv())
                    if message.get("context_id") not in (context_id, None):
                        continue  # late audio of a cancelled context
                    kind = message.get("type")
                    if kind == "chunk":
                        data = base64.b64decode(message.get("data") or "")
                        if data:
                            yielded = True
                            yield data
                    elif kind == "timestamps":
                        self._timestamps(text, message)
                    elif kind == "error":
                        self._unfinished = None  # the context is over on the server
                        raise _error(message, yielded)
                    if kind == "done" or (kind == "chunk" and message.get("done") is True):
                        self._unfinished = None
                        return
            except ConnectionClosed as exc:
                self._ws = None
                self._unfinished = None
                if retry and not yielded:
                    retry = False
                    logger.debug("cartesia socket was closed before this text; reconnecting once")
                    continue
                error = TTSInterruptedError if yielded else TTSError
                raise error(f"Cartesia socket closed mid-utterance: {exc!r}") from exc

    async def interrupt(self) -> None:
        await self._cancel_unfinished()

    async def _cancel_unfinished(self) -> None:
        """Cancel a context that was left before its ``done`` (barge-in), on the same socket."""
        context_id, self._unfinished = self._unfinished, None
        ws = self._ws
        if context_id is None or ws is None:
            return
        try:
            await ws.send(json.dumps({"context_id": context_id, "cancel": True}))
        except ConnectionClosed:
            self._ws = None  # the next text reconnects
            return
        self.cancelled_contexts.append(context_id)
        logger.debug("cartesia context %s cancelled", context_id)

    def _timestamps(self, text: str, message: dict[str, Any]) -> None:
        words = message.get("word_timestamps")
        if not isinstance(words, dict):
            return
        self.word_timestamps.append(
            WordTimestamps(
                text,
                tuple(str(w) for w in words.get("words", ())),
                tuple(float(s) for s in words.get("start", ())),
                tuple(float(e) for e in words.get("end", ())),
            )
        )


class CartesiaSink(Speaker):
    """The ``TTSSink`` on Cartesia: a ``Speaker`` over a ``CartesiaEngine`` built from the same keyword
    arguments."""

    engine: CartesiaEngine

    def __init__(self, output: AudioOutput, *, limiter: Limiter | None = None, **options: Any) -> None:
        super().__init__(CartesiaEngine(**options), output, limiter=limiter)


def _parse(raw: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    except ValueError as exc:
        raise TTSError(f"Cartesia sent a message that is not JSON: {raw[:80]!r}") from exc
    if not isinstance(message, dict):
        raise TTSError(f"Cartesia sent a message that is not an object: {raw[:80]!r}")
    return message


def _error(message: dict[str, Any], yielded: bool) -> TTSError:
    text = message.get("message") or message.get("title") or message.get("error") or "unknown error"
    status = message.get("status_code")
    code = message.get("error_code")
    error = TTSInterruptedError if yielded else TTSError
    return error(
        f"Cartesia: {text}",
        code=None if code is None else str(code),
        status_code=status if isinstance(status, int) else None,
        request_id=message.get("request_id"),
    )


def _body_message(body: bytes | bytearray | None) -> str:
    if not body:
        return "no body"
    try:
        payload = json.loads(body)
    except ValueError:
        return bytes(body[:200]).decode(errors="replace")
    if isinstance(payload, dict):
        return str(payload.get("message") or payload.get("error") or payload)
    return str(payload)
