"""The generic media-stream layer (MediaStream, MediaStreamServer, FakeMediaCall) through a tiny JSON codec
written here: formats and framing, silence padding, marks and clear in both echo modes, DTMF, call control
and upgrade auth, over a real loopback WebSocket."""

from __future__ import annotations

import base64
import itertools
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from voiceagent.audio import alaw_to_pcm16, pcm16_to_alaw, pcm16_to_ulaw, resample, ulaw_to_pcm16
from voiceagent.telephony import (
    AudioFormat,
    CallControl,
    CallControlError,
    ClearDone,
    DtmfReceived,
    Encoding,
    Ignored,
    InboundAudio,
    MarkPlayed,
    MediaStream,
    MediaStreamClosed,
    MediaStreamProtocolError,
    MediaStreamServer,
    Preamble,
    ProviderEvent,
    StreamStart,
    StreamStop,
    UpgradeRequest,
    frame_bytes,
)
from voiceagent.telephony.fake_call import BotFrame, EchoedMark, FakeMediaCall, Received
from voiceagent.transport import OwnsOutput, Transport
from voiceagent.tts import AudioChunk

pytestmark = pytest.mark.anyio

SECRET = "test-secret"
STREAM = "st-1"


def tone(seconds: float, rate: int, freq: float = 440.0) -> bytes:
    n = int(seconds * rate)
    return struct.pack(f"<{n}h", *(int(8000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)))


# ---- a tiny provider: its codec (the adapter side) and its wire (the provider side) ---------------


def _fmt(doc: Any) -> AudioFormat:
    if not isinstance(doc, dict) or doc.get("enc") not in ("pcmu", "pcma", "l16", "l16be"):
        raise MediaStreamProtocolError("begin: bad format")
    return AudioFormat(doc["enc"], int(doc["rate"]))


class JsonCodec:
    """A made-up provider: {"type": "begin" | "audio" | "played" | "key" | "cleared" | "end", ...}."""

    provider = "json"

    def __init__(self, *, echoes_cleared_marks: bool = True, dtmf_on_stream: bool = False) -> None:
        self.echoes_cleared_marks = echoes_cleared_marks
        self.dtmf_on_stream = dtmf_on_stream

    def parse(self, raw: str | bytes) -> ProviderEvent:
        try:
            doc = json.loads(raw)
            kind = doc["type"]
            if kind == "hello":
                return Preamble("hello")
            if kind == "begin":
                return StreamStart(doc["stream"], doc["call"], _fmt(doc["in"]), _fmt(doc["out"]))
            if kind == "audio":
                return InboundAudio(doc["stream"], base64.b64decode(doc["data"], validate=True))
            if kind == "played":
                return MarkPlayed(doc["stream"], doc["name"])
            if kind == "key":
                return DtmfReceived(doc["stream"], doc["digit"])
            if kind == "cleared":
                return ClearDone(doc["stream"])
            if kind == "end":
                return StreamStop(doc["stream"], doc.get("why", ""))
            return Ignored(str(kind))
        except MediaStreamProtocolError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise MediaStreamProtocolError(f"bad frame: {exc!r}") from None

    def check_start(self, start: StreamStart) -> None:
        if start.outbound_format.sample_rate > 48000:
            raise MediaStreamProtocolError("begin: rate too high")

    def build_media(self, start: StreamStart, payload: bytes) -> str:
        data = base64.b64encode(payload).decode()
        return json.dumps({"type": "play", "stream": start.stream_id, "data": data})

    def build_mark(self, start: StreamStart, name: str) -> str:
        return json.dumps({"type": "checkpoint", "stream": start.stream_id, "name": name})

    def build_clear(self, start: StreamStart) -> str:
        return json.dumps({"type": "flush", "stream": start.stream_id})

    def build_dtmf(self, start: StreamStart, digits: str) -> str | None:
        if not self.dtmf_on_stream:
            return None
        return json.dumps({"type": "tones", "stream": start.stream_id, "digits": digits})


class HeaderAuth:
    def check(self, request: UpgradeRequest) -> str | None:
        return None if request.get_all("X-Secret") == [SECRET] else "no or wrong X-Secret"


class JsonWire:
    """The made-up provider's side: what it sends, and how it reads the app's frames."""

    def __init__(
        self,
        inbound: AudioFormat,
        outbound: AudioFormat | None = None,
        *,
        echoes_cleared_marks: bool = True,
        confirms_clear: bool = False,
        secret: str | None = SECRET,
    ) -> None:
        self.inbound_format = inbound
        self.outbound_format = outbound or inbound
        self.echoes_cleared_marks = echoes_cleared_marks
        self.confirms_clear = confirms_clear
        self.secret = secret

    def upgrade_headers(self) -> Sequence[tuple[str, str]]:
        return [] if self.secret is None else [("X-Secret", self.secret)]

    def handshake(self) -> list[str]:
        begin = {
            "type": "begin",
            "stream": STREAM,
            "call": "call-1",
            "in": {"enc": self.inbound_format.encoding, "rate": self.inbound_format.sample_rate},
            "out": {"enc": self.outbound_format.encoding, "rate": self.outbound_format.sample_rate},
        }
        return [json.dumps({"type": "hello"}), json.dumps(begin)]

    def media(self, payload: bytes) -> str:
        return json.dumps({"type": "audio", "stream": STREAM, "data": base64.b64encode(payload).decode()})

    def dtmf(self, digit: str) -> str:
        return json.dumps({"type": "key", "stream": STREAM, "digit": digit})

    def stop(self) -> str:
        return json.dumps({"type": "end", "stream": STREAM})

    def mark_played(self, name: str) -> str:
        return json.dumps({"type": "played", "stream": STREAM, "name": name})

    def clear_done(self) -> str | None:
        return json.dumps({"type": "cleared", "stream": STREAM}) if self.confirms_clear else None

    def read(self, raw: str | bytes) -> Received:
        doc = json.loads(raw)
        kinds = {"play": "media", "checkpoint": "mark", "flush": "clear", "tones": "dtmf"}
        if doc.get("stream") != STREAM or doc.get("type") not in kinds:
            return Received(doc, error=f"not understood: {raw!r}")
        if doc["type"] == "play":
            return Received(doc, BotFrame("media", payload=base64.b64decode(doc["data"])))
        if doc["type"] == "checkpoint":
            return Received(doc, BotFrame("mark", name=doc["name"]))
        if doc["type"] == "tones":
            return Received(doc, BotFrame("dtmf", name=doc["digits"]))
        return Received(doc, BotFrame("clear"))


def server(handler: Any, codec: JsonCodec | None = None, **kwargs: Any) -> MediaStreamServer[MediaStream]:
    return MediaStreamServer(handler, codec=codec or JsonCodec(), auth=HeaderAuth(), **kwargs)


def _swap(data: bytes) -> bytes:  # numpy's, not the layer's: big-endian <-> little-endian int16
    return numpy.frombuffer(data, dtype=">i2").astype("<i2").tobytes()


def decode(encoding: Encoding, data: bytes) -> bytes:
    return {"pcmu": ulaw_to_pcm16, "pcma": alaw_to_pcm16, "l16": bytes, "l16be": _swap}[encoding](data)


def encode(encoding: Encoding, pcm: bytes) -> bytes:
    return {"pcmu": pcm16_to_ulaw, "pcma": pcm16_to_alaw, "l16": bytes, "l16be": _swap}[encoding](pcm)


# ---- formats and framing --------------------------------------------------------------------------

FORMATS = [
    (AudioFormat("pcma", 16000), AudioFormat("pcma", 16000)),
    (AudioFormat("l16", 16000), AudioFormat("l16", 16000)),
    (AudioFormat("pcmu", 8000), AudioFormat("pcmu", 8000)),
    (AudioFormat("pcmu", 8000), AudioFormat("l16", 24000)),  # the provider plays back another format
    (AudioFormat("l16be", 16000), AudioFormat("l16be", 24000)),
]


@pytest.mark.parametrize(("inbound", "outbound"), FORMATS, ids=lambda f: f"{f.encoding}-{f.sample_rate}")
async def test_audio_is_coded_framed_and_padded_in_the_streams_formats(
    inbound: AudioFormat, outbound: AudioFormat
) -> None:
    seen: dict[str, Any] = {}
    caller = tone(0.2, inbound.sample_rate)

    async def handler(stream: MediaStream) -> None:
        assert isinstance(stream, Transport) and isinstance(stream, OwnsOutput)
        assert isinstance(stream, CallControl)
        seen["rates"] = (stream.input_sample_rate, stream.output.sample_rate)
        received = bytearray()
        async for pcm in stream.audio_in():
            received += pcm
            if len(received) >= len(caller):
                break
        seen["caller"] = bytes(received)
        # 0.29 s is 14.5 frames of 20 ms: the mark must flush a padded partial frame.
        await stream.send_audio(AudioChunk(tone(0.29, 16000), 16000, "Hello there."))
        await stream.mark("greeting")
        assert await anext(stream.played_marks()) == "greeting"
        seen["heard"] = (stream.heard_text, stream.heard_seconds)

    async with server(handler) as srv, FakeMediaCall(srv.url, JsonWire(inbound, outbound)) as call:
        await call.send_pcm(caller, inbound.sample_rate)
        await call.wait_closed()

    assert seen["rates"] == (inbound.sample_rate, outbound.sample_rate)
    assert seen["caller"] == decode(inbound.encoding, encode(inbound.encoding, caller))
    assert seen["heard"] == ("Hello there.", pytest.approx(0.29))
    size = frame_bytes(outbound)
    assert size == outbound.sample_rate // 50 * (2 if outbound.encoding in ("l16", "l16be") else 1)
    media = [f.payload for f in call.frames if f.kind == "media"]
    assert len(media) == 15 and all(len(m) == size for m in media)
    assert call.frames[-1] == BotFrame("mark", name="greeting") and call.errors == []
    # The bot's audio arrives once resampled, whole and in order; the padding is the encoding's silence.
    expected = encode(outbound.encoding, resample(tone(0.29, 16000), 16000, outbound.sample_rate))
    played = bytes(call.played_audio)
    assert len(played) == 15 * size
    assert played[: len(expected)] == expected
    # Each encoding's zero sample.
    silence = {"pcmu": 0xFF, "pcma": 0xD5, "l16": 0x00, "l16be": 0x00}[outbound.encoding]
    assert set(played[len(expected) :]) == {silence}


async def test_l16_payloads_split_mid_sample_lose_no_byte() -> None:
    seen: list[bytes] = []
    pcm = tone(0.02, 16000)

    async def handler(stream: MediaStream) -> None:
        async for chunk in stream.audio_in():
            seen.append(chunk)
            if sum(map(len, seen)) == len(pcm):
                return

    async with server(handler) as srv:
        async with FakeMediaCall(srv.url, JsonWire(AudioFormat("l16", 16000))) as call:
            for piece in (pcm[:101], pcm[101:333], pcm[333:]):
                await call.send_raw(call.wire.media(piece))
            await call.wait_closed()
    assert b"".join(seen) == pcm and all(len(c) % 2 == 0 for c in seen)


async def test_l16be_is_decoded_from_big_endian_and_an_odd_payload_ends_the_call() -> None:
    """Big-endian L16 (RTP's) reaches the app as little-endian PCM16; its payloads are whole samples,
    so one of odd length is a protocol error, not a byte held over as for little-endian l16."""
    seen: list[bytes] = []
    samples = numpy.array([1, -2, 300, -32768, 32767, 0, 258, -258], dtype=numpy.int16)

    async def handler(stream: MediaStream) -> None:
        async for chunk in stream.audio_in():
            seen.append(chunk)

    async with server(handler) as srv:
        async with FakeMediaCall(srv.url, JsonWire(AudioFormat("l16be", 16000))) as call:
            await call.send_raw(call.wire.media(samples.astype(">i2").tobytes()))
            await call.send_raw(call.wire.media(b"\x00\x01\x02"))
            code, reason = await call.wait_closed()
    assert numpy.array_equal(numpy.frombuffer(b"".join(seen), dtype="<i2"), samples)
    assert code == 1008 and "odd length 3" in reason


# ---- marks and clear ------------------------------------------------------------------------------


@pytest.mark.parametrize("echoes_cleared", [True, False], ids=["echoes-cleared", "forgets-cleared"])
async def test_clear_drops_unplayed_audio_and_flushed_marks_never_count(echoes_cleared: bool) -> None:
    seen: dict[str, Any] = {}
    sent = anyio.Event()
    fmt = AudioFormat("pcma", 16000)

    async def handler(stream: MediaStream) -> None:
        await stream.send_audio(AudioChunk(tone(0.2, 16000), 16000, "one "))
        await stream.mark("a")
        await stream.send_audio(AudioChunk(tone(0.2, 16000), 16000, "two "))
        await stream.mark("b")
        sent.set()
        marks = stream.played_marks()
        assert await anext(marks) == "a"
        assert stream.heard_text == "one " and stream.pending_marks == ("b",)
        await stream.clear()  # barge-in while "two" is still queued at the provider
        assert stream.pending_marks == ()
        await stream.send_audio(AudioChunk(tone(0.1, 16000), 16000, "three"))
        # The same name again: only the ledger's echo mode tells its echo from the flushed one's.
        await stream.mark("b")
        with anyio.fail_after(10):
            assert await anext(marks) == "b"  # the new "b": the flushed one is never reported played
        seen["heard"] = (stream.heard_text, stream.heard_seconds)

    codec = JsonCodec(echoes_cleared_marks=echoes_cleared)
    wire = JsonWire(fmt, echoes_cleared_marks=echoes_cleared, confirms_clear=not echoes_cleared)
    async with server(handler, codec) as srv:
        async with FakeMediaCall(srv.url, wire, start_paused=True) as call:
            await sent.wait()
            await call.wait_until(lambda: len(call.frames) == 2 * 10 + 2)
            call.play_until_mark("a")
            await call.wait_until(lambda: call.clears == 1)
            call.resume_playback()
            await call.wait_closed()

    assert seen["heard"] == ("one three", pytest.approx(0.3))
    flushed = [EchoedMark("b", True)] if echoes_cleared else []
    assert call.echoed_marks == [EchoedMark("a", False), *flushed, EchoedMark("b", False)]
    assert len(call.played_audio) == 15 * frame_bytes(fmt)  # "two" was never played
    assert call.errors == []


# ---- DTMF, stop, protocol errors ------------------------------------------------------------------


async def test_dtmf_arrives_and_stop_ends_the_stream_with_its_reason() -> None:
    seen: dict[str, Any] = {}

    async def handler(stream: MediaStream) -> None:
        seen["digits"] = [d async for d in stream.dtmf()]
        seen["reason"] = await stream.wait_closed()
        with pytest.raises(MediaStreamClosed):
            await stream.send_audio(AudioChunk(tone(0.1, 8000), 8000))

    async with server(handler) as srv:
        async with FakeMediaCall(srv.url, JsonWire(AudioFormat("pcmu", 8000))) as call:
            for digit in "1#A":
                await call.send_dtmf(digit)
            await call.send_raw(json.dumps({"type": "end", "stream": STREAM, "why": "caller hung up"}))
            assert (await call.wait_closed())[0] == 1000
    assert seen == {"digits": ["1", "#", "A"], "reason": "stop received (caller hung up)"}


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ({"type": "audio", "stream": "other", "data": ""}, "does not match"),
        ({"type": "begin", "stream": STREAM, "call": "c", "in": {"enc": "pcmu", "rate": 8000}}, "bad frame"),
        ({"type": "cleared", "stream": "other"}, "does not match"),
    ],
)
async def test_out_of_protocol_frames_close_the_call_with_1008(frame: dict[str, Any], reason: str) -> None:
    reasons: list[str] = []

    async def handler(stream: MediaStream) -> None:
        reasons.append(await stream.wait_closed())

    async with server(handler) as srv:
        async with FakeMediaCall(srv.url, JsonWire(AudioFormat("pcmu", 8000))) as call:
            await call.send_json({"type": "someday"})  # unknown types are ignored
            await call.send_json(frame)
            code, text = await call.wait_closed()
    assert code == 1008 and reason in text and reason in reasons[0]


async def test_frames_naming_no_stream_are_this_calls_and_another_stream_ends_it() -> None:
    digits: list[str] = []
    pending: list[tuple[str, ...]] = []

    async def handler(stream: MediaStream) -> None:
        await stream.send_audio(AudioChunk(tone(0.02, 8000), 8000))
        await stream.mark("m")
        async for digit in stream.dtmf():
            digits.append(digit)
        pending.append(stream.pending_marks)  # () only if the echo that named no stream counted

    async with server(handler) as srv:
        async with FakeMediaCall(srv.url, JsonWire(AudioFormat("pcmu", 8000)), start_paused=True) as call:
            await call.wait_until(lambda: any(f.kind == "mark" for f in call.frames))
            await call.send_json({"type": "played", "stream": "", "name": "m"})
            await call.send_json({"type": "audio", "stream": "", "data": ""})
            await call.send_json({"type": "key", "stream": "", "digit": "3"})
            await call.send_json({"type": "cleared", "stream": ""})
            await call.send_json({"type": "key", "stream": "someone-else", "digit": "4"})
            code, reason = await call.wait_closed()
    assert digits == ["3"] and pending == [()]
    assert code == 1008 and "someone-else" in reason


async def test_a_start_the_codec_cannot_carry_is_refused_before_the_handler() -> None:
    calls: list[str] = []

    async def handler(stream: MediaStream) -> None:
        calls.append(stream.call_id)

    wire = JsonWire(AudioFormat("l16", 96000))
    async with server(handler) as srv, FakeMediaCall(srv.url, wire) as call:
        assert await call.wait_closed() == (1008, "begin: rate too high")
    assert calls == []


# ---- call control ---------------------------------------------------------------------------------


async def test_hang_up_without_control_closes_the_stream() -> None:
    seen: dict[str, Any] = {}

    async def handler(stream: MediaStream) -> None:
        await stream.hang_up()
        seen["reason"] = await stream.wait_closed()

    with anyio.fail_after(10):  # a hang-up that does not close would leave both sides waiting
        async with server(handler) as srv:
            async with FakeMediaCall(srv.url, JsonWire(AudioFormat("pcmu", 8000))) as call:
                assert await call.wait_closed() == (1000, "call ended")
    assert seen["reason"] == "hung up by the application"


async def test_without_control_transfer_and_dtmf_out_raise_a_clear_error() -> None:
    errors: list[str] = []

    async def handler(stream: MediaStream) -> None:
        with pytest.raises(CallControlError) as transfer:
            await stream.transfer("+15550100")
        with pytest.raises(CallControlError) as dtmf:
            await stream.send_dtmf("12")
        with pytest.raises(ValueError):
            await stream.send_dtmf("1x")
        errors.extend([transfer.value.reason, dtmf.value.reason])

    async with server(handler) as srv:
        async with FakeMediaCall(srv.url, JsonWire(AudioFormat("pcmu", 8000))) as call:
            await call.wait_closed()
    assert "needs call control (REST credentials)" in errors[0] and "json" in errors[0]
    assert "cannot send DTMF" in errors[1]


async def test_dtmf_out_goes_on_the_stream_where_the_codec_carries_it() -> None:
    async def handler(stream: MediaStream) -> None:
        await stream.send_dtmf("12#")

    codec = JsonCodec(dtmf_on_stream=True)
    async with server(handler, codec) as srv:
        async with FakeMediaCall(srv.url, JsonWire(AudioFormat("pcmu", 8000))) as call:
            await call.wait_closed()
    assert call.dtmf_sent == ["12#"] and call.errors == []


@dataclass
class RecordingControl:
    start: StreamStart
    calls: list[tuple[str, str]] = field(default_factory=list)

    async def hang_up(self) -> None:
        self.calls.append(("hang_up", ""))

    async def transfer(self, to: str) -> None:
        self.calls.append(("transfer", to))

    async def send_dtmf(self, digits: str) -> None:
        self.calls.append(("send_dtmf", digits))


async def test_with_a_control_the_stream_delegates_to_it() -> None:
    controls: list[RecordingControl] = []
    closed_by_us: list[bool] = []

    def control_factory(start: StreamStart) -> RecordingControl:
        controls.append(RecordingControl(start))
        return controls[-1]

    async def handler(stream: MediaStream) -> None:
        assert stream.control is controls[0]
        await stream.transfer("sip:desk@example.com")
        await stream.send_dtmf("9")
        await stream.hang_up()
        closed_by_us.append(stream.closed)

    async with server(handler, control_factory=control_factory) as srv:
        async with FakeMediaCall(srv.url, JsonWire(AudioFormat("pcmu", 8000))) as call:
            await call.wait_closed()
    [control] = controls
    assert control.start.call_id == "call-1" and control.start.stream_id == STREAM
    assert control.calls == [("transfer", "sip:desk@example.com"), ("send_dtmf", "9"), ("hang_up", "")]
    assert closed_by_us == [False]  # the provider's REST hang-up ends the call, not the stream
    assert call.dtmf_sent == []


# ---- upgrade auth ---------------------------------------------------------------------------------


async def test_upgrades_failing_auth_get_403_and_are_counted() -> None:
    calls: list[str] = []

    async def handler(stream: MediaStream) -> None:
        calls.append(stream.call_id)

    async with server(handler) as srv:
        for headers in ([], [("X-Secret", "wrong")], [("X-Secret", SECRET)] * 2):
            with pytest.raises(InvalidStatus) as info:
                await connect(srv.url, additional_headers=headers)
            assert info.value.response.status_code == 403
        with pytest.raises(InvalidStatus) as info:
            await connect(srv.url.replace("/media", "/other"), additional_headers=[("X-Secret", SECRET)])
        assert info.value.response.status_code == 404
        assert srv.rejected_upgrades == 3 and srv.signed
        async with FakeMediaCall(srv.url, JsonWire(AudioFormat("pcmu", 8000))) as call:
            await call.stop()
            await call.wait_closed()
    assert calls == ["call-1"]


async def test_no_auth_refuses_to_start_unless_unsigned_is_allowed() -> None:
    async def handler(stream: MediaStream) -> None:
        await stream.wait_closed()

    with pytest.raises(ValueError, match="allow_unsigned"):
        MediaStreamServer(handler, codec=JsonCodec(), auth=None)
    async with MediaStreamServer(handler, codec=JsonCodec(), auth=None, allow_unsigned=True) as srv:
        assert not srv.signed
        async with FakeMediaCall(srv.url, JsonWire(AudioFormat("pcmu", 8000), secret=None)) as call:
            await call.stop()
            assert (await call.wait_closed())[0] == 1000


async def test_one_calls_failure_leaves_the_others_running() -> None:
    ids = itertools.count()

    async def handler(stream: MediaStream) -> None:
        if next(ids) == 0:
            raise RuntimeError("boom")
        await stream.wait_closed()

    async with server(handler) as srv:
        wire = JsonWire(AudioFormat("pcmu", 8000))
        async with FakeMediaCall(srv.url, wire) as first:
            assert (await first.wait_closed())[0] == 1011
        async with FakeMediaCall(srv.url, wire) as second:
            await second.stop()
            assert (await second.wait_closed())[0] == 1000


async def test_wait_idle_returns_once_every_call_and_its_clean_up_has_finished() -> None:
    # The caller hangs up first; the handler still has clean-up to do (an STT's last words, say).
    # Leaving the server's ``async with`` then would cancel that clean-up: wait_idle waits for it.
    in_clean_up, clean_up = anyio.Event(), anyio.Event()
    finished: list[str] = []

    async def handler(stream: MediaStream) -> None:
        await stream.wait_closed()
        in_clean_up.set()
        await clean_up.wait()
        finished.append(stream.call_id)

    with anyio.fail_after(10):
        async with server(handler) as srv:
            await srv.wait_idle()  # no call yet: at once
            async with FakeMediaCall(srv.url, JsonWire(AudioFormat("pcmu", 8000))) as call:
                await call.stop()
            await in_clean_up.wait()
            with anyio.move_on_after(0.2) as waiting:
                await srv.wait_idle()  # a call is still running: it must not return
            assert waiting.cancelled_caught and not finished
            clean_up.set()
            await srv.wait_idle()
            assert len(finished) == 1 and srv.active_calls == 0
