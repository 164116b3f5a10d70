"""TelnyxCodec: documented frames become provider-neutral events, L16 is reported as the neutral
big-endian ``l16be`` (which the generic formats decode as numpy does), formats are checked; and
Pipecat's TelnyxFrameSerializer (a reference client nobody here wrote) reads what our fake sends and
writes what our codec writes, for PCMU and PCMA."""

from __future__ import annotations

import audioop
import base64
import json
import math
from types import SimpleNamespace
from typing import Any, cast

import anyio
import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voiceagent.adapters.telnyx import TelnyxCodec, TelnyxProtocolError
from voiceagent.adapters.telnyx.fake import FakeTelnyxCall, alaw_decode, decode_to_pcm16, encode_pcm16
from voiceagent.audio import pcm16_to_alaw, pcm16_to_ulaw, sine_pcm16, ulaw_to_pcm16
from voiceagent.telephony import (
    AudioFormat,
    DtmfReceived,
    Ignored,
    InboundAudio,
    MarkPlayed,
    MediaCodec,
    Preamble,
    StreamStart,
    StreamStop,
)
from voiceagent.telephony.formats import decode, encode

pytestmark = pytest.mark.anyio

CODECS = {"PCMU": "pcmu", "PCMA": "pcma", "L16": "l16be"}


def _fake(encoding: str = "PCMU", rate: int = 8000, **kwargs: Any) -> FakeTelnyxCall:
    return FakeTelnyxCall("ws://127.0.0.1:1/unused", encoding=encoding, sample_rate=rate, **kwargs)


def _start(codec: TelnyxCodec, fake: FakeTelnyxCall) -> StreamStart:
    start = codec.parse(json.dumps(fake.start_message()))
    assert isinstance(start, StreamStart)
    codec.check_start(start)
    return start


def test_it_is_a_media_codec_that_expects_cleared_marks_back() -> None:
    codec: MediaCodec = TelnyxCodec()
    assert codec.provider == "telnyx"
    assert codec.echoes_cleared_marks  # "A clear frame also returns queued marks"


def test_documented_frames_become_events() -> None:
    codec = TelnyxCodec()
    fake = _fake(custom_parameters={"lang": "en"}, client_state="aGk=")
    assert codec.parse(json.dumps(fake.connected_message())) == Preamble("connected")
    start = _start(codec, fake)
    assert start.stream_id == fake.stream_id and start.call_id == fake.call_control_id
    assert start.inbound_format == start.outbound_format == AudioFormat("pcmu", 8000, 1)
    assert start.account_id == fake.user_id
    assert dict(start.custom_parameters) == {"lang": "en", "client_state": "aGk="}
    media = codec.parse(json.dumps(fake.media_message(b"\x7f\x00")))
    assert media == InboundAudio(fake.stream_id, b"\x7f\x00", "inbound")
    assert codec.parse(json.dumps(fake.dtmf_message("#"))) == DtmfReceived(fake.stream_id, "#")
    mark = {"event": "mark", "stream_id": fake.stream_id, "mark": {"name": "m"}}
    assert codec.parse(json.dumps(mark)) == MarkPlayed(fake.stream_id, "m")
    stop = {"event": "stop", "stream_id": fake.stream_id, "stop": {"call_control_id": "x"}}
    assert codec.parse(json.dumps(stop)) == StreamStop(fake.stream_id, "")
    error = {"event": "error", "payload": {"code": 100005, "title": "Rate limit reached"}}
    ignored = codec.parse(json.dumps(error))
    assert isinstance(ignored, Ignored) and "100005" in ignored.event
    assert codec.parse('{"event": "new_thing"}') == Ignored("new_thing")


def test_outbound_frames_and_no_dtmf_on_the_stream() -> None:
    codec = TelnyxCodec()
    start = _start(codec, _fake())
    assert json.loads(codec.build_media(start, b"\x01\x02")) == {
        "event": "media",
        "media": {"payload": "AQI="},
    }
    assert json.loads(codec.build_mark(start, "t1")) == {"event": "mark", "mark": {"name": "t1"}}
    assert json.loads(codec.build_clear(start)) == {"event": "clear"}
    assert codec.build_dtmf(start, "123") is None


def test_l16_is_big_endian_on_the_wire_and_little_endian_once_decoded() -> None:
    codec = TelnyxCodec(bidirectional_codec="L16", bidirectional_sample_rate=16000)
    fake = _fake("L16", 16000)
    start = _start(codec, fake)
    assert start.inbound_format == start.outbound_format == AudioFormat("l16be", 16000, 1)
    samples = numpy.array([1, -2, 300, -32768, 32767], dtype=numpy.int16)
    wire = samples.astype(">i2").tobytes()  # RTP L16: network byte order (RFC 3551)
    event = codec.parse(json.dumps(fake.media_message(wire)))
    assert event == InboundAudio(fake.stream_id, wire)  # the codec passes the payload on as is
    pcm = decode(start.inbound_format, event.payload)  # what the generic stream hands the app
    assert numpy.array_equal(numpy.frombuffer(pcm, dtype="<i2"), samples)
    outbound = encode(start.outbound_format, samples.astype("<i2").tobytes())
    sent = base64.b64decode(json.loads(codec.build_media(start, outbound))["media"]["payload"])
    assert sent == wire


def test_the_codec_keeps_no_per_stream_state() -> None:
    """Media parses the same before its stream's start, after it and after its stop: nothing about a
    stream is remembered, so one codec serves any number of calls."""
    codec = TelnyxCodec(bidirectional_codec=None)
    l16, pcmu = _fake("L16", 16000, stream_id="a"), _fake("PCMU", stream_id="b")
    media = json.dumps(l16.media_message(b"\x00\x01"))
    assert codec.parse(media) == InboundAudio("a", b"\x00\x01")
    _start(codec, l16)
    _start(codec, pcmu)
    assert codec.parse(media) == InboundAudio("a", b"\x00\x01")
    assert codec.parse(json.dumps(pcmu.media_message(b"\x00\x01"))) == InboundAudio("b", b"\x00\x01")
    codec.parse(json.dumps({"event": "stop", "stream_id": "a"}))
    assert codec.parse(media) == InboundAudio("a", b"\x00\x01")
    assert vars(codec) == vars(TelnyxCodec(bidirectional_codec=None))


def test_a_start_in_little_endian_l16_is_not_telnyxs() -> None:
    start = StreamStart("s", "c", AudioFormat("l16", 16000), AudioFormat("l16", 16000))
    with pytest.raises(TelnyxProtocolError, match="l16"):
        TelnyxCodec(bidirectional_codec=None).check_start(start)


def test_the_playback_codec_follows_the_configuration_or_the_inbound_format() -> None:
    start = _start(TelnyxCodec(), _fake("PCMA"))
    assert start.inbound_format.encoding == "pcma" and start.outbound_format == AudioFormat("pcmu", 8000)
    start = _start(TelnyxCodec(bidirectional_codec=None), _fake("PCMA"))
    assert start.outbound_format == AudioFormat("pcma", 8000)
    with pytest.raises(ValueError):
        TelnyxCodec(bidirectional_codec="G722")
    with pytest.raises(ValueError):
        TelnyxCodec(bidirectional_codec="PCMU", bidirectional_sample_rate=16000)
    with pytest.raises(ValueError):
        TelnyxCodec(bidirectional_codec=None, bidirectional_sample_rate=8000)


@pytest.mark.parametrize(
    ("encoding", "rate", "channels", "match"),
    [("G722", 16000, 1, "not supported"), ("OPUS", 48000, 1, "not supported"), ("PCMU", 16000, 1, "8000"),
     ("L16", 11025, 1, "L16"), ("PCMU", 8000, 2, "mono")],
)  # fmt: skip
def test_unsupported_stream_formats_are_refused(encoding: str, rate: int, channels: int, match: str) -> None:
    codec = TelnyxCodec(bidirectional_codec=None)
    message = _fake(encoding, rate).start_message()
    message["start"]["media_format"]["channels"] = channels
    with pytest.raises(TelnyxProtocolError, match=match):
        start = codec.parse(json.dumps(message))
        assert isinstance(start, StreamStart)
        codec.check_start(start)


@settings(max_examples=300)
@given(st.binary(max_size=120) | st.text(max_size=120).map(lambda t: '{"event": "media", "media": ' + t))
def test_fuzz_the_codec_raises_only_its_protocol_error(raw: str | bytes) -> None:
    codec = TelnyxCodec()
    _start(codec, _fake("L16", 16000, stream_id="s"))
    try:
        codec.parse(raw)
    except TelnyxProtocolError:
        pass


@settings(max_examples=100)
@given(st.binary(max_size=64).map(lambda b: b[: len(b) // 2 * 2]))
def test_fuzz_l16be_decodes_as_numpy_reads_big_endian_and_round_trips(data: bytes) -> None:
    fmt = AudioFormat("l16be", 16000)
    assert numpy.array_equal(
        numpy.frombuffer(decode(fmt, data), dtype="<i2"), numpy.frombuffer(data, dtype=">i2")
    )
    assert encode(fmt, decode(fmt, data)) == data


def test_the_fakes_g711_decoders_agree_with_audioop() -> None:
    everything = bytes(range(256))
    assert alaw_decode(everything) == audioop.alaw2lin(everything, 2)
    assert decode_to_pcm16(everything, "PCMU") == audioop.ulaw2lin(everything, 2)


# ---- Pipecat's TelnyxFrameSerializer as the reference client -------------------------------------


async def _pipecat(encoding: str) -> Any:
    from pipecat.serializers.telnyx import TelnyxFrameSerializer

    params = TelnyxFrameSerializer.InputParams(auto_hang_up=False, sample_rate=8000)
    serializer = TelnyxFrameSerializer("stream", encoding, encoding, params=params)
    await serializer.setup(cast(Any, SimpleNamespace(audio_in_sample_rate=8000)))
    return serializer


@pytest.mark.parametrize("encoding", ["PCMU", "PCMA"])
async def test_pipecat_reads_the_fakes_media_as_our_codec_does(encoding: str) -> None:
    from pipecat.frames.frames import InputAudioRawFrame, InputDTMFFrame

    serializer = await _pipecat(encoding)
    fake, codec = _fake(encoding), TelnyxCodec(bidirectional_codec=encoding)
    _start(codec, fake)
    pcm = sine_pcm16(440, 0.02, 8000)
    frame = json.dumps(fake.media_message(encode_pcm16(pcm, encoding)))
    theirs = await serializer.deserialize(frame)
    assert isinstance(theirs, InputAudioRawFrame) and theirs.sample_rate == 8000
    ours = codec.parse(frame)
    assert isinstance(ours, InboundAudio)
    decoded = ulaw_to_pcm16(ours.payload) if encoding == "PCMU" else alaw_decode(ours.payload)
    assert theirs.audio == decoded == decode_to_pcm16(encode_pcm16(pcm, encoding), encoding)
    dtmf = json.dumps(fake.dtmf_message("7"))
    their_dtmf = await serializer.deserialize(dtmf)
    assert isinstance(their_dtmf, InputDTMFFrame) and their_dtmf.button.value == "7"
    assert codec.parse(dtmf) == DtmfReceived(fake.stream_id, "7")


@pytest.mark.parametrize("encoding", ["PCMU", "PCMA"])
async def test_what_pipecat_sends_is_what_our_codec_sends(encoding: str) -> None:
    from pipecat.frames.frames import InterruptionFrame, OutputAudioRawFrame

    serializer = await _pipecat(encoding)
    codec = TelnyxCodec(bidirectional_codec=encoding)
    start = _start(codec, _fake(encoding))
    pcm = sine_pcm16(300, 0.04, 8000, amplitude=0.3)
    theirs = json.loads(await serializer.serialize(OutputAudioRawFrame(pcm, 8000, 1)))
    encoded = pcm16_to_ulaw(pcm) if encoding == "PCMU" else pcm16_to_alaw(pcm)
    assert theirs == json.loads(codec.build_media(start, encoded))
    heard = decode_to_pcm16(base64.b64decode(theirs["media"]["payload"]), encoding)  # as the fake plays it
    assert heard == decode_to_pcm16(encoded, encoding)
    assert json.loads(await serializer.serialize(InterruptionFrame())) == json.loads(codec.build_clear(start))


async def test_pipecat_has_no_l16_so_l16_is_checked_against_numpy_only() -> None:
    """Pipecat 1.14's Telnyx serializer carries PCMU and PCMA only (it raises for L16); the L16 test
    above checks the byte order against numpy's big-endian decoding instead."""
    serializer = await _pipecat("L16")
    fake = _fake("L16", 16000)
    with pytest.raises(ValueError, match="Unsupported encoding"):
        await serializer.deserialize(json.dumps(fake.media_message(b"\x00\x01")))


@pytest.mark.parametrize("encoding", ["PCMU", "PCMA"])
async def test_pipecat_as_the_app_against_the_fake_over_a_real_websocket(encoding: str) -> None:
    """Pipecat's serializer is the whole app side of a live call with our fake Telnyx: it reads every
    frame the fake sends, and the fake plays what it writes and honours its clear."""
    from pipecat.frames.frames import (
        InputAudioRawFrame,
        InputDTMFFrame,
        InterruptionFrame,
        OutputAudioRawFrame,
    )
    from websockets.asyncio.server import ServerConnection, serve

    serializer = await _pipecat(encoding)
    caller, reply = sine_pcm16(440, 0.2, 8000), sine_pcm16(300, 0.2, 8000, amplitude=0.3)
    heard = bytearray()
    digits: list[str] = []

    async def app(ws: ServerConnection) -> None:
        async for raw in ws:
            frame = await serializer.deserialize(raw)
            if isinstance(frame, InputAudioRawFrame):
                heard.extend(frame.audio)
                if len(heard) == len(caller):
                    await ws.send(await serializer.serialize(OutputAudioRawFrame(reply, 8000, 1)))
                    await ws.send(json.dumps({"event": "mark", "mark": {"name": "reply"}}))
            elif isinstance(frame, InputDTMFFrame):
                digits.append(frame.button.value)
                await ws.send(await serializer.serialize(OutputAudioRawFrame(reply, 8000, 1)))
                await ws.send(json.dumps({"event": "mark", "mark": {"name": "unplayed"}}))
                await ws.send(await serializer.serialize(InterruptionFrame()))

    with anyio.fail_after(20):
        async with serve(app, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            fake = FakeTelnyxCall(
                f"ws://127.0.0.1:{port}",
                encoding=encoding,
                bidirectional_codec=encoding,
                playback_speed=math.inf,
            )
            async with fake:
                await fake.send_pcm(caller, 8000)
                await fake.wait_until(lambda: [m.name for m in fake.echoed_marks] == ["reply"])
                fake.pause_playback()
                await fake.send_dtmf("5")
                await fake.wait_until(lambda: fake.clears == 1)
    assert bytes(heard) == decode_to_pcm16(encode_pcm16(caller, encoding), encoding)
    assert digits == ["5"]
    assert fake.played_pcm16 == decode_to_pcm16(encode_pcm16(reply, encoding), encoding)  # not the 2nd
    assert [(m.name, m.flushed) for m in fake.echoed_marks] == [("reply", False), ("unplayed", True)]
    assert fake.errors == []
