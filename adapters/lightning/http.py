"""Smallest AI Lightning TTS over HTTP: ``POST /tts`` (sync, WAV) or ``POST /tts/live`` (SSE).

Uses httpx2, the HTTP client the openai SDK already depends on. Both modes stream the response body,
so audio reaches the output as it arrives. Texts over 250 characters become several requests.
"""

from __future__ import annotations

import base64
import binascii
import json
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
from voiceagent.sink_base import Delivery, StreamingSink
from voiceagent.tts import AudioOutput

__all__ = ["LightningHTTPSink"]

logger = get_logger(__name__)


class LightningHTTPSink(StreamingSink):
    """``TTSSink`` on Lightning's HTTP routes. ``mode="sse"`` streams base64 PCM events;
    ``mode="sync"`` streams one WAV per request (``Accept: audio/wav``).

    ``voice_id`` defaults to ``DEFAULT_VOICES[model]``. ``check_voice``: before the first request (or in
    ``async with``) the voice is looked up in the catalog next to ``base_url`` (see ``voices.py``)."""

    def __init__(
        self,
        output: AudioOutput,
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
        super().__init__(output)
        voice_id = check_common(model, speed, voice_id, api_key)
        if mode not in ("sse", "sync"):
            raise ValueError(f"mode must be 'sse' or 'sync', got {mode!r}")
        if not 1 <= max_chunk_chars <= MAX_CHARS:
            raise ValueError(f"max_chunk_chars must be 1..{MAX_CHARS}, got {max_chunk_chars}")
        self.mode = mode
        self.sample_rate = request_sample_rate(output.sample_rate, sample_rate)
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
            "sample_rate": self.sample_rate,
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

    async def __aenter__(self) -> LightningHTTPSink:
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

    async def _synthesize(self, text: str, delivery: Delivery) -> None:
        await self._check_voice()
        await self._synthesize_in_pieces(text, delivery, self.max_chunk_chars, self.limiter, self._request)

    async def _request(self, text: str, delivery: Delivery) -> None:
        payload = {**self._payload, "text": text}
        try:
            async with self._client.stream("POST", self.url, json=payload, headers=self._headers) as response:
                request_id = response.headers.get("X-Request-Id")
                if request_id:
                    self.request_ids.append(request_id)
                    set_request_id(request_id)
                if response.status_code >= 300:
                    raise error_from_body(response.status_code, await response.aread(), request_id)
                if self.mode == "sse":
                    await self._read_sse(response, delivery, request_id)
                else:
                    await self._read_audio(response, delivery)
        except httpx2.TransportError as exc:
            if delivery.bytes_delivered:
                raise TTSInterruptedError(f"Lightning stream broke mid-utterance: {exc!r}") from exc
            raise TTSError(f"cannot reach Lightning at {self.url}: {exc!r}") from exc

    async def _read_audio(self, response: httpx2.Response, delivery: Delivery) -> None:
        # A WAV per the docs; headerless PCM at the requested rate is accepted too (UNCONFIRMED which
        # one the service sends for every output_format/Accept combination).
        decoder: WavStreamDecoder | None = None
        carry = b""
        first = True
        async for data in response.aiter_bytes():
            if first:
                first = False
                if data[:4] == b"RIFF":
                    decoder = WavStreamDecoder()
            if decoder is not None:
                pcm = decoder.feed(data)
                if pcm and decoder.header is not None:
                    await delivery.audio(pcm, decoder.header.sample_rate)
                continue
            data = carry + data
            even = len(data) - len(data) % 2
            data, carry = data[:even], data[even:]
            await delivery.audio(data, self.sample_rate)
        if first:
            raise TTSError("Lightning answered with an empty body")

    async def _read_sse(self, response: httpx2.Response, delivery: Delivery, request_id: str | None) -> None:
        carry = b""
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
                data = carry + pcm
                even = len(data) - len(data) % 2
                data, carry = data[:even], data[even:]
                await delivery.audio(data, self.sample_rate)
            if message.get("done") is True:
                return
        if delivery.bytes_delivered:
            raise TTSInterruptedError("Lightning SSE stream ended without done=true mid-utterance")
        raise TTSError("Lightning SSE stream ended without done=true and without audio")


def _sse_json(data: str) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except json.JSONDecodeError as exc:
        raise TTSError(f"Lightning sent an SSE event that is not JSON: {data[:80]!r}") from exc
    if not isinstance(message, dict):
        raise TTSError(f"Lightning sent an SSE event that is not a JSON object: {data[:80]!r}")
    return message
