"""Telnyx media-streaming wire messages: pure parsing and building, no I/O.

Built from Telnyx's documentation of the media-streaming WebSocket
(https://developers.telnyx.com/docs/voice/programmable-voice/media-streaming and its AsyncAPI reference
https://developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket):

- Telnyx -> app: ``connected`` (``version``; with a stream auth token configured, also
  ``connected["x-telnyx-streaming-auth-token"]``), ``start`` (top-level ``stream_id``; ``start`` holds
  ``call_control_id``, ``call_session_id``, ``user_id``, ``from``, ``to``, ``tags``, ``client_state``,
  ``custom_parameters`` and ``media_format`` {``encoding``, ``sample_rate``, ``channels``}), ``media``
  (``media`` {``track``, ``chunk``, ``timestamp``, ``payload``}: a base64 RTP payload without RTP
  headers), ``mark`` (``mark.name``), ``dtmf`` (``dtmf.digit``), ``stop`` and ``error``
  (``payload`` {``code``, ``title``, ``detail``}). Counters (``sequence_number``, ``chunk``,
  ``timestamp``) are decimal strings. Any other event type parses as ``UnknownEvent``.
- app -> Telnyx (bidirectional, ``stream_bidirectional_mode: rtp``): ``media`` (``media.payload``),
  ``mark`` (``mark.name``) and ``clear``; nothing else is documented, so no other builder exists.
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

from .errors import TelnyxProtocolError

# A 20 ms inbound frame is a few hundred bytes; a start with many custom parameters stays far below this.
MAX_FRAME_BYTES = 64 * 1024
MAX_CUSTOM_PARAMETERS = 64
DTMF_DIGITS = frozenset("0123456789*#ABCD")
AUTH_TOKEN_FIELD = "x-telnyx-streaming-auth-token"  # in ``connected``, and the upgrade's header name


@dataclass(frozen=True, slots=True)
class Connected:
    version: str
    auth_token: str | None = None  # connected["x-telnyx-streaming-auth-token"], when configured


@dataclass(frozen=True, slots=True)
class MediaFormat:
    encoding: str  # as sent: "PCMU", "PCMA", "L16", "G722", "OPUS", "AMR-WB"
    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class Start:
    sequence_number: int | None
    stream_id: str
    call_control_id: str
    media_format: MediaFormat
    call_session_id: str = ""
    user_id: str = ""
    from_: str = ""
    to: str = ""
    tags: tuple[str, ...] = ()
    client_state: str = ""  # base64, as given to the Call Control command
    custom_parameters: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Media:
    sequence_number: int | None
    stream_id: str
    track: str  # "inbound" or "outbound" ("_track" suffix, if any, removed)
    chunk: int | None
    timestamp: int | None  # ms since the stream started
    payload: bytes  # the RTP payload, decoded from base64 (L16: big-endian, RTP's network order)


@dataclass(frozen=True, slots=True)
class Mark:
    sequence_number: int | None
    stream_id: str
    name: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    sequence_number: int | None
    stream_id: str
    digit: str


@dataclass(frozen=True, slots=True)
class Stop:
    sequence_number: int | None
    stream_id: str
    call_control_id: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Error:
    """Telnyx reports a problem, usually with a frame we sent (e.g. 100003 malformed frame)."""

    sequence_number: int | None
    stream_id: str
    code: int | None
    title: str
    detail: str


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """An event type this adapter does not know: Telnyx adds events, so it is ignored, never a hang-up."""

    event: str


InboundEvent = Connected | Start | Media | Mark | Dtmf | Stop | Error | UnknownEvent


def parse_inbound(raw: str | bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> InboundEvent:
    """Parse one frame from Telnyx. Raises ``TelnyxProtocolError`` (and nothing else) on bad input."""
    doc, event = load_event(raw, max_bytes=max_bytes, error=TelnyxProtocolError)
    parser = _PARSERS.get(event)
    if parser is None:
        return UnknownEvent(event[:64])
    return parser(doc)


def build_media(payload: bytes) -> str:
    """A media frame carrying one RTP payload in the stream's bidirectional codec (no RTP header)."""
    return json.dumps({"event": "media", "media": {"payload": base64.b64encode(payload).decode("ascii")}})


def build_mark(name: str) -> str:
    """A mark: Telnyx sends it back once the media before it has played (at once when nothing is
    queued), and sends queued marks back on a clear."""
    if not isinstance(name, str) or not name:
        raise ValueError("mark name must be a non-empty string")
    return json.dumps({"event": "mark", "mark": {"name": name}})


def build_clear() -> str:
    """Stop the current playback and drop queued media; Telnyx sends the queued marks back."""
    return json.dumps({"event": "clear"})


# ---- field helpers ------------------------------------------------------------------------------


def _obj(doc: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise TelnyxProtocolError(f"{where}: missing or non-object '{key}'")
    return value


def _str(doc: Mapping[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise TelnyxProtocolError(f"{where}: missing or non-string '{key}'")
    return value


def _opt_str(doc: Mapping[str, Any], key: str, where: str) -> str:
    value = doc.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TelnyxProtocolError(f"{where}: non-string '{key}'")
    return value


def _number(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdecimal() and len(value) <= 18:
        return int(value)
    return None


def _int(doc: Mapping[str, Any], key: str, where: str) -> int:
    """Telnyx documents numbers as JSON integers in media_format and decimal strings elsewhere."""
    number = _number(doc.get(key))
    if number is None:
        raise TelnyxProtocolError(f"{where}: missing or non-numeric '{key}'")
    if number < 0:
        raise TelnyxProtocolError(f"{where}: negative '{key}'")
    return number


def _opt_int(doc: Mapping[str, Any], key: str, where: str) -> int | None:
    if doc.get(key) is None:
        return None
    return _int(doc, key, where)


def _parse_connected(doc: Mapping[str, Any]) -> Connected:
    connected = doc.get("connected")
    token: str | None = None
    if connected is not None:
        if not isinstance(connected, dict):
            raise TelnyxProtocolError("connected: non-object 'connected'")
        value = connected.get(AUTH_TOKEN_FIELD)
        if value is not None and not isinstance(value, str):
            raise TelnyxProtocolError(f"connected: non-string '{AUTH_TOKEN_FIELD}'")
        token = value
    return Connected(version=_opt_str(doc, "version", "connected"), auth_token=token)


def _custom_parameters(start: Mapping[str, Any]) -> Mapping[str, str]:
    params = start.get("custom_parameters")
    if params is None:
        return MappingProxyType({})
    if not isinstance(params, dict) or len(params) > MAX_CUSTOM_PARAMETERS:
        raise TelnyxProtocolError(
            f"start: 'custom_parameters' must be an object of at most {MAX_CUSTOM_PARAMETERS} entries"
        )
    result: dict[str, str] = {}
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise TelnyxProtocolError(f"start: custom parameter {name[:40]!r} is not a string")
        result[name] = value if isinstance(value, str) else json.dumps(value)
    return MappingProxyType(result)


def _parse_start(doc: Mapping[str, Any]) -> Start:
    start = _obj(doc, "start", "start")
    fmt = _obj(start, "media_format", "start")
    tags = start.get("tags", [])
    if tags is None:
        tags = []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise TelnyxProtocolError("start: 'tags' must be a list of strings")
    stream_id = doc.get("stream_id", start.get("stream_id"))
    if not isinstance(stream_id, str) or not stream_id:
        raise TelnyxProtocolError("start: missing or empty 'stream_id'")
    call_control_id = _str(start, "call_control_id", "start")
    if not call_control_id:
        raise TelnyxProtocolError("start: empty 'call_control_id'")
    return Start(
        sequence_number=_opt_int(doc, "sequence_number", "start"),
        stream_id=stream_id,
        call_control_id=call_control_id,
        media_format=MediaFormat(
            encoding=_str(fmt, "encoding", "start.media_format"),
            sample_rate=_int(fmt, "sample_rate", "start.media_format"),
            channels=_int(fmt, "channels", "start.media_format") if "channels" in fmt else 1,
        ),
        call_session_id=_opt_str(start, "call_session_id", "start"),
        user_id=_opt_str(start, "user_id", "start"),
        from_=_opt_str(start, "from", "start"),
        to=_opt_str(start, "to", "start"),
        tags=tuple(tags),
        client_state=_opt_str(start, "client_state", "start"),
        custom_parameters=_custom_parameters(start),
    )


def _parse_media(doc: Mapping[str, Any]) -> Media:
    media = _obj(doc, "media", "media")
    encoded = _str(media, "payload", "media")
    try:
        payload = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise TelnyxProtocolError("media: payload is not valid base64") from None
    track = _opt_str(media, "track", "media") or "inbound"
    return Media(
        sequence_number=_opt_int(doc, "sequence_number", "media"),
        stream_id=_opt_str(doc, "stream_id", "media"),
        track=track.removesuffix("_track")[:32],
        chunk=_opt_int(media, "chunk", "media"),
        timestamp=_opt_int(media, "timestamp", "media"),
        payload=payload,
    )


def _parse_mark(doc: Mapping[str, Any]) -> Mark:
    return Mark(
        sequence_number=_opt_int(doc, "sequence_number", "mark"),
        stream_id=_opt_str(doc, "stream_id", "mark"),
        name=_str(_obj(doc, "mark", "mark"), "name", "mark"),
    )


def _parse_dtmf(doc: Mapping[str, Any]) -> Dtmf:
    digit = _str(_obj(doc, "dtmf", "dtmf"), "digit", "dtmf").upper()
    if digit not in DTMF_DIGITS:
        raise TelnyxProtocolError(f"dtmf: {digit[:10]!r} is not a DTMF digit")
    return Dtmf(
        sequence_number=_opt_int(doc, "sequence_number", "dtmf"),
        stream_id=_opt_str(doc, "stream_id", "dtmf"),
        digit=digit,
    )


def _parse_stop(doc: Mapping[str, Any]) -> Stop:
    stop = doc.get("stop")
    stop = {} if stop is None else stop
    if not isinstance(stop, dict):
        raise TelnyxProtocolError("stop: non-object 'stop'")
    return Stop(
        sequence_number=_opt_int(doc, "sequence_number", "stop"),
        stream_id=_opt_str(doc, "stream_id", "stop"),
        call_control_id=_opt_str(stop, "call_control_id", "stop"),
        reason=_opt_str(stop, "reason", "stop")[:120],
    )


def _parse_error(doc: Mapping[str, Any]) -> Error:
    payload = doc.get("payload")
    payload = {} if payload is None else payload
    if not isinstance(payload, dict):
        raise TelnyxProtocolError("error: non-object 'payload'")
    code = payload.get("code")
    return Error(
        sequence_number=_opt_int(doc, "sequence_number", "error"),
        stream_id=_opt_str(doc, "stream_id", "error"),
        code=_number(code),
        title=_opt_str(payload, "title", "error")[:120],
        detail=_opt_str(payload, "detail", "error")[:240],
    )


_PARSERS: dict[str, Callable[[Mapping[str, Any]], InboundEvent]] = {
    "connected": _parse_connected,
    "start": _parse_start,
    "media": _parse_media,
    "mark": _parse_mark,
    "dtmf": _parse_dtmf,
    "stop": _parse_stop,
    "error": _parse_error,
}
