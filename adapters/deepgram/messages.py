"""Deepgram live-listen (``/v1/listen``) messages: pure parsing, no I/O.

Server messages (the ``deepgram-sdk`` ``ListenV1*`` models): ``Results`` (interim or ``is_final``,
``speech_final`` on an endpoint, ``from_finalize`` when it answers ``Finalize``), ``SpeechStarted``
(``vad_events=true``), ``UtteranceEnd`` (``utterance_end_ms``), ``Metadata`` (the last message after
``CloseStream``) and ``Error``. Client control messages are the three JSON frames below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import DeepgramProtocolError

KEEP_ALIVE = {"type": "KeepAlive"}
FINALIZE = {"type": "Finalize"}
CLOSE_STREAM = {"type": "CloseStream"}


@dataclass(frozen=True, slots=True)
class DeepgramResults:
    text: str
    is_final: bool
    speech_final: bool
    from_finalize: bool
    start: float
    duration: float


@dataclass(frozen=True, slots=True)
class DeepgramSpeechStarted:
    timestamp: float


@dataclass(frozen=True, slots=True)
class DeepgramUtteranceEnd:
    last_word_end: float


@dataclass(frozen=True, slots=True)
class DeepgramMetadata:
    request_id: str
    duration: float


@dataclass(frozen=True, slots=True)
class DeepgramErrorMessage:
    description: str
    variant: str = ""


@dataclass(frozen=True, slots=True)
class DeepgramOtherMessage:
    """A type this adapter does not know yet; logged and skipped, never fatal."""

    type: str


DeepgramMessage = (
    DeepgramResults
    | DeepgramSpeechStarted
    | DeepgramUtteranceEnd
    | DeepgramMetadata
    | DeepgramErrorMessage
    | DeepgramOtherMessage
)


def parse_server_message(raw: str | bytes) -> DeepgramMessage:
    """Raises ``DeepgramProtocolError`` (and nothing else) on a message it cannot read."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise DeepgramProtocolError(f"server message is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DeepgramProtocolError(f"server message is a JSON {type(doc).__name__}, not an object")
    kind = doc.get("type")
    if kind == "Results":
        return DeepgramResults(
            text=_transcript(doc),
            is_final=doc.get("is_final") is True,
            speech_final=doc.get("speech_final") is True,
            from_finalize=doc.get("from_finalize") is True,
            start=_number(doc.get("start")),
            duration=_number(doc.get("duration")),
        )
    if kind == "SpeechStarted":
        return DeepgramSpeechStarted(_number(doc.get("timestamp")))
    if kind == "UtteranceEnd":
        return DeepgramUtteranceEnd(_number(doc.get("last_word_end")))
    if kind == "Metadata":
        return DeepgramMetadata(str(doc.get("request_id", "")), _number(doc.get("duration")))
    if kind == "Error":
        text = doc.get("description") or doc.get("message") or "unknown error"
        return DeepgramErrorMessage(str(text), str(doc.get("variant", "")))
    if not isinstance(kind, str):
        raise DeepgramProtocolError(f"server message has no type: {str(doc)[:120]}")
    return DeepgramOtherMessage(kind)


def _transcript(doc: dict[str, Any]) -> str:
    channel = doc.get("channel")
    alternatives = channel.get("alternatives") if isinstance(channel, dict) else None
    if not isinstance(alternatives, list):
        raise DeepgramProtocolError("Results without channel.alternatives")
    if not alternatives:
        return ""
    first = alternatives[0]
    text = first.get("transcript", "") if isinstance(first, dict) else None
    if not isinstance(text, str):
        raise DeepgramProtocolError("Results whose transcript is not a string")
    return text


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)
