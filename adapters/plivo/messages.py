"""Plivo audio-stream wire messages: pure parsing and building, no I/O.

Built from Plivo's Stream Event Protocol
(https://www.plivo.com/docs/voice/audio-streaming/audio-streaming) and the ``<Stream>`` element
(https://www.plivo.com/docs/voice/xml/audiostream), cross-checked with Plivo's own stream SDKs
(github.com/plivo/plivo-stream-sdk-python, -node, -java) and Pipecat's ``PlivoFrameSerializer``.

From Plivo: ``start``, ``media``, ``dtmf``, ``playedStream`` (a checkpoint was reached),
``clearedAudio`` (a ``clearAudio`` was done) and ``stop`` (not in the current reference, but modelled by
Plivo's Java SDK: handled when it comes; a closed socket ends the stream either way). Any other event
parses as ``UnknownEvent``.

To Plivo (bidirectional streams): ``playAudio``, ``checkpoint``, ``clearAudio`` and ``sendDTMF``.
``parse_outbound`` reads those back for the fake Plivo call and for tests.
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

from .errors import PlivoProtocolError

# A 20 ms media frame is ~250 bytes (mu-law) or ~900 (L16 16 kHz); a start with the documented 512 bytes
# of extra headers stays far below this.
MAX_FRAME_BYTES = 64 * 1024
DTMF_DIGITS = frozenset("0123456789*#ABCD")
MAX_DTMF_DIGITS = 64  # per sendDTMF message; Plivo documents no limit, this bounds what we send
MAX_NAME_CHARS = 256  # checkpoint names: ours are short; a longer one from the wire is an error

MULAW = "audio/x-mulaw"
L16 = "audio/x-l16"
# The <Stream contentType> values Plivo documents, as (content type, sample rate).
CONTENT_TYPES = frozenset({(MULAW, 8000), (L16, 8000), (L16, 16000)})


@dataclass(frozen=True, slots=True)
class MediaFormat:
    encoding: str  # "audio/x-mulaw" or "audio/x-l16" (any ";rate=" suffix split off into sample_rate)
    sample_rate: int


@dataclass(frozen=True, slots=True)
class Start:
    sequence_number: int
    stream_id: str
    call_id: str
    account_id: str
    tracks: tuple[str, ...]
    media_format: MediaFormat
    extra_headers: str = ""  # as sent (the <Stream extraHeaders>); parsed into ``headers``
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Media:
    sequence_number: int
    stream_id: str
    track: str
    chunk: int
    timestamp: int  # ms since the stream started (Plivo sends it as a decimal string)
    payload: bytes  # raw audio in the start's media format, decoded from base64


@dataclass(frozen=True, slots=True)
class Dtmf:
    sequence_number: int
    stream_id: str
    track: str
    digit: str


@dataclass(frozen=True, slots=True)
class PlayedStream:
    """The audio queued before checkpoint ``name`` has played. Plivo sends it only when that audio
    played out: checkpoints dropped by a ``clearAudio`` are never answered."""

    sequence_number: int
    stream_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ClearedAudio:
    sequence_number: int
    stream_id: str


@dataclass(frozen=True, slots=True)
class Stop:
    sequence_number: int
    stream_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """An event type this adapter does not know: Plivo adds events, so it is ignored, never a hang-up."""

    event: str


InboundEvent = Start | Media | Dtmf | PlayedStream | ClearedAudio | Stop | UnknownEvent


@dataclass(frozen=True, slots=True)
class PlayAudio:
    content_type: str
    sample_rate: int
    payload: bytes
    stream_id: str = ""  # Plivo's docs send none; Pipecat adds it


@dataclass(frozen=True, slots=True)
class Checkpoint:
    stream_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ClearAudio:
    stream_id: str


@dataclass(frozen=True, slots=True)
class SendDtmf:
    digits: str


OutboundEvent = PlayAudio | Checkpoint | ClearAudio | SendDtmf | UnknownEvent


# ---- inbound ------------------------------------------------------------------------------------


def parse_inbound(raw: str | bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> InboundEvent:
    """Parse one frame from Plivo. Raises ``PlivoProtocolError`` (and nothing else) on bad input."""
    doc, event = load_event(raw, max_bytes=max_bytes, error=PlivoProtocolError)
    parser = _INBOUND.get(event)
    if parser is None:
        return UnknownEvent(event[:64])
    return parser(doc)


def parse_extra_headers(raw: str) -> dict[str, str]:
    """The ``extra_headers`` string of a start, as a mapping.

    Plivo's docs show ``key=value`` pairs joined by ``;`` in the start message (and by ``,`` in the
    ``extraHeaders`` attribute); its Python SDK calls the field a JSON string. All three are read; a
    piece that is none of them is skipped (the value stays available verbatim on ``Start``).
    """
    text = raw.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            doc = None
        if isinstance(doc, dict):
            return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in doc.items()}
    pairs: dict[str, str] = {}
    for piece in text.replace(",", ";").split(";"):
        name, sep, value = piece.partition("=")
        if sep and name.strip():
            pairs[name.strip()] = value.strip()
    return pairs


def split_content_type(value: str, *, where: str) -> tuple[str, int | None]:
    """``"audio/x-l16;rate=16000"`` -> ``("audio/x-l16", 16000)``; no rate -> ``None``."""
    kind, *params = (part.strip() for part in value.split(";"))
    rate: int | None = None
    for param in params:
        key, _, number = param.partition("=")
        if key.strip().lower() == "rate":
            rate = _decimal(number.strip(), f"{where}: rate")
    return kind.lower(), rate


# ---- outbound -----------------------------------------------------------------------------------


def build_play_audio(payload: bytes, *, content_type: str = MULAW, sample_rate: int = 8000) -> str:
    """A playAudio frame: raw audio in ``content_type`` at ``sample_rate`` (no file header).

    No ``streamId``, as in Plivo's docs and SDKs: the socket says which stream it is.
    """
    if (content_type, sample_rate) not in CONTENT_TYPES:
        raise ValueError(f"Plivo plays {sorted(CONTENT_TYPES)}, not {content_type} at {sample_rate} Hz")
    media = {
        "contentType": content_type,
        "sampleRate": sample_rate,
        "payload": base64.b64encode(payload).decode("ascii"),
    }
    return json.dumps({"event": "playAudio", "media": media})


def build_checkpoint(stream_id: str, name: str) -> str:
    """A checkpoint: Plivo answers ``playedStream`` once the audio sent before it has played."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise ValueError(f"checkpoint name must be a non-empty string of at most {MAX_NAME_CHARS} chars")
    return json.dumps({"event": "checkpoint", "streamId": _id(stream_id), "name": name})


def build_clear_audio(stream_id: str) -> str:
    """Drop Plivo's buffered audio; Plivo answers ``clearedAudio``."""
    return json.dumps({"event": "clearAudio", "streamId": _id(stream_id)})


def build_send_dtmf(digits: str) -> str:
    """Play DTMF tones into the call."""
    if not digits or len(digits) > MAX_DTMF_DIGITS or not set(digits) <= DTMF_DIGITS:
        raise ValueError(f"DTMF digits must be 1-{MAX_DTMF_DIGITS} of 0-9 * # A-D, got {digits[:80]!r}")
    return json.dumps({"event": "sendDTMF", "dtmf": digits})


def parse_outbound(raw: str | bytes, *, max_bytes: int = 1024 * 1024) -> OutboundEvent:
    """Parse one frame sent TO Plivo (what the fake Plivo call reads). Raises ``PlivoProtocolError``."""
    doc, event = load_event(raw, max_bytes=max_bytes, error=PlivoProtocolError)
    parser = _OUTBOUND.get(event)
    if parser is None:
        return UnknownEvent(event[:64])
    return parser(doc)


# ---- field helpers ------------------------------------------------------------------------------


def _id(stream_id: str) -> str:
    if not isinstance(stream_id, str) or not stream_id:
        raise ValueError("streamId must be a non-empty string")
    return stream_id


def _obj(doc: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise PlivoProtocolError(f"{where}: missing or non-object '{key}'")
    return value


def _str(doc: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if not isinstance(value, str):
        raise PlivoProtocolError(f"{where}: missing or non-string '{key}'")
    return value


def _nonempty(doc: Mapping[str, Any], key: str, where: str) -> str:
    value = _str(doc, key, where)
    if not value:
        raise PlivoProtocolError(f"{where}: empty '{key}'")
    return value


def _decimal(text: str, where: str) -> int:
    if not (text.isascii() and text.isdecimal() and len(text) <= 18):
        raise PlivoProtocolError(f"{where} is not a non-negative decimal number")
    return int(text)


def _int(doc: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    """Plivo sends counters as JSON numbers and timestamps as decimal strings; either is read."""
    value = doc.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0 or value >= 10**18:
            raise PlivoProtocolError(f"{where}: '{key}' out of range")
        return value
    if isinstance(value, str):
        return _decimal(value, f"{where}: '{key}'")
    raise PlivoProtocolError(f"{where}: missing or non-numeric '{key}'")


def _payload(media: Mapping[str, Any], where: str) -> bytes:
    encoded = _str(media, "payload", where)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise PlivoProtocolError(f"{where}: payload is not valid base64") from None


def _digit(value: str, where: str) -> str:
    if value not in DTMF_DIGITS:
        raise PlivoProtocolError(f"{where}: {value[:10]!r} is not a DTMF digit")
    return value


def _name(doc: Mapping[str, Any], where: str) -> str:
    name = _nonempty(doc, "name", where)
    if len(name) > MAX_NAME_CHARS:
        raise PlivoProtocolError(f"{where}: name longer than {MAX_NAME_CHARS} characters")
    return name


def _parse_start(doc: Mapping[str, Any]) -> Start:
    start = _obj(doc, "start", "start")
    tracks = start.get("tracks", ["inbound"])
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise PlivoProtocolError("start: 'tracks' must be a list of strings")
    fmt = _obj(start, "mediaFormat", "start")
    encoding, rate_in_type = split_content_type(
        _nonempty(fmt, "encoding", "start.mediaFormat"), where="start"
    )
    if "sampleRate" in fmt or rate_in_type is None:
        sample_rate = _int(fmt, "sampleRate", "start.mediaFormat")
        if rate_in_type is not None and rate_in_type != sample_rate:
            raise PlivoProtocolError("start.mediaFormat: the encoding's rate differs from sampleRate")
    else:
        sample_rate = rate_in_type
    extra = doc.get("extra_headers", start.get("extra_headers", ""))
    if extra is None:
        extra = ""
    if not isinstance(extra, str):
        raise PlivoProtocolError("start: 'extra_headers' must be a string")
    return Start(
        sequence_number=_int(doc, "sequenceNumber", "start", 0),
        stream_id=_nonempty(start, "streamId", "start"),
        call_id=_nonempty(start, "callId", "start"),
        account_id=_str(start, "accountId", "start", ""),
        tracks=tuple(tracks),
        media_format=MediaFormat(encoding=encoding, sample_rate=sample_rate),
        extra_headers=extra,
        headers=MappingProxyType(parse_extra_headers(extra)),
    )


def _parse_media(doc: Mapping[str, Any]) -> Media:
    media = _obj(doc, "media", "media")
    return Media(
        sequence_number=_int(doc, "sequenceNumber", "media", 0),
        stream_id=_nonempty(doc, "streamId", "media"),
        track=_str(media, "track", "media", "inbound"),
        chunk=_int(media, "chunk", "media", 0),
        timestamp=_int(media, "timestamp", "media", 0),
        payload=_payload(media, "media"),
    )


def _parse_dtmf(doc: Mapping[str, Any]) -> Dtmf:
    dtmf = _obj(doc, "dtmf", "dtmf")
    return Dtmf(
        sequence_number=_int(doc, "sequenceNumber", "dtmf", 0),
        stream_id=_nonempty(doc, "streamId", "dtmf"),
        track=_str(dtmf, "track", "dtmf", "inbound"),
        digit=_digit(_str(dtmf, "digit", "dtmf"), "dtmf"),
    )


def _parse_played(doc: Mapping[str, Any]) -> PlayedStream:
    return PlayedStream(
        sequence_number=_int(doc, "sequenceNumber", "playedStream", 0),
        stream_id=_nonempty(doc, "streamId", "playedStream"),
        name=_name(doc, "playedStream"),
    )


def _parse_cleared(doc: Mapping[str, Any]) -> ClearedAudio:
    return ClearedAudio(
        sequence_number=_int(doc, "sequenceNumber", "clearedAudio", 0),
        stream_id=_nonempty(doc, "streamId", "clearedAudio"),
    )


def _parse_stop(doc: Mapping[str, Any]) -> Stop:
    # Not in Plivo's current reference; fields as Plivo's Java SDK models them, all optional.
    reason = doc.get("reason", "")
    return Stop(
        sequence_number=_int(doc, "sequenceNumber", "stop", 0),
        stream_id=_str(doc, "streamId", "stop", ""),
        reason=reason[:200] if isinstance(reason, str) else "",
    )


_INBOUND: dict[str, Callable[[Mapping[str, Any]], InboundEvent]] = {
    "start": _parse_start,
    "media": _parse_media,
    "dtmf": _parse_dtmf,
    "playedStream": _parse_played,
    "clearedAudio": _parse_cleared,
    "stop": _parse_stop,
}


def _parse_play_audio(doc: Mapping[str, Any]) -> PlayAudio:
    media = _obj(doc, "media", "playAudio")
    content_type, rate_in_type = split_content_type(
        _nonempty(media, "contentType", "playAudio"), where="playAudio"
    )
    sample_rate = _int(media, "sampleRate", "playAudio")
    if rate_in_type is not None and rate_in_type != sample_rate:
        raise PlivoProtocolError("playAudio: the contentType's rate differs from sampleRate")
    if (content_type, sample_rate) not in CONTENT_TYPES:
        raise PlivoProtocolError(f"playAudio: Plivo does not play {content_type[:40]} at {sample_rate} Hz")
    payload = _payload(media, "playAudio")
    if content_type == L16 and len(payload) % 2:
        raise PlivoProtocolError("playAudio: L16 payload has an odd number of bytes")
    return PlayAudio(content_type, sample_rate, payload, _str(doc, "streamId", "playAudio", ""))


def _parse_checkpoint(doc: Mapping[str, Any]) -> Checkpoint:
    return Checkpoint(_nonempty(doc, "streamId", "checkpoint"), _name(doc, "checkpoint"))


def _parse_clear_audio(doc: Mapping[str, Any]) -> ClearAudio:
    return ClearAudio(_nonempty(doc, "streamId", "clearAudio"))


def _parse_send_dtmf(doc: Mapping[str, Any]) -> SendDtmf:
    digits = _nonempty(doc, "dtmf", "sendDTMF")
    if len(digits) > MAX_DTMF_DIGITS or not set(digits) <= DTMF_DIGITS:
        raise PlivoProtocolError("sendDTMF: 'dtmf' must be DTMF digits (0-9 * # A-D)")
    return SendDtmf(digits)


_OUTBOUND: dict[str, Callable[[Mapping[str, Any]], OutboundEvent]] = {
    "playAudio": _parse_play_audio,
    "checkpoint": _parse_checkpoint,
    "clearAudio": _parse_clear_audio,
    "sendDTMF": _parse_send_dtmf,
}
