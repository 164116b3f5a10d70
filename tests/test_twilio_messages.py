from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voiceagent.adapters.twilio import (
    Connected,
    Dtmf,
    Mark,
    Media,
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


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_only_raise_protocol_errors(raw: bytes) -> None:
    try:
        parse_inbound(raw)
    except TwilioProtocolError:
        pass


@settings(max_examples=200)
@given(json_values)
def test_fuzz_arbitrary_json_only_raises_protocol_errors(doc: Any) -> None:
    try:
        parse_inbound(json.dumps(doc))
    except TwilioProtocolError:
        pass


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
            ]
        ),
        field_values,
    ),
    st.dictionaries(st.sampled_from(["sequenceNumber", "streamSid", "protocol", "version"]), field_values),
)
def test_fuzz_event_shaped_json_only_raises_protocol_errors(
    event: str, body: dict[str, Any], top: dict[str, Any]
) -> None:
    try:
        parse_inbound(_shaped(event, body, top))
    except TwilioProtocolError:
        pass
