"""A real fake OpenAI-compatible ``POST /v1/audio/speech`` endpoint on 127.0.0.1.

It streams a deterministic tone (``seconds_per_char`` of audio per character) as raw PCM16 mono at
24 kHz (``response_format="pcm"``, what OpenAI sends) or as a WAV, with chunked transfer encoding, and
answers errors in OpenAI's ``{"error": {"message", "type", "code"}}`` shape. Misbehaviour on command:
``reject_status`` (e.g. 429), ``first_byte_gate`` (slow first byte), ``drop_next(after_chunks)``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio

from voiceagent.audio import SAMPLE_WIDTH, wav_bytes
from voiceagent.testing.loopback_http import HTTPRequest, LoopbackHTTPServer, Responder
from voiceagent.testing.tone import tone

__all__ = ["FakeSpeechServer", "SpeechRequest"]

SAMPLE_RATE = 24000
MAX_INPUT = 4096
FORMATS = ("pcm", "wav")


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    headers: dict[str, str]
    body: dict[str, Any]
    pcm16: bytes


def _error(status: int, message: str, type_: str, code: str | None = None) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": type_, "param": None, "code": code}}


class FakeSpeechServer:
    def __init__(
        self, *, api_key: str = "test-key", seconds_per_char: float = 0.06, chunk_seconds: float = 0.2
    ) -> None:
        self.api_key = api_key
        self.seconds_per_char = seconds_per_char
        self.chunk_seconds = chunk_seconds
        self.reject_status: int | None = None
        self.first_byte_gate: anyio.Event | None = None
        self._drop_next: deque[int] = deque()
        self.requests: list[SpeechRequest] = []
        self.attempts = 0
        self.started = 0
        self._changed = anyio.Event()
        self._http = LoopbackHTTPServer(self._handle)

    async def __aenter__(self) -> FakeSpeechServer:
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.__aexit__(exc_type, exc, tb)

    @property
    def base_url(self) -> str:
        return f"{self._http.url}/v1"

    def drop_next(self, after_chunks: int) -> None:
        self._drop_next.append(after_chunks)

    def seconds_for(self, text: str) -> float:
        return self.seconds_per_char * len(text)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _check(self, request: HTTPRequest) -> dict[str, Any] | tuple[int, dict[str, Any]]:
        if self.reject_status is not None:
            return _error(
                self.reject_status, "Rate limit reached for requests", "requests", "rate_limit_exceeded"
            )
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")
        if request.method != "POST" or request.path != "/v1/audio/speech":
            return _error(404, f"Unknown route {request.method} {request.path}", "invalid_request_error")
        try:
            body = request.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        if not isinstance(body, dict):
            return _error(400, "Request body must be an object", "invalid_request_error")
        for name in ("model", "input", "voice"):
            if not body.get(name):
                return _error(400, f"Missing required parameter: '{name}'.", "invalid_request_error")
        if len(body["input"]) > MAX_INPUT:
            return _error(400, f"'input' is longer than {MAX_INPUT} characters", "invalid_request_error")
        if body.get("response_format", "mp3") not in FORMATS:
            return _error(400, "this fake only speaks pcm and wav", "invalid_request_error")
        return body

    async def _handle(self, request: HTTPRequest, responder: Responder) -> None:
        self.attempts += 1
        checked = self._check(request)
        if isinstance(checked, tuple):
            status, payload = checked
            self._notify()
            await responder.send_json(status, payload, {"x-request-id": f"req_err_{self.attempts}"})
            return
        body = checked
        drop_after = self._drop_next.popleft() if self._drop_next else None
        pcm = tone(self.seconds_for(body["input"]), SAMPLE_RATE)
        self.requests.append(SpeechRequest(dict(request.headers), body, pcm))
        self.started += 1
        self._notify()
        if self.first_byte_gate is not None:
            await self.first_byte_gate.wait()
        wav = body.get("response_format") == "wav"
        data = wav_bytes(pcm, SAMPLE_RATE) if wav else pcm
        await responder.start(
            200,
            {
                "Content-Type": "audio/wav" if wav else "audio/pcm",
                "x-request-id": f"req_{len(self.requests)}",
            },
        )
        size = max(int(self.chunk_seconds * SAMPLE_RATE), 1) * SAMPLE_WIDTH
        for index, start in enumerate(range(0, len(data), size)):
            if drop_after is not None and index >= drop_after:
                await responder.abort()
                return
            await responder.write(data[start : start + size])
