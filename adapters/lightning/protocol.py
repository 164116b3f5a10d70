"""Lightning TTS wire format: request bodies, frame parsing, text splitting. Pure code."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from voiceagent.errors import TTSError
from voiceagent.text_split import split_text as _split_text

__all__ = [
    "DEFAULT_HTTP_BASE",
    "DEFAULT_VOICES",
    "DEFAULT_WS_URL",
    "MAX_CHARS",
    "MODELS",
    "SAMPLE_RATES",
    "AudioFrame",
    "CompleteFrame",
    "ErrorFrame",
    "Frame",
    "OtherFrame",
    "WordTimestamp",
    "error_frame",
    "error_from_body",
    "parse_frame",
    "split_text",
]

DEFAULT_WS_URL = "wss://api.smallest.ai/waves/v1/tts/live"
DEFAULT_HTTP_BASE = "https://api.smallest.ai/waves/v1"
MODELS = ("lightning_v3.1", "lightning_v3.1_pro")
# A documented voice per model, so the defaults work on day one: `magnus` is in the lightning_v3.1 model
# card's top voices (and the SDK's examples), `meher` in the Pro card's catalog (the default of the
# LiveKit and Pipecat plugins). The voice catalogs of the two models differ; a voice of the other pool
# "can return wrong or hallucinated audio" (SDK 5.14.0).
DEFAULT_VOICES = {"lightning_v3.1": "magnus", "lightning_v3.1_pro": "meher"}
SAMPLE_RATES = (8000, 16000, 24000, 44100)
# Hard limit per request; the docs call ~140 characters optimal.
MAX_CHARS = 250


@dataclass(frozen=True, slots=True)
class AudioFrame:
    pcm16: bytes
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class WordTimestamp:
    word: str
    start: float
    end: float
    id: Any = None


@dataclass(frozen=True, slots=True)
class CompleteFrame:
    pass


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    message: str
    code: str | None = None

    @property
    def is_idle_timeout(self) -> bool:
        return "timed out" in self.message.lower() and "inactivity" in self.message.lower()

    def to_error(self, request_id: str | None = None) -> TTSError:
        return TTSError(f"Lightning: {self.message}", code=self.code, request_id=request_id)


@dataclass(frozen=True, slots=True)
class OtherFrame:
    """A frame this client does not use (an unknown ``status``), kept for logging."""

    raw: dict[str, Any]


Frame = AudioFrame | WordTimestamp | CompleteFrame | ErrorFrame | OtherFrame


def error_frame(payload: dict[str, Any]) -> ErrorFrame:
    # Two shapes: the spec's {"status":"error","error":{"message","code"}} and the idle-timeout
    # frame's flat {"status":"error","message":"..."}.
    nested = payload.get("error")
    if isinstance(nested, dict):
        code = nested.get("code")
        return ErrorFrame(str(nested.get("message") or "unknown error"), None if code is None else str(code))
    code = payload.get("code", payload.get("error_code"))
    message = payload.get("message") or (nested if isinstance(nested, str) else None) or "unknown error"
    return ErrorFrame(str(message), None if code is None else str(code))


def parse_frame(message: str | bytes) -> Frame:
    """Parse one WebSocket message; raises TTSError if it is not a Lightning frame."""
    try:
        payload = json.loads(message)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TTSError(f"Lightning sent a frame that is not JSON: {message[:80]!r}") from exc
    if not isinstance(payload, dict):
        raise TTSError(f"Lightning sent a frame that is not a JSON object: {message[:80]!r}")
    status = payload.get("status")
    data = payload.get("data")
    if status == "chunk":
        audio = data.get("audio") if isinstance(data, dict) else None
        if not isinstance(audio, str):
            raise TTSError("Lightning chunk frame without data.audio")
        return AudioFrame(_b64(audio), payload.get("request_id"))
    if status == "word_timestamp" and isinstance(data, dict):
        return WordTimestamp(
            str(data.get("word", "")), float(data.get("start", 0)), float(data.get("end", 0)), data.get("id")
        )
    if status == "complete":
        return CompleteFrame()
    if status == "error":
        return error_frame(payload)
    return OtherFrame(payload)


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TTSError("Lightning sent audio that is not valid base64") from exc


def error_from_body(status_code: int, body: bytes | bytearray, request_id: str | None = None) -> TTSError:
    """A TTSError from a non-2xx HTTP answer (JSON error of either shape, or text)."""
    message, code = body.decode("utf-8", "replace").strip()[:500] or "no body", None
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = None
    if isinstance(payload, dict):
        frame = error_frame(payload)
        if frame.message != "unknown error":
            message = frame.message
        code = frame.code
    return TTSError(f"Lightning: {message}", code=code, status_code=status_code, request_id=request_id)


def split_text(text: str, limit: int = MAX_CHARS) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` (default 250) characters; see
    ``voiceagent.text_split.split_text``."""
    return _split_text(text, limit)
