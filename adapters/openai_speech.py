"""TTS through any OpenAI-compatible ``/audio/speech`` endpoint, with the openai SDK.

Requests ``response_format="pcm"`` (raw 16-bit mono, 24 kHz on OpenAI) and streams it to the output
as it arrives via ``with_streaming_response``. A server that answers with a WAV instead is handled too.

There is no default ``model``: every model OpenAI serves on ``/audio/speech`` (``tts-1``, ``tts-1-hd``,
``gpt-4o-mini-tts`` and its dated versions) is deprecated with shutdown on 2027-01-06 (openai SDK 3.57),
and other servers name their models as they like. Asking for one of those models from api.openai.com
raises a ``FutureWarning`` at construction; the same names on other servers are left alone.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import httpx2
import openai

from voiceagent.audio import WavStreamDecoder
from voiceagent.errors import TTSError, TTSInterruptedError
from voiceagent.limiter import Limiter
from voiceagent.logs import get_logger, register_secret, set_request_id
from voiceagent.speaker import Speaker
from voiceagent.tts import AudioOutput

__all__ = [
    "OPENAI_SPEECH_SHUTDOWN",
    "OpenAISpeechEngine",
    "OpenAISpeechSink",
    "deprecated_openai_model",
    "is_openai_host",
]

logger = get_logger(__name__)

# OpenAI's documented limit for `input`.
MAX_INPUT_CHARS = 4096
OPENAI_PCM_RATE = 24000
OPENAI_SPEECH_SHUTDOWN = "2027-01-06"
# tts-1, tts-1-hd (and their -1106 snapshots), gpt-4o-mini-tts and its dated versions (-2025-03-20, ...).
_DEPRECATED_OPENAI_MODELS = re.compile(r"tts-1(-hd)?(-\d{4})?|gpt-4o-mini-tts(-\d{4}-\d{2}-\d{2})?")


def is_openai_host(base_url: str) -> bool:
    """True for OpenAI's own API (not for the many other servers that speak its protocol)."""
    host = httpx2.URL(base_url).host
    return host == "api.openai.com" or host.endswith(".api.openai.com")


def deprecated_openai_model(model: str) -> bool:
    return _DEPRECATED_OPENAI_MODELS.fullmatch(model) is not None


class OpenAISpeechEngine:
    """``TTSEngine`` on ``POST {base_url}/audio/speech`` (one request per ``synthesize``).

    Pass a configured ``client`` (``openai.AsyncOpenAI``), or ``base_url``/``api_key`` to make one.
    ``model`` is required (see the module docstring). ``pcm_sample_rate`` is the rate the server's raw
    PCM is at (24000 for OpenAI; some compatible servers differ). ``instructions`` is sent only when
    given (gpt-4o-mini-tts style voice direction).
    """

    def __init__(
        self,
        *,
        client: openai.AsyncOpenAI | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str,
        voice: str = "alloy",
        speed: float | None = None,
        instructions: str | None = None,
        pcm_sample_rate: int = OPENAI_PCM_RATE,
        max_input_chars: int = MAX_INPUT_CHARS,
        extra_body: dict[str, Any] | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        if not model:
            raise ValueError("model is required: the name of a model the speech server serves")
        if speed is not None and not 0.25 <= speed <= 4.0:
            raise ValueError(f"speed must be 0.25..4.0, got {speed}")
        if pcm_sample_rate <= 0:
            raise ValueError(f"pcm_sample_rate must be positive, got {pcm_sample_rate}")
        if max_input_chars < 1:
            raise ValueError(f"max_input_chars must be positive, got {max_input_chars}")
        self._own_client = client is None
        self.client = client or openai.AsyncOpenAI(base_url=base_url, api_key=api_key)
        register_secret(self.client.api_key)  # never in a log line
        if is_openai_host(str(self.client.base_url)) and deprecated_openai_model(model):
            warnings.warn(
                f"OpenAI shuts down {model!r} (and every other /audio/speech model) on "
                f"{OPENAI_SPEECH_SHUTDOWN}; OpenAI points new integrations to its Realtime API. "
                "See the README (OpenAI speech) for what to use instead.",
                FutureWarning,
                stacklevel=3,
            )
        self.model = model
        self.voice = voice
        self.speed = speed
        self.instructions = instructions
        self.pcm_sample_rate = pcm_sample_rate
        self.sample_rate = pcm_sample_rate  # of the audio being yielded: a WAV answer says its own
        self.max_input_chars = max_input_chars
        self.extra_body = extra_body
        self.limiter = limiter
        self.request_ids: list[str] = []

    async def aclose(self) -> None:
        if self._own_client:
            await self.client.close()

    async def __aenter__(self) -> OpenAISpeechEngine:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def interrupt(self) -> None:
        return None  # the speaker stopped reading: leaving the stream closes the request

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.sample_rate = self.pcm_sample_rate
        params: dict[str, Any] = {}
        if self.speed is not None:
            params["speed"] = self.speed
        if self.instructions is not None:
            params["instructions"] = self.instructions
        try:
            async with self.client.audio.speech.with_streaming_response.create(
                model=self.model,
                voice=self.voice,
                input=text,
                response_format="pcm",
                extra_body=self.extra_body,
                **params,
            ) as response:
                request_id = response.request_id
                if request_id:
                    self.request_ids.append(request_id)
                    set_request_id(request_id)
                async for data in self._read(response.iter_bytes()):
                    yield data
        except openai.APIStatusError as exc:
            raise TTSError(
                f"speech endpoint: {_message(exc)}",
                code=_code(exc),
                status_code=exc.status_code,
                request_id=exc.request_id,
            ) from exc
        except openai.APIConnectionError as exc:
            raise TTSError(f"cannot reach the speech endpoint: {exc}") from exc
        except httpx2.TransportError as exc:
            # The response had started: what arrived was delivered, so it is not requested again.
            raise TTSInterruptedError(f"speech stream broke mid-utterance: {exc!r}") from exc

    async def _read(self, chunks: Any) -> AsyncIterator[bytes]:
        decoder: WavStreamDecoder | None = None
        first = True
        async for data in chunks:
            if first and data:
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
            raise TTSError("speech endpoint answered with an empty body")


class OpenAISpeechSink(Speaker):
    """The ``TTSSink`` on ``/audio/speech``: a ``Speaker`` over an ``OpenAISpeechEngine`` built from the
    same keyword arguments; texts over ``max_input_chars`` become several requests, each holding a
    slot of ``limiter`` when there is one."""

    engine: OpenAISpeechEngine

    def __init__(self, output: AudioOutput, *, limiter: Limiter | None = None, **options: Any) -> None:
        engine = OpenAISpeechEngine(limiter=limiter, **options)
        super().__init__(engine, output, max_chars=engine.max_input_chars, limiter=limiter)


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return exc.message


def _code(exc: openai.APIStatusError) -> str | None:
    code = getattr(exc, "code", None)
    return None if code is None else str(code)
