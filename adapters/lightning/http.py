"""Smallest AI Lightning TTS over HTTP: ``POST /tts`` (sync, WAV) or ``POST /tts/live`` (SSE).

Uses httpx2, the HTTP client the openai SDK already depends on. Both modes stream the response body,
so audio reaches the output as it arrives. Texts over 250 characters become several requests.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Literal

import httpx2

from voiceagent.adapters.lightning.account import account_limiter
from voiceagent.adapters.lightning.protocol import (
    DEFAULT_HTTP_BASE,
    MAX_CHARS,
    error_frame,
    error_from_body,
)
from voiceagent.adapters.lightning.voices import check_voice, voices_url_for_http
from voiceagent.adapters.lightning.websocket import check_common, request_sample_rate
from voiceagent.audio import WavStreamDecoder
from voiceagent.errors import TTSError, TTSInterruptedError
from voiceagent.limiter import Limiter
from voiceagent.logs import get_logger, set_request_id
from voiceagent.speaker import Speaker
from voiceagent.tts import AudioOutput

__all__ = ["LightningHTTPEngine", "LightningHTTPSink"]

logger = get_logger(__name__)


class LightningHTTPEngine:
    """``TTSEngine`` on Lightning's HTTP routes, one request per ``synthesize``. ``mode="sse"`` streams
    base64 PCM events; ``mode="sync"`` streams one WAV per request (``Accept: audio/wav``).

    ``voice_id`` defaults to ``DEFAULT_VOICES[model]``. ``check_voice``: before the first request (or in
    ``async with``) the voice is looked up in the catalog next to ``base_url`` (see ``voices.py``)."""

    def __init__(
        self,
        *,
        api_key: str,
        voice_id: str | None = None,
        mode: Literal["sse", "sync"] = "sse",
        model: str = "lightning_v3.1",
        base_url: str = DEFAULT_HTTP_BASE,
        sample_rate: int | None = None,
        speed: float = 1.0,
        language: str = "en",
        expire_content: bool = False,
        extra: dict[str, Any] | None = None,
        limiter: Limiter | None = None,
        timeout: float = 30.0,
        max_chunk_chars: int = MAX_CHARS,
        client: httpx2.AsyncClient | None = None,
        check_voice: bool = True,
    ) -> None:
        voice_id = check_common(model, speed, voice_id, api_key)
        if mode not in ("sse", "sync"):
            raise ValueError(f"mode must be 'sse' or 'sync', got {mode!r}")
        if not 1 <= max_chunk_chars <= MAX_CHARS:
            raise ValueError(f"max_chunk_chars must be 1..{MAX_CHARS}, got {max_chunk_chars}")
        self.mode = mode
        self.request_rate = request_sample_rate(0, sample_rate)
        self.sample_rate = self.request_rate  # of the audio being yielded: a WAV header may say otherwise
        self.url = base_url.rstrip("/") + ("/tts/live" if mode == "sse" else "/tts")
        self.max_chunk_chars = max_chunk_chars
        self.limiter = limiter or account_limiter(api_key)
        self.voice_id = voice_id
        self.language = language
        self.voices_url = voices_url_for_http(base_url)
        self._api_key = api_key
        self._voice_checked = not check_voice
        self._timeout = timeout
        self.request_ids: list[str] = []
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            # The docs warn that without this header the sync route may answer with unplayable audio.
            "Accept": "text/event-stream" if mode == "sse" else "audio/wav",
        }
        if expire_content:
            self._headers["x-expire-content"] = "true"
        self._payload: dict[str, Any] = {
            "voice_id": voice_id,
            "model": model,
            "sample_rate": self.request_rate,
            "speed": speed,
            "language": language,
            "output_format": "pcm" if mode == "sse" else "wav",
            **(extra or {}),
        }
        self._own_client = client is None
        self._client = client or httpx2.AsyncClient(timeout=timeout)

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> LightningHTTPEngine:
        await self._check_voice()
        return self

    async def _check_voice(self) -> None:
        if not self._voice_checked:
            await check_voice(
                self.voice_id,
                self.language,
                url=self.voices_url,
                api_key=self._api_key,
                request_timeout=min(self._timeout, 10.0),
            )
            self._voice_checked = True

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def interrupt(self) -> None:
        return None  # the speaker stopped reading: leaving the stream closes the request

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        await self._check_voice()
        self.sample_rate = self.request_rate
        payload = {**self._payload, "text": text}
        yielded = False
        try:
            async with self._client.stream("POST", self.url, json=payload, headers=self._headers) as response:
                request_id = response.headers.get("X-Request-Id")
                if request_id:
                    self.request_ids.append(request_id)
                    set_request_id(request_id)
                if response.status_code >= 300:
                    raise error_from_body(response.status_code, await response.aread(), request_id)
                sse = self.mode == "sse"
                audio = self._read_sse(response, request_id) if sse else self._read_audio(response)
                async for data in audio:
                    yielded = True
                    yield data
        except httpx2.TransportError as exc:
            if yielded:
                raise TTSInterruptedError(f"Lightning stream broke mid-utterance: {exc!r}") from exc
            raise TTSError(f"cannot reach Lightning at {self.url}: {exc!r}") from exc

    async def _read_audio(self, response: httpx2.Response) -> AsyncIterator[bytes]:
        # A WAV per the docs; headerless PCM at the requested rate is accepted too (UNCONFIRMED which
        # one the service sends for every output_format/Accept combination).
        decoder: WavStreamDecoder | None = None
        first = True
        async for data in response.aiter_bytes():
            if first:
                first = False
                if data[:4] == b"RIFF":
                    decoder = WavStreamDecoder()
            if decoder is not None:
                pcm = decoder.feed(data)
                if pcm and decoder.header is not None:
                    self.sample_rate = decoder.header.sample_rate
                    yield pcm
                continue
            yield data
        if first:
            raise TTSError("Lightning answered with an empty body")

    async def _read_sse(self, response: httpx2.Response, request_id: str | None) -> AsyncIterator[bytes]:
        yielded = False
        event = ""
        data_lines: list[str] = []
        async for line in response.aiter_lines():
            if line.startswith(":"):
                continue
            if line:
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    event = value
                elif field == "data":
                    data_lines.append(value)
                continue
            if not data_lines:
                event = ""
                continue
            message = _sse_json("\n".join(data_lines))
            data_lines, kind, event = [], event, ""
            if message.get("status") == "error" or "error" in message:
                raise error_frame(message).to_error(request_id)
            audio = message.get("audio")
            if audio and kind in ("", "audio"):
                try:
                    pcm = base64.b64decode(audio, validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise TTSError("Lightning sent audio that is not valid base64") from exc
                yielded = yielded or bool(pcm)
                yield pcm
            if message.get("done") is True:
                return
        if yielded:
            raise TTSInterruptedError("Lightning SSE stream ended without done=true mid-utterance")
        raise TTSError("Lightning SSE stream ended without done=true and without audio")


class LightningHTTPSink(Speaker):
    """The ``TTSSink`` on Lightning's HTTP routes: a ``Speaker`` over a ``LightningHTTPEngine`` built
    from the same keyword arguments. Texts over ``max_chunk_chars`` become several requests, each
    holding the account's slot; Lightning is asked for ``output``'s rate when it has it."""

    engine: LightningHTTPEngine

    def __init__(self, output: AudioOutput, *, sample_rate: int | None = None, **options: Any) -> None:
        rate = request_sample_rate(output.sample_rate, sample_rate)
        engine = LightningHTTPEngine(sample_rate=rate, **options)
        super().__init__(engine, output, max_chars=engine.max_chunk_chars, limiter=engine.limiter)


def _sse_json(data: str) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except json.JSONDecodeError as exc:
        raise TTSError(f"Lightning sent an SSE event that is not JSON: {data[:80]!r}") from exc
    if not isinstance(message, dict):
        raise TTSError(f"Lightning sent an SSE event that is not a JSON object: {data[:80]!r}")
    return message
