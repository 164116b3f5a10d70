from __future__ import annotations

import base64
import json
import re
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voiceagent.adapters.twilio import (
    Connected,
    Dtmf,
    Mark,
    Media,
    MediaFormat,
    Start,
    Stop,
    TwilioProtocolError,
    UnknownEvent,
    build_clear,
    build_mark,
    build_media,
    parse_inbound,
)

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"

START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "accountSid": "AC1",
        "streamSid": SID,
        "callSid": "CA1",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"caller": "+15550100", "lang": "en"},
    },
    "streamSid": SID,
}
MEDIA = {
    "event": "media",
    "sequenceNumber": "4",
    "media": {
        "track": "inbound",
        "chunk": "2",
        "timestamp": "5",
        "payload": base64.b64encode(b"\x7f\xff").decode(),
    },
    "streamSid": SID,
}


def dumps(doc: Any) -> str:
    return json.dumps(doc)


def test_parses_every_inbound_event() -> None:
    assert parse_inbound(dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})) == Connected(
        "Call", "1.0.0"
    )
    start = parse_inbound(dumps(START))
    assert isinstance(start, Start)
    assert (start.stream_sid, start.call_sid, start.account_sid) == (SID, "CA1", "AC1")
    assert dict(start.custom_parameters) == {"caller": "+15550100", "lang": "en"}
    assert start.media_format.sample_rate == 8000 and start.tracks == ("inbound",)
    media = parse_inbound(dumps(MEDIA).encode())  # binary frames with JSON text are accepted too
    assert media == Media(4, SID, "inbound", 2, 5, b"\x7f\xff")
    assert parse_inbound(
        dumps({"event": "mark", "sequenceNumber": "9", "streamSid": SID, "mark": {"name": "m1"}})
    ) == Mark(9, SID, "m1")
    assert parse_inbound(
        dumps(
            {
                "event": "stop",
                "sequenceNumber": "10",
                "stop": {"accountSid": "AC1", "callSid": "CA1"},
                "streamSid": SID,
            }
        )
    ) == Stop(10, SID, "AC1", "CA1")
    assert parse_inbound(
        dumps(
            {
                "event": "dtmf",
                "streamSid": SID,
                "sequenceNumber": "5",
                "dtmf": {"track": "inbound_track", "digit": "#"},
            }
        )
    ) == Dtmf(5, SID, "inbound_track", "#")


def test_start_without_custom_parameters_has_empty_mapping() -> None:
    doc = json.loads(dumps(START))
    del doc["start"]["customParameters"]
    start = parse_inbound(dumps(doc))
    assert isinstance(start, Start) and dict(start.custom_parameters) == {}


def _with(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> str:
    copy = json.loads(json.dumps(doc))
    target = copy
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(copy)


_DELETE = object()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "not valid JSON"),
        (b"\xff\xfe garbage", "not valid JSON"),
        ("[1, 2]", "JSON list, not an object"),
        ('{"event": 3}', "no string 'event'"),
        (_with(MEDIA, ("media", "payload"), "***"), "not valid base64"),
        (_with(MEDIA, ("media", "payload"), _DELETE), "'payload'"),
        (_with(MEDIA, ("media",), _DELETE), "'media'"),
        (_with(MEDIA, ("sequenceNumber",), "four"), "'sequenceNumber'"),
        (_with(MEDIA, ("media", "chunk"), True), "'chunk'"),
        (_with(MEDIA, ("media", "timestamp"), "-5"), "'timestamp'"),
        (_with(START, ("start", "callSid"), _DELETE), "'callSid'"),
        (_with(START, ("start", "customParameters"), {"a": 1}), "customParameters"),
        (_with(START, ("start", "tracks"), "inbound"), "tracks"),
        (_with(START, ("streamSid",), "MZother"), "differs"),
        (
            '{"event": "dtmf", "streamSid": "MZ", "sequenceNumber": "1", "dtmf": {"track": "t", "digit": "x"}}',  # noqa: E501
            "DTMF",
        ),
        ('{"event": "mark", "streamSid": "MZ", "sequenceNumber": "1", "mark": {}}', "'name'"),
        ('{"event": "connected"}', "'protocol'"),
    ],
)
def test_bad_frames_raise_a_typed_error_with_a_reason(raw: str | bytes, reason: str) -> None:
    with pytest.raises(TwilioProtocolError) as info:
        parse_inbound(raw)
    assert reason in info.value.reason


def test_unknown_event_types_parse_as_unknown_not_as_errors() -> None:
    # Twilio adds event types; a new one must never hang up the call.
    assert parse_inbound('{"event": "hangup", "streamSid": "MZ"}') == UnknownEvent("hangup")
    assert parse_inbound(json.dumps({"event": "事" * 100})) == UnknownEvent("事" * 64)


def test_oversized_frame_is_rejected_before_parsing() -> None:
    raw = _with(MEDIA, ("media", "payload"), base64.b64encode(b"\x00" * 60_000).decode())
    with pytest.raises(TwilioProtocolError, match="exceeds the 65536-byte limit"):
        parse_inbound(raw)
    assert isinstance(parse_inbound(raw, max_bytes=len(raw)), Media)


def test_deeply_nested_json_is_a_protocol_error() -> None:
    with pytest.raises(TwilioProtocolError):
        parse_inbound("[" * 50_000 + "]" * 50_000, max_bytes=200_000)


def test_builds_only_media_mark_and_clear() -> None:
    assert json.loads(build_media(SID, b"\x00\xff")) == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": "AP8="},
    }
    assert json.loads(build_mark(SID, "turn-1")) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": "turn-1"},
    }
    assert json.loads(build_clear(SID)) == {"event": "clear", "streamSid": SID}
    with pytest.raises(ValueError):
        build_mark(SID, "")
    with pytest.raises(ValueError):
        build_clear("")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)
field_values = (
    st.none()
    | st.booleans()
    | st.integers(-3, 10**20)
    | st.text(max_size=8)
    | st.sampled_from(["1", "AP8=", "inbound", "#", "audio/x-mulaw", "8000"])
    | st.lists(st.text(max_size=5), max_size=3)
    | st.dictionaries(st.text(max_size=5), st.text(max_size=5) | st.integers(), max_size=3)
)
event_names = st.sampled_from(["connected", "start", "media", "mark", "stop", "dtmf", "clear", ""])


def _shaped(event: str, body: dict[str, Any], top: dict[str, Any]) -> str:
    return json.dumps({"event": event, event: body, **top})


# ---- fuzzing with an oracle ---------------------------------------------------------------------
# ``expected`` is an independent reference for parse_inbound, written from PROTOCOLS.md §4 as a table of
# field rules (not by calling the adapter's helpers): the parsed event, or None where the frame must be
# rejected. Each fuzzer checks that the parser agrees with it on every input, not just that it survives.

_DECIMAL = re.compile(r"[0-9]{1,18}")  # Twilio's counters are decimal strings ("4")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


class _Reject(Exception):
    pass


def _field(doc: Any, key: str, kind: str) -> Any:
    value = doc.get(key) if isinstance(doc, dict) else None
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "obj" and isinstance(value, dict):
        return value
    if kind == "num":
        if type(value) is int and value >= 0:
            return value
        if isinstance(value, str) and _DECIMAL.fullmatch(value):
            return int(value)
    raise _Reject(key)


def _expected_or_raise(doc: Any) -> Any:
    if not isinstance(doc, dict) or not isinstance(doc.get("event"), str):
        raise _Reject("event")
    event, seq = doc["event"], lambda: _field(doc, "sequenceNumber", "num")
    if event == "connected":
        return Connected(_field(doc, "protocol", "str"), _field(doc, "version", "str"))
    if event == "start":
        body = _field(doc, "start", "obj")
        tracks, params = body.get("tracks"), body.get("customParameters", {})
        if not (isinstance(tracks, list) and all(isinstance(t, str) for t in tracks)):
            raise _Reject("tracks")
        if not (isinstance(params, dict) and all(isinstance(v, str) for v in params.values())):
            raise _Reject("customParameters")
        sid = _field(body, "streamSid", "str")
        if "streamSid" in doc and doc["streamSid"] != sid:
            raise _Reject("streamSid")
        fmt = _field(body, "mediaFormat", "obj")
        media_format = MediaFormat(
            _field(fmt, "encoding", "str"), _field(fmt, "sampleRate", "num"), _field(fmt, "channels", "num")
        )
        return Start(
            seq(),
            sid,
            _field(body, "accountSid", "str"),
            _field(body, "callSid", "str"),
            tuple(tracks),
            media_format,
            MappingProxyType(params),
        )
    if event == "media":
        body = _field(doc, "media", "obj")
        payload = _field(body, "payload", "str")
        if not _BASE64.fullmatch(payload):
            raise _Reject("payload")
        return Media(
            seq(),
            _field(doc, "streamSid", "str"),
            _field(body, "track", "str"),
            _field(body, "chunk", "num"),
            _field(body, "timestamp", "num"),
            base64.b64decode(payload),
        )
    if event == "mark":
        return Mark(seq(), _field(doc, "streamSid", "str"), _field(_field(doc, "mark", "obj"), "name", "str"))
    if event == "stop":
        body = _field(doc, "stop", "obj")
        return Stop(
            seq(),
            _field(doc, "streamSid", "str"),
            _field(body, "accountSid", "str"),
            _field(body, "callSid", "str"),
        )
    if event == "dtmf":
        body = _field(doc, "dtmf", "obj")
        digit = _field(body, "digit", "str")
        if len(digit) != 1 or digit not in "0123456789*#ABCD":
            raise _Reject("digit")
        return Dtmf(seq(), _field(doc, "streamSid", "str"), _field(body, "track", "str"), digit)
    return UnknownEvent(event[:64])


def expected(doc: Any) -> Any:
    try:
        return _expected_or_raise(doc)
    except _Reject:
        return None


def assert_agrees_with_reference(raw: str | bytes) -> None:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        doc = _NOT_JSON
    want = None if doc is _NOT_JSON else expected(doc)
    try:
        got = parse_inbound(raw)
    except TwilioProtocolError:
        assert want is None, f"rejected a valid frame: {raw!r} should parse as {want!r}"
        return
    assert got == want, raw


_NOT_JSON = object()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)
field_values = (
    st.none()
    | st.booleans()
    | st.integers(-3, 10**20)
    | st.text(max_size=8)
    | st.sampled_from(["1", "AP8=", "AP8", "inbound", "#", "1#", "audio/x-mulaw", "8000", "007", "-1", "٣"])
    | st.lists(st.text(max_size=5), max_size=3)
    | st.dictionaries(st.text(max_size=5), st.text(max_size=5) | st.integers(), max_size=3)
)
event_names = st.sampled_from(["connected", "start", "media", "mark", "stop", "dtmf", "clear", ""])


def _shaped(event: str, body: dict[str, Any], top: dict[str, Any]) -> str:
    return json.dumps({"event": event, event: body, **top})


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_agree_with_the_reference(raw: bytes) -> None:
    assert_agrees_with_reference(raw)


@settings(max_examples=200)
@given(json_values)
def test_fuzz_arbitrary_json_agrees_with_the_reference(doc: Any) -> None:
    assert_agrees_with_reference(json.dumps(doc))


@settings(max_examples=600)
@given(
    event_names,
    st.dictionaries(
        st.sampled_from(
            [
                "track",
                "chunk",
                "timestamp",
                "payload",
                "name",
                "digit",
                "streamSid",
                "callSid",
                "accountSid",
                "tracks",
                "mediaFormat",
                "customParameters",
                "protocol",
                "version",
            ]
        ),
        field_values,
    ),
    st.dictionaries(st.sampled_from(["sequenceNumber", "streamSid", "protocol", "version"]), field_values),
)
def test_fuzz_event_shaped_json_agrees_with_the_reference(
    event: str, body: dict[str, Any], top: dict[str, Any]
) -> None:
    assert_agrees_with_reference(_shaped(event, body, top))


# Valid events of every kind, drawn as the parser's own values, for the round trip below.
_ids = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12)
_counters = st.integers(0, 10**18 - 1)
_events = st.one_of(
    st.builds(Connected, _ids, _ids),
    st.builds(
        Start,
        _counters,
        _ids,
        _ids,
        _ids,
        st.lists(st.sampled_from(["inbound", "outbound"]), max_size=2).map(tuple),
        st.builds(MediaFormat, st.just("audio/x-mulaw"), st.sampled_from([8000, 16000]), st.just(1)),
        st.dictionaries(_ids, st.text(max_size=10), max_size=3).map(MappingProxyType),
    ),
    st.builds(Media, _counters, _ids, _ids, _counters, _counters, st.binary(max_size=400)),
    st.builds(Mark, _counters, _ids, _ids),
    st.builds(Stop, _counters, _ids, _ids, _ids),
    st.builds(Dtmf, _counters, _ids, _ids, st.sampled_from(sorted("0123456789*#ABCD"))),
)


def to_wire(event: Any, as_text: bool) -> dict[str, Any]:
    """What Twilio sends for ``event`` (PROTOCOLS.md §4): counters as decimal strings, or JSON integers."""

    def n(value: int) -> str | int:
        return str(value) if as_text else value

    if isinstance(event, Connected):
        return {"event": "connected", "protocol": event.protocol, "version": event.version}
    if isinstance(event, Start):
        fmt = event.media_format
        body = {
            "accountSid": event.account_sid,
            "streamSid": event.stream_sid,
            "callSid": event.call_sid,
            "tracks": list(event.tracks),
            "mediaFormat": {
                "encoding": fmt.encoding,
                "sampleRate": fmt.sample_rate,
                "channels": fmt.channels,
            },
            "customParameters": dict(event.custom_parameters),
        }
        doc = {"event": "start", "sequenceNumber": n(event.sequence_number), "start": body}
        return doc | {"streamSid": event.stream_sid}
    common = {"sequenceNumber": n(event.sequence_number), "streamSid": event.stream_sid}
    if isinstance(event, Media):
        payload = base64.b64encode(event.payload).decode()
        body = {"track": event.track, "chunk": n(event.chunk), "timestamp": n(event.timestamp)}
        return {"event": "media", **common, "media": body | {"payload": payload}}
    if isinstance(event, Mark):
        return {"event": "mark", **common, "mark": {"name": event.name}}
    if isinstance(event, Stop):
        return {
            "event": "stop",
            **common,
            "stop": {"accountSid": event.account_sid, "callSid": event.call_sid},
        }
    assert isinstance(event, Dtmf)
    return {"event": "dtmf", **common, "dtmf": {"track": event.track, "digit": event.digit}}


@settings(max_examples=300)
@given(_events, st.booleans(), st.booleans())
def test_fuzz_every_valid_event_round_trips(event: Any, as_text: bool, as_bytes: bool) -> None:
    raw = json.dumps(to_wire(event, as_text), ensure_ascii=as_bytes)
    assert parse_inbound(raw.encode() if as_bytes else raw) == event
    assert expected(json.loads(raw)) == event  # the reference agrees on valid frames too


@settings(max_examples=200)
@given(_ids, st.binary(max_size=400), _ids)
def test_fuzz_outbound_frames_carry_exactly_what_was_given(sid: str, mulaw: bytes, name: str) -> None:
    media = json.loads(build_media(sid, mulaw))
    assert media == {
        "event": "media",
        "streamSid": sid,
        "media": {"payload": base64.b64encode(mulaw).decode()},
    }
    assert base64.b64decode(media["media"]["payload"], validate=True) == mulaw
    assert json.loads(build_mark(sid, name)) == {"event": "mark", "streamSid": sid, "mark": {"name": name}}
    assert json.loads(build_clear(sid)) == {"event": "clear", "streamSid": sid}


def _paths(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in doc.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out += _paths(value, (*prefix, key))
    return out


@settings(max_examples=600)
@given(_events, st.booleans(), st.data())
def test_fuzz_near_miss_frames_agree_with_the_reference(
    event: Any, as_text: bool, data: st.DataObject
) -> None:
    """Valid frames with up to 3 fields deleted or replaced: near misses the reference must judge alike."""
    doc = to_wire(event, as_text)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p != ("event",)]  # a changed type is arbitrary JSON's test
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        target = doc
        for key in path[:-1]:
            target = target[key]
        if data.draw(st.booleans()):
            del target[path[-1]]
        else:
            target[path[-1]] = data.draw(field_values)
    assert_agrees_with_reference(json.dumps(doc))
