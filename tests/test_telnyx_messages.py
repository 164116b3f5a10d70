"""Telnyx media-streaming wire messages: the documented frames parse, builders emit the documented
shapes, and bad input of any kind raises TelnyxProtocolError and nothing else."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voiceagent.adapters.telnyx import TelnyxProtocolError
from voiceagent.adapters.telnyx import messages as m
from voiceagent.telephony import MediaStreamProtocolError

STREAM = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"
CCID = "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ"

# The frames as Telnyx's documentation shows them (media-streaming guide and AsyncAPI reference).
CONNECTED = {"event": "connected", "version": "1.0.0"}
START = {
    "event": "start",
    "sequence_number": "1",
    "stream_id": STREAM,
    "start": {
        "user_id": "3E6F995F-85F7-4705-9741-53B116D28237",
        "call_control_id": CCID,
        "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f",
        "from": "+13122010094",
        "to": "+13122123456",
        "tags": ["TAG1", "TAG2"],
        "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
        "custom_parameters": {"customer_id": "customer_123"},
        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
    },
}
MEDIA = {
    "event": "media",
    "sequence_number": "4",
    "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": "AAEC/w=="},
    "stream_id": STREAM,
}
STOP = {
    "event": "stop",
    "sequence_number": "5",
    "stop": {"user_id": "3e6f995f-85f7-4705-9741-53b116d28237", "call_control_id": CCID},
    "stream_id": STREAM,
}
MARK = {"event": "mark", "sequence_number": "6", "stream_id": STREAM, "mark": {"name": "m1"}}
DTMF = {
    "event": "dtmf",
    "stream_id": STREAM,
    "occurred_at": "2022-06-23T12:04:45.000000Z",
    "sequence_number": "7",
    "dtmf": {"digit": "1"},
}
ERROR = {
    "event": "error",
    "sequence_number": "8",
    "stream_id": STREAM,
    "payload": {"code": 100003, "title": "Malformed frame", "detail": "The frame is not valid JSON"},
}


def test_connected_with_and_without_the_stream_token() -> None:
    assert m.parse_inbound(json.dumps(CONNECTED)) == m.Connected("1.0.0", None)
    with_token = {**CONNECTED, "connected": {"x-telnyx-streaming-auth-token": "tok"}}
    assert m.parse_inbound(json.dumps(with_token)) == m.Connected("1.0.0", "tok")


def test_start_carries_call_control_id_format_client_state_and_parameters() -> None:
    start = m.parse_inbound(json.dumps(START))
    assert isinstance(start, m.Start)
    assert start.stream_id == STREAM and start.call_control_id == CCID
    assert start.media_format == m.MediaFormat("PCMU", 8000, 1)
    assert start.client_state == "aGF2ZSBhIG5pY2UgZGF5ID1d"
    assert dict(start.custom_parameters) == {"customer_id": "customer_123"}
    assert start.tags == ("TAG1", "TAG2") and start.from_ == "+13122010094" and start.sequence_number == 1


def test_media_mark_dtmf_stop_error() -> None:
    media = m.parse_inbound(json.dumps(MEDIA))
    assert media == m.Media(4, STREAM, "inbound", 2, 5, b"\x00\x01\x02\xff")
    outbound = {**MEDIA, "media": {**MEDIA["media"], "track": "outbound_track"}}
    assert isinstance(out := m.parse_inbound(json.dumps(outbound)), m.Media) and out.track == "outbound"
    assert m.parse_inbound(json.dumps(MARK)) == m.Mark(6, STREAM, "m1")
    assert m.parse_inbound(json.dumps(DTMF)) == m.Dtmf(7, STREAM, "1")
    assert m.parse_inbound(json.dumps(STOP)) == m.Stop(5, STREAM, CCID)
    assert m.parse_inbound(json.dumps(ERROR)) == m.Error(
        8, STREAM, 100003, "Malformed frame", "The frame is not valid JSON"
    )


def test_unknown_events_are_not_errors() -> None:
    assert m.parse_inbound('{"event": "transcription", "x": 1}') == m.UnknownEvent("transcription")


def test_builders_emit_the_documented_client_frames() -> None:
    assert json.loads(m.build_media(b"\x01\x02")) == {"event": "media", "media": {"payload": "AQI="}}
    assert json.loads(m.build_mark("turn-1")) == {"event": "mark", "mark": {"name": "turn-1"}}
    assert json.loads(m.build_clear()) == {"event": "clear"}
    with pytest.raises(ValueError):
        m.build_mark("")


@pytest.mark.parametrize(
    "doc",
    [
        {"event": "start", "start": {"call_control_id": CCID, "media_format": {"encoding": "PCMU"}}},
        {**START, "stream_id": ""},
        {**START, "start": {**START["start"], "call_control_id": 7}},
        {**START, "start": {**START["start"], "custom_parameters": {"a": {"nested": 1}}}},
        {**START, "start": {**START["start"], "custom_parameters": {str(i): "v" for i in range(65)}}},
        {**START, "start": {**START["start"], "media_format": {"encoding": "PCMU", "sample_rate": "-1"}}},
        {**MEDIA, "media": {"payload": "not base64!"}},
        {**MEDIA, "sequence_number": "x"},
        {**DTMF, "dtmf": {"digit": "E"}},
        {**MARK, "mark": {}},
        {**STOP, "stop": []},
        {"event": 3},
        [],
    ],
)
def test_malformed_frames_raise_the_protocol_error(doc: Any) -> None:
    with pytest.raises(TelnyxProtocolError) as info:
        m.parse_inbound(json.dumps(doc))
    assert isinstance(info.value, MediaStreamProtocolError) and info.value.reason


def test_oversized_and_deeply_nested_frames() -> None:
    with pytest.raises(TelnyxProtocolError, match="exceeds"):
        m.parse_inbound(json.dumps({**MEDIA, "media": {"payload": "A" * m.MAX_FRAME_BYTES}}))
    with pytest.raises(TelnyxProtocolError):
        m.parse_inbound("[" * 50_000 + "]" * 50_000, max_bytes=200_000)


# ---- fuzzing: only TelnyxProtocolError ever escapes, and valid frames round-trip -------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_events = st.sampled_from(["connected", "start", "media", "mark", "dtmf", "stop", "error", "other"])


def _parse_or_protocol_error(raw: str | bytes) -> None:
    try:
        m.parse_inbound(raw)
    except TelnyxProtocolError:
        pass


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_fuzz_bytes(raw: bytes) -> None:
    _parse_or_protocol_error(raw)


@settings(max_examples=400)
@given(_events, _json, _json)
def test_fuzz_event_shaped_json(event: str, body: Any, inner: Any) -> None:
    key = {"error": "payload"}.get(event, event)
    _parse_or_protocol_error(json.dumps({"event": event, key: body, "stream_id": inner}))
    if isinstance(body, dict):
        base = {"start": START, "media": MEDIA, "stop": STOP, "mark": MARK, "dtmf": DTMF}.get(event, {})
        _parse_or_protocol_error(json.dumps({**base, "event": event, key: {**base.get(key, {}), **body}}))


@settings(max_examples=200)
@given(
    st.binary(max_size=400),
    st.text(min_size=1, max_size=20),
    st.sampled_from(sorted(m.DTMF_DIGITS)),
    st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=5),
)
def test_fuzz_valid_frames_round_trip(payload: bytes, name: str, digit: str, params: dict[str, str]) -> None:
    media = {**MEDIA, "media": {**MEDIA["media"], "payload": base64.b64encode(payload).decode()}}
    parsed = m.parse_inbound(json.dumps(media))
    assert isinstance(parsed, m.Media) and parsed.payload == payload
    built = json.loads(m.build_media(payload))
    assert base64.b64decode(built["media"]["payload"]) == payload
    assert m.parse_inbound(json.dumps({**MARK, "mark": {"name": name}})) == m.Mark(6, STREAM, name)
    assert json.loads(m.build_mark(name))["mark"]["name"] == name
    assert m.parse_inbound(json.dumps({**DTMF, "dtmf": {"digit": digit}})) == m.Dtmf(7, STREAM, digit)
    start = m.parse_inbound(json.dumps({**START, "start": {**START["start"], "custom_parameters": params}}))
    assert isinstance(start, m.Start) and dict(start.custom_parameters) == params
