"""Pulse server messages (Smallest AI's Pulse streaming STT docs): pure parsing, no I/O."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .errors import PulseProtocolError


@dataclass(frozen=True, slots=True)
class PulseTranscript:
    text: str
    is_final: bool
    is_last: bool
    from_finalize: bool = False
    language: str | None = None  # only on finals
    session_id: str | None = None
    speech_final: bool = False  # the speaker paused (undocumented for Pulse; LiveKit reads it)


@dataclass(frozen=True, slots=True)
class PulseSpeechEvent:
    started: bool  # True for speech_started, False for speech_ended
    timestamp: float


@dataclass(frozen=True, slots=True)
class PulseErrorMessage:
    message: str


@dataclass(frozen=True, slots=True)
class PulseOtherMessage:
    """Anything else the server may add later; logged and skipped, never fatal."""

    type: str


PulseMessage = PulseTranscript | PulseSpeechEvent | PulseErrorMessage | PulseOtherMessage


def parse_server_message(raw: str | bytes) -> PulseMessage:
    """Raises ``PulseProtocolError`` (and nothing else) on a message that is not a JSON object."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise PulseProtocolError(f"server message is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PulseProtocolError(f"server message is a JSON {type(doc).__name__}, not an object")
    kind = doc.get("type")
    # Two error shapes: the public API's {"type":"error","status":"error","message"} and a self-hosted
    # server's bare {"error": "..."} with no "type" (LiveKit's client handles both). A message that
    # carries a transcript is a transcript whatever else it holds.
    bare_error = bool(doc.get("error")) and kind is None and not {"transcript", "transcription"} & doc.keys()
    if kind == "error" or doc.get("status") == "error" or bare_error:
        return PulseErrorMessage(_error_text(doc))
    if kind in ("speech_started", "speech_ended"):
        return PulseSpeechEvent(started=kind == "speech_started", timestamp=_number(doc.get("timestamp")))
    # The legacy shape has no "type"/"status": key on is_final/transcript.
    if kind == "transcription" or "is_final" in doc or "transcript" in doc:
        text = doc.get("transcript", doc.get("transcription", ""))
        if not isinstance(text, str):
            raise PulseProtocolError("transcript is not a string")
        language = doc.get("language")
        session_id = doc.get("session_id")
        return PulseTranscript(
            text=text,
            is_final=doc.get("is_final") is True,
            is_last=doc.get("is_last") is True,
            from_finalize=doc.get("from_finalize") is True,
            speech_final=doc.get("speech_final") is True,
            language=language if isinstance(language, str) else None,
            session_id=session_id if isinstance(session_id, str) else None,
        )
    return PulseOtherMessage(str(kind))


def has_words(text: str) -> bool:
    """False for a transcript of punctuation alone ("." or "।" in a chunk of its own): no words said."""
    return any(ch.isalnum() for ch in text)


def _error_text(doc: dict[str, Any]) -> str:
    message = doc.get("message") or doc.get("error") or "unknown error"
    if isinstance(message, dict):  # {"error": {"message": ...}}
        message = message.get("message") or json.dumps(message)
    return str(message)


def _number(value: Any) -> float:
    """A timestamp as seconds; anything that is not a finite number (a 400-digit integer, NaN) counts as 0."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            return 0.0
        return number if math.isfinite(number) else 0.0
    return 0.0
