"""TelnyxServer end to end over real WebSockets: a fake Telnyx call (built from Telnyx's docs) dials it
with PCMU, PCMA and L16; audio flows both ways, marks report what was played, clear drops the rest and
Telnyx's sent-back marks are not counted as heard, DTMF arrives, the stream token is checked (403), and
hang-up / transfer / DTMF go to the fake Call Control REST API."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import numpy
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from voiceagent.adapters.telnyx import TelnyxCodec, TelnyxMediaStream
from voiceagent.adapters.telnyx.fake import EchoedMark, FakeTelnyxCall, decode_to_pcm16, encode_pcm16
from voiceagent.adapters.telnyx.fake_rest import FakeTelnyxRest
from voiceagent.adapters.telnyx.server import TelnyxServer, stream_parameters
from voiceagent.audio import resample
from voiceagent.telephony import CallControl, CallControlError
from voiceagent.telephony.stream import MediaStream
from voiceagent.testing.tone import tone
from voiceagent.transport import Transport
from voiceagent.tts import AudioChunk

pytestmark = pytest.mark.anyio

TOKEN = "telnyx-stream-token-1f2e3d"
KEY = "KEY_telnyx_api_key_0042"
# (Telnyx codec, stream rate): PCMU and PCMA are 8 kHz; L16 here at 16 kHz, both ways.
FORMATS = [("PCMU", 8000), ("PCMA", 8000), ("L16", 16000)]

Handler = Callable[[MediaStream], Awaitable[None]]


def _server(handler: Handler, codec: str = "PCMU", rate: int = 8000, **kwargs: Any) -> TelnyxServer:
    kwargs.setdefault("api_key", None)
    return TelnyxServer(
        handler,
        stream_auth_token=TOKEN,
        bidirectional_codec=codec,
        bidirectional_sample_rate=rate,
        **kwargs,
    )


def _call(url: str, codec: str = "PCMU", rate: int = 8000, **kwargs: Any) -> FakeTelnyxCall:
    kwargs.setdefault("stream_auth_token", TOKEN)
    kwargs.setdefault("playback_speed", 50.0)
    return FakeTelnyxCall(
        url,
        encoding=codec,
        sample_rate=rate,
        bidirectional_codec=codec,
        bidirectional_sample_rate=rate,
        **kwargs,
    )


@pytest.mark.parametrize(("codec", "rate"), FORMATS)
async def test_audio_both_ways_and_marks_for_each_codec(codec: str, rate: int) -> None:
    seen: dict[str, Any] = {}
    caller_pcm = tone(0.4, rate)

    async def handler(stream: MediaStream) -> None:
        assert isinstance(stream, Transport) and isinstance(stream, CallControl)
        seen["start"] = (stream.call_id, stream.stream_id, dict(stream.custom_parameters))
        seen["rates"] = (stream.input_sample_rate, stream.output_sample_rate)
        received = bytearray()
        async for pcm in stream.audio_in():
            received += pcm
            if len(received) >= len(caller_pcm):
                break
        seen["caller"] = bytes(received)
        # 0.29 s is not a whole number of 20 ms frames: the mark flushes a padded partial frame.
        await stream.send_audio(AudioChunk(tone(0.29, 16000), 16000, "Hello there."))
        await stream.mark("greeting")
        async for name in stream.played_marks():
            seen["played"] = name
            break
        seen["heard"] = (stream.heard_text, stream.heard_seconds, stream.pending_marks)

    with anyio.fail_after(30):
        async with _server(handler, codec, rate) as server:
            async with _call(
                server.url, codec, rate, custom_parameters={"lang": "en"}, client_state="aGk="
            ) as call:
                await call.send_pcm(caller_pcm, rate)
                await call.wait_until(lambda: bool(call.echoed_marks))
                code, _ = await call.wait_closed()

    assert code == 1000
    assert seen["start"] == (call.call_control_id, call.stream_id, {"lang": "en", "client_state": "aGk="})
    assert seen["rates"] == (rate, rate)
    assert seen["caller"] == decode_to_pcm16(encode_pcm16(caller_pcm, codec), codec)  # exact for L16
    assert seen["played"] == "greeting"
    assert seen["heard"] == ("Hello there.", pytest.approx(0.29), ())
    media = [m for m in call.received if m["event"] == "media"]
    frame = rate // 50 * (2 if codec == "L16" else 1)
    assert [len(base64.b64decode(m["media"]["payload"])) for m in media] == [frame] * 15
    assert set(media[0]) == {"event", "media"} and call.received[-1] == {
        "event": "mark",
        "mark": {"name": "greeting"},
    }
    assert call.errors == []
    assert call.echoed_marks == [EchoedMark("greeting", flushed=False)]
    heard = numpy.frombuffer(call.played_pcm16, dtype="<i2").astype(float)
    assert len(heard) == 15 * rate // 50
    expected = numpy.frombuffer(resample(tone(0.29, 16000), 16000, rate), dtype="<i2").astype(float)
    window = slice(rate // 50, rate // 4)  # past the resampler's start-up
    assert numpy.corrcoef(heard[window], expected[window])[0, 1] > 0.95  # the tone, in the right byte order
    assert numpy.abs(heard[-(rate // 100) :]).max() < 10  # the silence padding of the last frame


async def test_clear_drops_unplayed_audio_and_sent_back_marks_do_not_count_as_heard() -> None:
    seen: dict[str, Any] = {}
    sent = anyio.Event()
    phone: list[FakeTelnyxCall] = []

    async def handler(stream: MediaStream) -> None:
        await stream.send_audio(AudioChunk(tone(0.2, 8000), 8000, "one "))
        await stream.mark("a")
        await stream.send_audio(AudioChunk(tone(0.2, 8000), 8000, "two "))
        await stream.mark("b")
        sent.set()
        marks = stream.played_marks()
        assert await anext(marks) == "a"
        assert stream.heard_text == "one " and stream.pending_marks == ("b",)
        await stream.clear()  # barge-in while "two" is still queued at Telnyx
        await stream.send_audio(AudioChunk(tone(0.1, 8000), 8000, "three"))
        await stream.mark("b")  # the same name again: Telnyx first sends back the flushed "b"
        assert await anext(marks) == "b"
        seen["played when reported"] = len(phone[0].played_payload)
        seen["heard"] = (stream.heard_text, stream.heard_seconds)

    with anyio.fail_after(30):
        async with _server(handler) as server:
            async with _call(server.url, start_paused=True) as call:
                phone.append(call)
                await sent.wait()
                await call.wait_until(lambda: len(call.received) == 2 * 10 + 2)
                call.play_until_mark("a")
                await call.wait_until(lambda: [m["event"] for m in call.received].count("mark") == 3)
                call.resume_playback()  # only now does "three" play: its "b" must not be reported before
                await call.wait_closed()

    assert seen["played when reported"] == 15 * 160
    assert seen["heard"] == ("one three", pytest.approx(0.3))
    assert call.echoed_marks == [EchoedMark("a", False), EchoedMark("b", True), EchoedMark("b", False)]
    assert len(call.played_payload) == 15 * 160  # "two" was never played
    assert call.clears == 1 and call.errors == []


async def test_dtmf_reaches_the_app_and_stop_ends_the_stream() -> None:
    digits: list[str] = []
    reason: list[str] = []

    async def handler(stream: MediaStream) -> None:
        async for digit in stream.dtmf():
            digits.append(digit)
        reason.append(await stream.wait_closed())

    with anyio.fail_after(30):
        async with _server(handler) as server:
            async with _call(server.url) as call:
                for digit in "1#*":
                    await call.send_dtmf(digit)
                await call.stop()
                await call.wait_closed()
    assert digits == ["1", "#", "*"] and reason == ["stop received"]


async def test_call_control_goes_to_the_telnyx_rest_api_with_the_calls_id() -> None:
    outcome: dict[str, Any] = {}

    async def handler(stream: MediaStream) -> None:
        await stream.send_dtmf("42")  # not on Telnyx's stream: through Call Control
        await stream.transfer("+15550100123")
        await stream.hang_up()
        with pytest.raises(CallControlError) as info:
            await stream.transfer("+15550100999")  # the call is over
        outcome["status"] = info.value.status_code

    with anyio.fail_after(30):
        async with FakeTelnyxRest(api_key=KEY) as rest:
            async with _server(handler, api_key=KEY, api_base_url=rest.base_url) as server:
                async with _call(server.url) as call:
                    rest.add_call(call.call_control_id)
                    await call.wait_closed()
    assert [(a.call_control_id, a.action, a.body) for a in rest.actions] == [
        (call.call_control_id, "send_dtmf", {"digits": "42"}),
        (call.call_control_id, "transfer", {"to": "+15550100123"}),
        (call.call_control_id, "hangup", {}),
    ]
    assert outcome["status"] == 422
    assert not any(m.get("event") == "dtmf" for m in call.received)  # nothing on the stream


async def test_without_call_control_hang_up_closes_the_stream_and_dtmf_out_is_refused() -> None:
    async def handler(stream: MediaStream) -> None:
        with pytest.raises(CallControlError):
            await stream.send_dtmf("1")
        await stream.hang_up()

    with anyio.fail_after(30):
        async with _server(handler) as server:
            async with _call(server.url) as call:
                code, _ = await call.wait_closed()
    assert code == 1000


async def test_the_stream_token_is_checked_by_default() -> None:
    async def handler(stream: MediaStream) -> None:
        await stream.wait_closed()

    with anyio.fail_after(30):
        async with _server(handler) as server:
            for headers in ({}, {"x-telnyx-streaming-auth-token": "wrong"}):
                with pytest.raises(InvalidStatus) as info:
                    async with connect(server.url, additional_headers=headers):
                        pass
                assert info.value.response.status_code == 403
            with pytest.raises(InvalidStatus) as info:
                async with connect(server.url.replace("/media", "/other")):
                    pass
            assert info.value.response.status_code == 404
            assert server.rejected_upgrades == 2
            async with _call(server.url) as call:
                await call.stop()
                await call.wait_closed()
            assert server.rejected_upgrades == 2


async def test_texml_streams_may_carry_the_token_in_the_url() -> None:
    async def handler(stream: MediaStream) -> None:
        await stream.wait_closed()

    with anyio.fail_after(30):
        async with _server(handler, query_param="token") as server:
            with pytest.raises(InvalidStatus):
                async with connect(server.url + "?token=nope"):
                    pass
            async with _call(server.url + f"?token={TOKEN}", stream_auth_token=None) as call:
                await call.stop()
                await call.wait_closed()
            assert server.rejected_upgrades == 1


async def test_no_token_refuses_to_start_unless_unchecked_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    async def handler(stream: MediaStream) -> None:
        await stream.wait_closed()

    monkeypatch.delenv("TELNYX_STREAM_AUTH_TOKEN", raising=False)
    with pytest.raises(ValueError, match="TELNYX_STREAM_AUTH_TOKEN"):
        TelnyxServer(handler)
    monkeypatch.setenv("TELNYX_STREAM_AUTH_TOKEN", TOKEN)
    assert TelnyxServer(handler, api_key=None).signed
    monkeypatch.delenv("TELNYX_STREAM_AUTH_TOKEN")
    with anyio.fail_after(30):
        async with TelnyxServer(handler, allow_unsigned=True, api_key=None) as server:
            assert not server.signed
            async with _call(server.url, stream_auth_token=None) as call:
                await call.stop()
                await call.wait_closed()


async def test_an_unsupported_codec_closes_that_call_before_the_handler() -> None:
    calls: list[MediaStream] = []

    async def handler(stream: MediaStream) -> None:
        calls.append(stream)

    with anyio.fail_after(30):
        async with _server(handler) as server:
            async with _call(server.url, "G722", 16000) as call:
                code, reason = await call.wait_closed()
    assert code == 1008 and "G722" in reason and calls == []


def test_stream_parameters_match_what_the_codec_expects() -> None:
    params = stream_parameters(
        "wss://bot.example.com/media", stream_auth_token=TOKEN, codec="L16", sample_rate=16000
    )
    assert params["stream_bidirectional_mode"] == "rtp" and params["stream_auth_token"] == TOKEN
    codec = TelnyxCodec(
        bidirectional_codec=params["stream_bidirectional_codec"],
        bidirectional_sample_rate=params["stream_bidirectional_sampling_rate"],
    )
    assert codec.provider == "telnyx"


async def test_bad_frames_close_only_that_call() -> None:
    started: list[str] = []
    both = anyio.Event()

    async def handler(stream: MediaStream) -> None:
        started.append(stream.call_id)
        if len(started) == 2:
            both.set()
        await stream.wait_closed()

    with anyio.fail_after(30):
        async with _server(handler, "L16", 16000) as server:
            async with _call(server.url, "L16", 16000, call_control_id="v3:bad") as bad:
                async with _call(server.url, "L16", 16000, call_control_id="v3:good") as good:
                    await both.wait()
                    await bad.send_payload(b"\x00\x01\x02")  # an L16 RTP payload is whole samples
                    code, reason = await bad.wait_closed()
                    assert code == 1008 and "odd length" in reason
                    await good.send_json(
                        {"event": "media", "media": {"payload": "not base64"}, "stream_id": good.stream_id}
                    )
                    code, reason = await good.wait_closed()
                    assert code == 1008 and "base64" in reason
    assert sorted(started) == ["v3:bad", "v3:good"]


async def test_frames_without_a_stream_id_are_this_calls_and_a_foreign_id_ends_it() -> None:
    digits: list[str] = []

    async def handler(stream: MediaStream) -> None:
        assert isinstance(stream, TelnyxMediaStream) and stream.call_control_id == stream.call_id
        async for digit in stream.dtmf():
            digits.append(digit)

    with anyio.fail_after(30):
        async with _server(handler) as server:
            async with _call(server.url) as call:
                await call.send_json({"event": "dtmf", "dtmf": {"digit": "3"}})  # names no stream
                await call.send_json({"event": "dtmf", "stream_id": "someone-else", "dtmf": {"digit": "4"}})
                code, reason = await call.wait_closed()
    assert digits == ["3"]
    assert code == 1008 and "someone-else" in reason
