"""Plivo's audio-stream messages and PlivoCodec: the documented examples, bad input (only
PlivoProtocolError escapes), round trips, and Pipecat's PlivoFrameSerializer as a reference client."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voiceagent.adapters.plivo import (
    Checkpoint,
    ClearAudio,
    ClearedAudio,
    Dtmf,
    Media,
    MediaFormat,
    PlayAudio,
    PlayedStream,
    PlivoCodec,
    PlivoProtocolError,
    SendDtmf,
    Start,
    Stop,
    UnknownEvent,
    build_checkpoint,
    build_clear_audio,
    build_play_audio,
    build_send_dtmf,
    parse_extra_headers,
    parse_inbound,
    parse_outbound,
)
from voiceagent.audio import pcm16_to_ulaw, sine_pcm16, ulaw_to_pcm16
from voiceagent.telephony import (
    AudioFormat,
    ClearDone,
    DtmfReceived,
    Ignored,
    InboundAudio,
    MarkPlayed,
    MediaStreamProtocolError,
    StreamStart,
    StreamStop,
)

CALL = "12345678-1234-1234-1234-123456789abc"
STREAM = "87654321-4321-4321-4321-cba987654321"

# The start example of Plivo's Stream Event Protocol page, verbatim in shape.
START: dict[str, Any] = {
    "event": "start",
    "sequenceNumber": 1,
    "start": {
        "callId": CALL,
        "streamId": STREAM,
        "accountId": "MAXXXXXXXXXXXXXXXXXX",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
    },
    "extra_headers": "userId=12345;sessionId=abc-xyz",
}
MEDIA: dict[str, Any] = {
    "event": "media",
    "sequenceNumber": 2,
    "streamId": STREAM,
    "media": {
        "track": "inbound",
        "timestamp": "20",
        "chunk": 1,
        "payload": base64.b64encode(b"\x7f\xff").decode(),
    },
    "extra_headers": "userId=12345;sessionId=abc-xyz",
}
DTMF: dict[str, Any] = {
    "event": "dtmf",
    "sequenceNumber": 3,
    "streamId": STREAM,
    "dtmf": {"track": "inbound", "digit": "5", "timestamp": "1500"},
}
PLAYED = {"event": "playedStream", "sequenceNumber": 4, "streamId": STREAM, "name": "customer greeting audio"}
CLEARED = {"event": "clearedAudio", "sequenceNumber": 5, "streamId": STREAM}


def dumps(doc: Any) -> str:
    return json.dumps(doc)


def test_parses_every_documented_inbound_event() -> None:
    start = parse_inbound(dumps(START))
    assert start == Start(
        1,
        STREAM,
        CALL,
        "MAXXXXXXXXXXXXXXXXXX",
        ("inbound",),
        MediaFormat("audio/x-mulaw", 8000),
        "userId=12345;sessionId=abc-xyz",
        start.headers if isinstance(start, Start) else {},
    )
    assert isinstance(start, Start) and dict(start.headers) == {"userId": "12345", "sessionId": "abc-xyz"}
    assert parse_inbound(dumps(MEDIA).encode()) == Media(2, STREAM, "inbound", 1, 20, b"\x7f\xff")
    assert parse_inbound(dumps(DTMF)) == Dtmf(3, STREAM, "inbound", "5")
    assert parse_inbound(dumps(PLAYED)) == PlayedStream(4, STREAM, "customer greeting audio")
    assert parse_inbound(dumps(CLEARED)) == ClearedAudio(5, STREAM)
    assert parse_inbound(dumps({"event": "stop", "streamId": STREAM, "reason": "hangup"})) == Stop(
        0, STREAM, "hangup"
    )
    assert parse_inbound(dumps({"event": "muteStream", "streamId": STREAM})) == UnknownEvent("muteStream")


def test_l16_starts_and_content_types_with_a_rate() -> None:
    doc = json.loads(dumps(START))
    doc["start"]["mediaFormat"] = {"encoding": "audio/x-l16;rate=16000"}
    start = parse_inbound(dumps(doc))
    assert isinstance(start, Start) and start.media_format == MediaFormat("audio/x-l16", 16000)
    doc["start"]["mediaFormat"] = {"encoding": "audio/x-l16;rate=16000", "sampleRate": 8000}
    with pytest.raises(PlivoProtocolError, match="differs"):
        parse_inbound(dumps(doc))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("userId=12345;sessionId=abc-xyz", {"userId": "12345", "sessionId": "abc-xyz"}),
        ("test1=12,test2=123", {"test1": "12", "test2": "123"}),
        ('{"caller": "15550100", "n": 3}', {"caller": "15550100", "n": "3"}),
        ("", {}),
        ("garbage;=x;k=", {"k": ""}),
        ("{not json", {}),
    ],
)
def test_extra_headers_in_each_documented_spelling(raw: str, expected: dict[str, str]) -> None:
    assert parse_extra_headers(raw) == expected


def _with(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> str:
    copy = json.loads(json.dumps(doc))
    target = copy
    for key in path[:-1]:
        target = target[key]
    if value is _DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(copy)


_DROP = object()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ("[1, 2]", "not an object"),
        ('{"streamId": "x"}', "no string 'event'"),
        (_with(START, ("start", "streamId"), _DROP), "streamId"),
        (_with(START, ("start", "callId"), ""), "empty 'callId'"),
        (_with(START, ("start", "mediaFormat"), "audio/x-mulaw"), "mediaFormat"),
        (_with(START, ("start", "mediaFormat", "sampleRate"), "fast"), "sampleRate"),
        (_with(START, ("start", "tracks"), "inbound"), "tracks"),
        (_with(START, ("extra_headers",), {"a": 1}), "extra_headers"),
        (_with(MEDIA, ("media", "payload"), "***"), "base64"),
        (_with(MEDIA, ("media", "payload"), _DROP), "payload"),
        (_with(MEDIA, ("streamId",), _DROP), "streamId"),
        (_with(MEDIA, ("media", "timestamp"), "-5"), "timestamp"),
        (_with(MEDIA, ("media", "chunk"), True), "chunk"),
        (_with(MEDIA, ("sequenceNumber",), -1), "out of range"),
        (_with(DTMF, ("dtmf", "digit"), "55"), "not a DTMF digit"),
        (_with(PLAYED, ("name",), ""), "empty 'name'"),
        (_with(PLAYED, ("name",), "x" * 300), "longer"),
        (_with(CLEARED, ("streamId",), 7), "streamId"),
        ("[" * 100_000 + "]" * 100_000, "exceeds"),
    ],
)
def test_bad_frames_raise_a_typed_error_with_a_reason(raw: str | bytes, reason: str) -> None:
    with pytest.raises(PlivoProtocolError, match=reason) as caught:
        parse_inbound(raw)
    assert isinstance(caught.value, MediaStreamProtocolError)


def test_deeply_nested_json_is_a_protocol_error() -> None:
    with pytest.raises(PlivoProtocolError):
        parse_inbound("[" * 30_000 + "]" * 30_000, max_bytes=10**6)


def test_builds_the_documented_outbound_messages() -> None:
    assert json.loads(build_play_audio(b"\x01\x02")) == {
        "event": "playAudio",
        "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": "AQI="},
    }
    assert json.loads(build_checkpoint(STREAM, "customer greeting audio")) == {
        "event": "checkpoint",
        "streamId": STREAM,
        "name": "customer greeting audio",
    }
    assert json.loads(build_clear_audio(STREAM)) == {"event": "clearAudio", "streamId": STREAM}
    assert json.loads(build_send_dtmf("12#")) == {"event": "sendDTMF", "dtmf": "12#"}
    for bad in (
        lambda: build_send_dtmf(""),
        lambda: build_send_dtmf("12x"),
        lambda: build_checkpoint(STREAM, ""),
    ):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError):
        build_play_audio(b"", content_type="audio/x-mulaw", sample_rate=16000)


def test_parse_outbound_reads_what_the_bot_sends() -> None:
    assert parse_outbound(
        build_play_audio(b"\x00\x01", content_type="audio/x-l16", sample_rate=16000)
    ) == PlayAudio("audio/x-l16", 16000, b"\x00\x01")
    assert parse_outbound(build_checkpoint(STREAM, "m1")) == Checkpoint(STREAM, "m1")
    assert parse_outbound(build_clear_audio(STREAM)) == ClearAudio(STREAM)
    assert parse_outbound(build_send_dtmf("9")) == SendDtmf("9")
    assert parse_outbound('{"event": "stopAudio"}') == UnknownEvent("stopAudio")
    odd = build_play_audio(b"\x00", content_type="audio/x-l16", sample_rate=8000)
    with pytest.raises(PlivoProtocolError, match="odd"):
        parse_outbound(odd)
    with pytest.raises(PlivoProtocolError, match="does not play"):
        parse_outbound(
            dumps(
                {
                    "event": "playAudio",
                    "media": {"contentType": "audio/wav", "sampleRate": 8000, "payload": ""},
                }
            )
        )


# ---- the codec ------------------------------------------------------------------------------------


def test_codec_maps_plivo_events_to_provider_events() -> None:
    codec = PlivoCodec()
    assert codec.provider == "plivo"
    assert codec.echoes_cleared_marks is False  # playedStream "only if the preceding events were played"
    start = codec.parse(dumps(START))
    assert isinstance(start, StreamStart)
    assert (start.stream_id, start.call_id, start.account_id) == (STREAM, CALL, "MAXXXXXXXXXXXXXXXXXX")
    assert start.inbound_format == start.outbound_format == AudioFormat("pcmu", 8000)
    assert dict(start.custom_parameters) == {"userId": "12345", "sessionId": "abc-xyz"}
    codec.check_start(start)
    assert codec.parse(dumps(MEDIA)) == InboundAudio(STREAM, b"\x7f\xff", "inbound")
    assert codec.parse(dumps(DTMF)) == DtmfReceived(STREAM, "5")
    assert codec.parse(dumps(PLAYED)) == MarkPlayed(STREAM, "customer greeting audio")
    assert codec.parse(dumps(CLEARED)) == ClearDone(STREAM)
    assert codec.parse(dumps({"event": "stop", "streamId": STREAM})) == StreamStop(STREAM, "")
    assert codec.parse(dumps({"event": "playFailed", "reason": "x"})) == Ignored("playFailed")


def test_codec_builds_frames_in_the_streams_format() -> None:
    codec = PlivoCodec()
    l16 = StreamStart(STREAM, CALL, AudioFormat("l16", 16000), AudioFormat("l16", 16000))
    codec.check_start(l16)
    assert parse_outbound(codec.build_media(l16, b"\x01\x00")) == PlayAudio("audio/x-l16", 16000, b"\x01\x00")
    assert parse_outbound(codec.build_mark(l16, "m7")) == Checkpoint(STREAM, "m7")
    assert parse_outbound(codec.build_clear(l16)) == ClearAudio(STREAM)
    assert parse_outbound(codec.build_dtmf(l16, "1*") or "") == SendDtmf("1*")
    for bad in (AudioFormat("pcma", 8000), AudioFormat("pcmu", 16000), AudioFormat("l16", 8000, channels=2)):
        with pytest.raises(PlivoProtocolError, match="not a Plivo stream format"):
            codec.check_start(StreamStart(STREAM, CALL, bad, bad))
    doc = json.loads(dumps(START))
    doc["start"]["mediaFormat"] = {"encoding": "audio/opus", "sampleRate": 48000}
    with pytest.raises(PlivoProtocolError, match="unsupported"):
        codec.parse(dumps(doc))


def test_the_codec_caps_frames() -> None:
    with pytest.raises(PlivoProtocolError, match="exceeds"):
        PlivoCodec(max_frame_bytes=100).parse(dumps(MEDIA) + " " * 100)


# ---- fuzz -------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
_EVENTS = (
    "start",
    "media",
    "dtmf",
    "playedStream",
    "clearedAudio",
    "stop",
    "playAudio",
    "checkpoint",
    "clearAudio",
    "sendDTMF",
)


def _only_protocol_errors(raw: str | bytes) -> None:
    for parse in (parse_inbound, parse_outbound, PlivoCodec().parse):
        try:
            parse(raw)
        except PlivoProtocolError as exc:
            assert exc.reason
        # anything else propagates and fails the test


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_raise_only_protocol_errors(raw: bytes) -> None:
    _only_protocol_errors(raw)


@settings(max_examples=300)
@given(json_values)
def test_fuzz_arbitrary_json_raises_only_protocol_errors(doc: Any) -> None:
    _only_protocol_errors(json.dumps(doc))


@settings(max_examples=500)
@given(
    st.sampled_from(_EVENTS),
    st.dictionaries(
        st.sampled_from(
            ["start", "media", "dtmf", "name", "streamId", "sequenceNumber", "extra_headers", "reason"]
        ),
        json_values,
        max_size=5,
    ),
)
def test_fuzz_event_shaped_json_raises_only_protocol_errors(event: str, fields: dict[str, Any]) -> None:
    _only_protocol_errors(json.dumps({"event": event, **fields}))


_documents = [START, MEDIA, DTMF, PLAYED, CLEARED]


@settings(max_examples=400)
@given(st.sampled_from(_documents), st.data())
def test_fuzz_near_miss_frames_raise_only_protocol_errors(doc: dict[str, Any], data: st.DataObject) -> None:
    """Each valid document with one field replaced by an arbitrary value, at any depth."""
    copy = json.loads(json.dumps(doc))
    target = copy
    while True:
        key = data.draw(st.sampled_from(sorted(target)))
        if isinstance(target[key], dict) and data.draw(st.booleans()):
            target = target[key]
            continue
        target[key] = data.draw(json_values)
        break
    _only_protocol_errors(json.dumps(copy))


@settings(max_examples=200)
@given(
    st.binary(max_size=400),
    st.text(min_size=1, max_size=40),
    st.sampled_from(sorted({("audio/x-mulaw", 8000), ("audio/x-l16", 8000), ("audio/x-l16", 16000)})),
)
def test_fuzz_outbound_frames_carry_exactly_what_was_given(
    payload: bytes, name: str, fmt: tuple[str, int]
) -> None:
    if fmt[0] == "audio/x-l16":
        payload = payload[: len(payload) // 2 * 2]
    assert parse_outbound(build_play_audio(payload, content_type=fmt[0], sample_rate=fmt[1])) == PlayAudio(
        fmt[0], fmt[1], payload
    )
    assert parse_outbound(build_checkpoint(STREAM, name)) == Checkpoint(STREAM, name)


# ---- Pipecat's PlivoFrameSerializer: a reference client nobody here wrote ------------------------------


async def _pipecat() -> Any:
    from pipecat.processors.frame_processor import FrameProcessorSetup
    from pipecat.serializers.plivo import PlivoFrameSerializer

    serializer = PlivoFrameSerializer(STREAM, params=PlivoFrameSerializer.InputParams(auto_hang_up=False))
    setup = FrameProcessorSetup(
        clock=None, task_manager=None, pipeline_worker=None, audio_in_sample_rate=8000
    )  # type: ignore[arg-type]
    await serializer.setup(setup)
    return serializer


@pytest.mark.anyio
async def test_pipecat_reads_the_inbound_frames_we_parse() -> None:
    from pipecat.frames.frames import InputAudioRawFrame, InputDTMFFrame

    serializer = await _pipecat()
    mulaw = pcm16_to_ulaw(sine_pcm16(440, 0.02, 8000))
    media = dict(MEDIA, media=dict(MEDIA["media"], payload=base64.b64encode(mulaw).decode()))
    frame = await serializer.deserialize(dumps(media))
    assert isinstance(frame, InputAudioRawFrame) and frame.sample_rate == 8000
    parsed = PlivoCodec().parse(dumps(media))
    assert isinstance(parsed, InboundAudio) and ulaw_to_pcm16(parsed.payload) == frame.audio
    dtmf = await serializer.deserialize(dumps(DTMF))
    assert isinstance(dtmf, InputDTMFFrame) and dtmf.button.value == "5"
    assert PlivoCodec().parse(dumps(DTMF)) == DtmfReceived(STREAM, "5")


@pytest.mark.anyio
async def test_what_pipecat_sends_parses_as_what_our_codec_sends() -> None:
    from pipecat.frames.frames import InterruptionFrame, OutputAudioRawFrame

    serializer = await _pipecat()
    pcm = sine_pcm16(300, 0.02, 8000)
    theirs = parse_outbound(
        await serializer.serialize(OutputAudioRawFrame(audio=pcm, sample_rate=8000, num_channels=1))
    )
    start = StreamStart(STREAM, CALL, AudioFormat("pcmu", 8000), AudioFormat("pcmu", 8000))
    ours = parse_outbound(PlivoCodec().build_media(start, pcm16_to_ulaw(pcm)))
    assert isinstance(theirs, PlayAudio) and isinstance(ours, PlayAudio)
    assert (theirs.content_type, theirs.sample_rate, theirs.payload) == (
        ours.content_type,
        ours.sample_rate,
        ours.payload,
    )
    assert theirs.stream_id == STREAM and ours.stream_id == ""  # Pipecat adds streamId; Plivo's docs do not
    cleared = parse_outbound(await serializer.serialize(InterruptionFrame()))
    assert cleared == parse_outbound(PlivoCodec().build_clear(start)) == ClearAudio(STREAM)
