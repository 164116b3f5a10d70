"""Twilio Media Streams wire messages: pure parsing and building, no I/O.

Inbound: connected, start, media, mark, stop, dtmf; any other event type parses as ``UnknownEvent``.
Outbound (bidirectional streams): media, mark and clear only; Twilio answers anything else with
error 31924, so no other builder exists.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from voiceagent.telephony.frames import load_event

from .errors import TwilioProtocolError

# Real frames are a few hundred bytes (a 20 ms media frame is ~300); start with many custom parameters
# stays far below this.
MAX_FRAME_BYTES = 64 * 1024
DTMF_DIGITS = frozenset("0123456789*#ABCD")


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class MediaFormat:
    encoding: str
    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class Start:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    media_format: MediaFormat
    custom_parameters: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Media:
    sequence_number: int
    stream_sid: str
    track: str
    chunk: int
    timestamp: int  # ms since the stream started
    payload: bytes  # raw mu-law 8 kHz, decoded from base64


@dataclass(frozen=True, slots=True)
class Mark:
    sequence_number: int
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    sequence_number: int
    stream_sid: str
    track: str
    digit: str


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """An event type this adapter does not know: Twilio adds events, so it is ignored, never a hang-up."""

    event: str


InboundEvent = Connected | Start | Media | Mark | Stop | Dtmf | UnknownEvent


def parse_inbound(raw: str | bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> InboundEvent:
    """Parse one inbound frame. Raises ``TwilioProtocolError`` (and nothing else) on bad input."""
    doc, event = load_event(raw, max_bytes=max_bytes, error=TwilioProtocolError)
    parser = _PARSERS.get(event)
    if parser is None:
        return UnknownEvent(event[:64])
    return parser(doc)


def build_media(stream_sid: str, mulaw: bytes) -> str:
    """A media frame carrying raw mu-law 8 kHz audio (no file header)."""
    payload = base64.b64encode(mulaw).decode("ascii")
    return json.dumps({"event": "media", "streamSid": _sid(stream_sid), "media": {"payload": payload}})


def build_mark(stream_sid: str, name: str) -> str:
    """A mark: Twilio echoes it back once all audio sent before it has played (or was cleared)."""
    if not isinstance(name, str) or not name:
        raise ValueError("mark name must be a non-empty string")
    return json.dumps({"event": "mark", "streamSid": _sid(stream_sid), "mark": {"name": name}})


def build_clear(stream_sid: str) -> str:
    """Empty Twilio's playback buffer; pending marks are then echoed back."""
    return json.dumps({"event": "clear", "streamSid": _sid(stream_sid)})


# ---- field helpers ------------------------------------------------------------------------------


def _sid(stream_sid: str) -> str:
    if not isinstance(stream_sid, str) or not stream_sid:
        raise ValueError("streamSid must be a non-empty string")
    return stream_sid


def _obj(doc: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise TwilioProtocolError(f"{where}: missing or non-object '{key}'")
    return value


def _str(doc: Mapping[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise TwilioProtocolError(f"{where}: missing or non-string '{key}'")
    return value


def _int(doc: Mapping[str, Any], key: str, where: str) -> int:
    """Twilio sends counters as decimal strings ("4"); tolerate JSON integers too."""
    value = doc.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdecimal() and len(value) <= 18:
        number = int(value)
    else:
        raise TwilioProtocolError(f"{where}: missing or non-numeric '{key}'")
    if number < 0:
        raise TwilioProtocolError(f"{where}: negative '{key}'")
    return number


def _parse_connected(doc: Mapping[str, Any]) -> Connected:
    return Connected(protocol=_str(doc, "protocol", "connected"), version=_str(doc, "version", "connected"))


def _parse_start(doc: Mapping[str, Any]) -> Start:
    start = _obj(doc, "start", "start")
    tracks = start.get("tracks")
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise TwilioProtocolError("start: 'tracks' must be a list of strings")
    fmt = _obj(start, "mediaFormat", "start")
    params = start.get("customParameters", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise TwilioProtocolError("start: 'customParameters' must map names to strings")
    stream_sid = _str(start, "streamSid", "start")
    if doc.get("streamSid", stream_sid) != stream_sid:
        raise TwilioProtocolError("start: top-level streamSid differs from start.streamSid")
    return Start(
        sequence_number=_int(doc, "sequenceNumber", "start"),
        stream_sid=stream_sid,
        account_sid=_str(start, "accountSid", "start"),
        call_sid=_str(start, "callSid", "start"),
        tracks=tuple(tracks),
        media_format=MediaFormat(
            encoding=_str(fmt, "encoding", "start.mediaFormat"),
            sample_rate=_int(fmt, "sampleRate", "start.mediaFormat"),
            channels=_int(fmt, "channels", "start.mediaFormat"),
        ),
        custom_parameters=MappingProxyType(dict(params)),
    )


def _parse_media(doc: Mapping[str, Any]) -> Media:
    media = _obj(doc, "media", "media")
    encoded = _str(media, "payload", "media")
    try:
        payload = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise TwilioProtocolError("media: payload is not valid base64") from None
    return Media(
        sequence_number=_int(doc, "sequenceNumber", "media"),
        stream_sid=_str(doc, "streamSid", "media"),
        track=_str(media, "track", "media"),
        chunk=_int(media, "chunk", "media"),
        timestamp=_int(media, "timestamp", "media"),
        payload=payload,
    )


def _parse_mark(doc: Mapping[str, Any]) -> Mark:
    return Mark(
        sequence_number=_int(doc, "sequenceNumber", "mark"),
        stream_sid=_str(doc, "streamSid", "mark"),
        name=_str(_obj(doc, "mark", "mark"), "name", "mark"),
    )


def _parse_stop(doc: Mapping[str, Any]) -> Stop:
    stop = _obj(doc, "stop", "stop")
    return Stop(
        sequence_number=_int(doc, "sequenceNumber", "stop"),
        stream_sid=_str(doc, "streamSid", "stop"),
        account_sid=_str(stop, "accountSid", "stop"),
        call_sid=_str(stop, "callSid", "stop"),
    )


def _parse_dtmf(doc: Mapping[str, Any]) -> Dtmf:
    dtmf = _obj(doc, "dtmf", "dtmf")
    digit = _str(dtmf, "digit", "dtmf")
    if digit not in DTMF_DIGITS:
        raise TwilioProtocolError(f"dtmf: {digit[:10]!r} is not a DTMF digit")
    return Dtmf(
        sequence_number=_int(doc, "sequenceNumber", "dtmf"),
        stream_sid=_str(doc, "streamSid", "dtmf"),
        track=_str(dtmf, "track", "dtmf"),
        digit=digit,
    )


_PARSERS: dict[str, Callable[[Mapping[str, Any]], InboundEvent]] = {
    "connected": _parse_connected,
    "start": _parse_start,
    "media": _parse_media,
    "mark": _parse_mark,
    "stop": _parse_stop,
    "dtmf": _parse_dtmf,
}
