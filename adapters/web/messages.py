"""The JSON control channel between the page and the server (binary frames carry PCM16 audio).

Browser -> server: ``hello`` (first message), ``mark`` (a mark's audio has played), ``state``
(playback started, drained, or cleared). Server -> browser: ``ready``, ``mark``, ``clear``,
``transcript``, ``agent_text``; built by the ``*_message`` helpers below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from voiceagent.errors import VoiceAgentError

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000
MAX_NAME_CHARS = 256
PLAYBACK_EVENTS = frozenset({"started", "drained", "cleared"})


class ProtocolViolationError(VoiceAgentError):
    """The browser sent something the protocol does not allow; the session is closed with this reason."""


@dataclass(frozen=True, slots=True)
class Hello:
    sample_rate: int


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    name: str


@dataclass(frozen=True, slots=True)
class PlaybackState:
    """What the page reports about its playback queue.

    ``event`` is ``started`` (audio began playing), ``drained`` (queue ran empty) or ``cleared``
    (a ``clear`` dropped the queue); ``dropped_marks`` are the marks whose audio a clear discarded:
    they will never be reported played.
    """

    event: str
    playing: bool
    queued_ms: float
    dropped_marks: tuple[str, ...] = ()


BrowserMessage = Hello | MarkPlayed | PlaybackState


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise ProtocolViolationError(f"{what} must be a non-empty string of at most {MAX_NAME_CHARS} chars")
    return value


def parse_browser_message(text: str) -> BrowserMessage:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays or objects
        raise ProtocolViolationError("text frame is not JSON") from None
    if not isinstance(data, dict):
        raise ProtocolViolationError("control message is not a JSON object")
    kind = data.get("type")
    if kind == "hello":
        rate = data.get("sample_rate")
        if type(rate) is not int or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise ProtocolViolationError(
                f"hello.sample_rate must be an integer from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE}"
            )
        return Hello(rate)
    if kind == "mark":
        return MarkPlayed(_name(data.get("name"), "mark.name"))
    if kind == "state":
        event, playing, queued = data.get("event"), data.get("playing"), data.get("queued_ms")
        if event not in PLAYBACK_EVENTS:
            raise ProtocolViolationError(f"state.event must be one of {sorted(PLAYBACK_EVENTS)}")
        if not isinstance(playing, bool):
            raise ProtocolViolationError("state.playing must be a boolean")
        if isinstance(queued, bool) or not isinstance(queued, int | float) or not 0 <= queued < 1e9:
            raise ProtocolViolationError("state.queued_ms must be a non-negative number")
        dropped = data.get("dropped_marks", [])
        if not isinstance(dropped, list):
            raise ProtocolViolationError("state.dropped_marks must be a list")
        names = tuple(_name(n, "state.dropped_marks[]") for n in dropped)
        return PlaybackState(event, playing, float(queued), names)
    if isinstance(kind, str):
        raise ProtocolViolationError(f"unknown message type {kind[:40]!r}")
    raise ProtocolViolationError("control message has no string 'type'")


def _dump(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def ready_message(session_id: str, sample_rate: int) -> str:
    return _dump({"type": "ready", "session": session_id, "sample_rate": sample_rate})


def mark_message(name: str) -> str:
    return _dump({"type": "mark", "name": name})


def clear_message() -> str:
    return _dump({"type": "clear"})


def transcript_message(text: str, is_final: bool) -> str:
    return _dump({"type": "transcript", "text": text, "is_final": is_final})


def agent_text_message(text: str, final: bool) -> str:
    return _dump({"type": "agent_text", "text": text, "final": final})
