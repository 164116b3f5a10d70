"""TwilioServer + TwilioMediaStream against the scripted fake Twilio over a real loopback WebSocket."""

from __future__ import annotations

import base64
import json
import logging
import math
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from voiceagent.adapters.twilio import (
    TwilioMediaStream,
    TwilioServer,
    TwilioStreamClosed,
    compute_signature,
)
from voiceagent.adapters.twilio.fake_call import EchoedMark, FakeTwilioCall, twilio_signature
from voiceagent.audio import pcm16_to_ulaw, ulaw_to_pcm16
from voiceagent.transport import Transport
from voiceagent.tts import AudioChunk

pytestmark = pytest.mark.anyio

TOKEN = "test-auth-token"  # the fake Twilio signs every upgrade with it, as Twilio does with yours


def tone(seconds: float, rate: int, freq: float = 440.0) -> bytes:
    n = int(seconds * rate)
    return struct.pack(f"<{n}h", *(int(8000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)))


def mulaw_roundtrip(pcm8k: bytes) -> bytes:
    return ulaw_to_pcm16(pcm16_to_ulaw(pcm8k))


Handler = Callable[[TwilioMediaStream], Awaitable[None]]


async def test_stream_is_a_transport_and_carries_audio_both_ways() -> None:
    seen: dict[str, Any] = {}
    caller_pcm = tone(0.5, 8000)

    async def handler(stream: TwilioMediaStream) -> None:
        assert isinstance(stream, Transport)
        seen["params"] = dict(stream.custom_parameters)
        seen["sids"] = (stream.stream_sid, stream.call_sid)
        received = bytearray()
        async for pcm in stream.audio_in():
            received += pcm
            if len(received) >= len(caller_pcm):
                break
        seen["caller"] = bytes(received)
        # 0.29 s at 16 kHz is 14.5 frames at 8 kHz, so the mark must flush a padded partial frame.
        await stream.send_audio(AudioChunk(tone(0.29, 16000), 16000, "Hello there."))
        await stream.mark("greeting")
        async for name in stream.played_marks():
            seen["played"] = name
            break
        seen["heard"] = (stream.heard_text, stream.heard_seconds, stream.pending_marks)

    async with TwilioServer(handler, auth_token=TOKEN) as server:
        async with FakeTwilioCall(
            server.url, auth_token=TOKEN, custom_parameters={"caller": "+15550100", "lang": "en"}
        ) as call:
            await call.send_pcm(caller_pcm, 8000)
            await call.wait_until(lambda: bool(call.echoed_marks))
            code, _ = await call.wait_closed()

    assert code == 1000
    assert seen["params"] == {"caller": "+15550100", "lang": "en"}
    assert seen["sids"] == (call.stream_sid, call.call_sid)
    assert seen["caller"] == mulaw_roundtrip(caller_pcm)
    assert seen["played"] == "greeting"
    assert seen["heard"] == ("Hello there.", pytest.approx(0.29), ())
    media = [m for m in call.received if m["event"] == "media"]
    assert all(len(base64.b64decode(m["media"]["payload"])) == 160 for m in media)
    assert len(media) == 15 and call.received[-1]["event"] == "mark"
    assert call.errors == []
    assert call.echoed_marks == [EchoedMark("greeting", flushed=False)]
    assert len(call.played_mulaw) == 15 * 160
    assert call.played_mulaw.endswith(b"\xff" * 40)  # silence padding of the last frame


async def test_clear_drops_unplayed_audio_and_flushed_marks_do_not_count_as_heard() -> None:
    seen: dict[str, Any] = {}
    sent = anyio.Event()

    async def handler(stream: TwilioMediaStream) -> None:
        await stream.send_audio(AudioChunk(tone(0.2, 8000), 8000, "one "))
        await stream.mark("a")
        await stream.send_audio(AudioChunk(tone(0.2, 8000), 8000, "two "))
        await stream.mark("b")
        sent.set()
        marks = stream.played_marks()
        assert await anext(marks) == "a"
        assert stream.heard_text == "one " and stream.pending_marks == ("b",)
        await stream.clear()  # barge-in while "two" is still queued at Twilio
        await stream.send_audio(AudioChunk(tone(0.1, 8000), 8000, "three"))
        await stream.mark("c")
        # "b" is echoed (flushed) before "c" but must not be reported as played.
        assert await anext(marks) == "c"
        seen["heard"] = stream.heard_text
        seen["heard_seconds"] = stream.heard_seconds

    async with TwilioServer(handler, auth_token=TOKEN) as server:
        async with FakeTwilioCall(server.url, auth_token=TOKEN, start_paused=True) as call:
            await sent.wait()
            await call.wait_until(lambda: len(call.received) == 2 * 10 + 2)
            call.play_until_mark("a")
            await call.wait_until(lambda: call.clears == 1)
            call.resume_playback()
            await call.wait_closed()

    assert seen["heard"] == "one three"
    assert seen["heard_seconds"] == pytest.approx(0.3)
    assert call.echoed_marks == [EchoedMark("a", False), EchoedMark("b", True), EchoedMark("c", False)]
    assert len(call.played_mulaw) == 15 * 160  # "two" was never played
    assert [m["event"] for m in call.received].count("clear") == 1
    assert call.errors == []


async def test_the_calls_own_output_reads_the_streams_mark_ledger() -> None:
    seen: dict[str, Any] = {}
    sent = anyio.Event()

    async def handler(stream: TwilioMediaStream) -> None:
        output = stream.output
        assert output is stream.output and output.sample_rate == 8000
        async with anyio.create_task_group() as tg:
            tg.start_soon(output.run)
            await output.write(AudioChunk(tone(0.2, 8000), 8000, "one "))
            await output.write(AudioChunk(tone(0.2, 8000), 8000, "two "))
            sent.set()
            with anyio.fail_after(10):
                # Polled: the first mark's echo moves the playhead; no event is exposed for it.
                while output.played_seconds == 0:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            seen["first"] = (output.played_seconds, stream.heard_seconds, output.written_seconds)
            await output.clear()  # "two" is dropped: its flushed mark's echo must not count
            seen["after_clear"] = output.written_seconds
            await output.write(AudioChunk(tone(0.1, 8000), 8000, "three"))
            await output.wait_played()
            seen["end"] = (output.played_seconds, stream.heard_seconds, output.heard_text)
            tg.cancel_scope.cancel()

    async with TwilioServer(handler, auth_token=TOKEN) as server:
        async with FakeTwilioCall(server.url, auth_token=TOKEN, start_paused=True) as call:
            await sent.wait()
            await call.wait_until(lambda: len(call.received) == 2 * 10 + 2)
            call.play_until_mark(call.received[10]["mark"]["name"])
            await call.wait_until(lambda: call.clears == 1)
            call.resume_playback()
            await call.wait_closed()

    assert seen["first"] == (pytest.approx(0.2), pytest.approx(0.2), pytest.approx(0.4))
    assert seen["after_clear"] == pytest.approx(0.2)
    assert seen["end"] == (pytest.approx(0.3), pytest.approx(0.3), "one three")
    assert [m.flushed for m in call.echoed_marks] == [False, True, False]


async def test_dtmf_and_stop_end_the_stream() -> None:
    seen: dict[str, Any] = {}

    async def handler(stream: TwilioMediaStream) -> None:
        digits = [d async for d in stream.dtmf()]
        seen["digits"] = digits
        seen["reason"] = await stream.wait_closed()
        with pytest.raises(TwilioStreamClosed):
            await stream.send_audio(AudioChunk(tone(0.1, 8000), 8000))
        seen["audio_after_stop"] = [x async for x in stream.audio_in()]

    async with TwilioServer(handler, auth_token=TOKEN) as server:
        async with FakeTwilioCall(server.url, auth_token=TOKEN) as call:
            await call.send_dtmf("1")
            await call.send_dtmf("#")
            await call.stop()
            await call.wait_closed()

    assert seen == {"digits": ["1", "#"], "reason": "stop received", "audio_after_stop": []}


async def test_slow_audio_consumer_loses_oldest_frames_but_not_marks() -> None:
    seen: dict[str, Any] = {}

    async def handler(stream: TwilioMediaStream) -> None:
        assert await anext(stream.dtmf()) == "5"  # dtmf is sent after all the media
        seen["frames"] = [stream._audio_rx.receive_nowait() for _ in range(3)]
        seen["dropped"] = stream.dropped_audio_frames

    frames = [bytes([i]) * 160 for i in range(10)]
    async with TwilioServer(handler, auth_token=TOKEN, audio_buffer_frames=3) as server:
        async with FakeTwilioCall(server.url, auth_token=TOKEN) as call:
            await call.send_mulaw(b"".join(frames))
            await call.send_dtmf("5")
            await call.wait_closed()

    assert seen["dropped"] == 7
    assert seen["frames"] == [ulaw_to_pcm16(f) for f in frames[7:]]


def _media(sid: str, payload: str) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": "3",
            "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload},
            "streamSid": sid,
        }
    )


BAD_INPUTS: dict[str, tuple[Callable[[FakeTwilioCall], Awaitable[None]], int | None, str]] = {
    "garbage": (lambda c: c.send_raw("\x00garbage{"), 1008, "not valid JSON"),
    "binary garbage": (lambda c: c.send_raw(b"\xff\xfe\x00"), 1008, "not valid JSON"),
    "bad base64": (lambda c: c.send_raw(_media(c.stream_sid, "@@@")), 1008, "not valid base64"),
    "wrong streamSid": (lambda c: c.send_raw(_media("MZother", "AAAA")), 1008, "does not match"),
    "second start": (lambda c: c.send_json(c.start_message()), 1008, "unexpected 'start'"),
    "oversized frame": (lambda c: c.send_raw(_media(c.stream_sid, "A" * 100_000)), 1009, "oversized frame"),
    "abrupt disconnect": (lambda c: _abort(c), None, "abrupt disconnect"),
}


async def _abort(call: FakeTwilioCall) -> None:
    assert call._ws is not None
    call._ws.transport.abort()


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
async def test_bad_input_closes_that_call_only(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="voiceagent")
    send_bad, expected_code, expected_reason = BAD_INPUTS[kind]
    reasons: dict[str, str] = {}
    bad_done = anyio.Event()

    async def handler(stream: TwilioMediaStream) -> None:
        heard = 0
        async for pcm in stream.audio_in():
            heard += len(pcm)
            if heard >= 3200:  # the good call: answer 0.2 s of caller audio with a marked reply
                await stream.send_audio(AudioChunk(tone(0.1, 8000), 8000, "ok"))
                await stream.mark("reply")
                assert await anext(stream.played_marks()) == "reply"
                heard = -(10**9)
        reasons[stream.call_sid] = await stream.wait_closed()
        if stream.call_sid == "CAbad":
            bad_done.set()

    async with TwilioServer(handler, auth_token=TOKEN) as server:
        async with (
            FakeTwilioCall(server.url, auth_token=TOKEN, call_sid="CAgood", stream_sid="MZgood") as good,
            FakeTwilioCall(server.url, auth_token=TOKEN, call_sid="CAbad", stream_sid="MZbad") as bad,
        ):
            await good.send_pcm(tone(0.1, 8000), 8000)
            await bad.send_pcm(tone(0.1, 8000), 8000)
            await send_bad(bad)
            code, _ = await bad.wait_closed()
            await anyio.lowlevel.checkpoint()
            await good.send_pcm(tone(0.1, 8000), 8000)
            await good.wait_until(lambda: bool(good.echoed_marks))
            await good.stop()
            assert (await good.wait_closed())[0] == 1000
            await bad_done.wait()

    if expected_code is not None:
        assert code == expected_code
    assert expected_reason in reasons["CAbad"]
    assert reasons["CAgood"] == "stop received"
    assert good.echoed_marks == [EchoedMark("reply", False)] and good.errors == []
    assert any(
        expected_reason in r.getMessage()
        and getattr(r, "session", "") == "CAbad"
        and r.levelno >= logging.INFO
        for r in caplog.records
    )


async def test_garbage_before_start_never_reaches_the_handler(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="voiceagent")
    calls: list[str] = []

    async def handler(stream: TwilioMediaStream) -> None:
        calls.append(stream.call_sid)

    async with TwilioServer(handler, auth_token=TOKEN) as server:
        async with FakeTwilioCall(server.url, auth_token=TOKEN, handshake=False) as early:
            await early.send_raw(_media(early.stream_sid, "AAAA"))
            code, reason = await early.wait_closed()
        async with FakeTwilioCall(server.url, auth_token=TOKEN) as later:
            await later.stop()
            await later.wait_closed()

    assert (code, reason) == (1008, "expected 'start', got 'media'")
    assert calls == [later.call_sid]
    assert any("before start" in r.getMessage() for r in caplog.records)


async def test_failing_handler_closes_its_call_with_1011(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(stream: TwilioMediaStream) -> None:
        if stream.call_sid == "CAboom":
            raise RuntimeError("boom")
        await stream.wait_closed()

    async with TwilioServer(handler, auth_token=TOKEN) as server:
        async with (
            FakeTwilioCall(server.url, auth_token=TOKEN, call_sid="CAboom") as boom,
            FakeTwilioCall(server.url, auth_token=TOKEN, call_sid="CAfine") as fine,
        ):
            assert (await boom.wait_closed())[0] == 1011
            assert not fine.closed.is_set()
            await fine.stop()
            assert (await fine.wait_closed())[0] == 1000
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)


async def test_leaving_the_server_cancels_running_calls() -> None:
    cancelled = anyio.Event()
    started = anyio.Event()

    async def handler(stream: TwilioMediaStream) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    urls: list[str] = []
    ready, stop = anyio.Event(), anyio.Event()

    async def run_server() -> None:
        async with TwilioServer(handler, auth_token=TOKEN) as server:
            urls.append(server.url)
            ready.set()
            await stop.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_server)
        await ready.wait()
        async with FakeTwilioCall(urls[0], auth_token=TOKEN) as call:
            await started.wait()
            stop.set()  # the server leaves its "async with" while the call is still running
            code, _ = await call.wait_closed()
    assert cancelled.is_set()
    assert code in (1000, 1001)


async def test_wrong_path_is_404_and_signature_is_checked() -> None:
    async def handler(stream: TwilioMediaStream) -> None:
        await stream.wait_closed()

    public = "wss://bot.example.com/media"
    async with TwilioServer(handler, auth_token="tok", public_url=public) as server:
        with pytest.raises(InvalidStatus) as info:
            await connect(f"ws://127.0.0.1:{server.port}/other")
        assert info.value.response.status_code == 404
        for headers in (
            {},
            {"X-Twilio-Signature": "bogus"},
            {"X-Twilio-Signature": compute_signature("x", public)},
        ):
            with pytest.raises(InvalidStatus) as info:
                await connect(server.url, additional_headers=headers)
            assert info.value.response.status_code == 403
        good = compute_signature("tok", public)
        # Twilio sends one signature; two (even if one is right) is not Twilio: 403, not a 500.
        with pytest.raises(InvalidStatus) as info:
            await connect(server.url, additional_headers=[("X-Twilio-Signature", good)] * 2)
        assert info.value.response.status_code == 403
        assert server.rejected_upgrades == 4
        async with connect(server.url, additional_headers={"X-Twilio-Signature": good}) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))


async def test_without_public_url_the_signed_url_is_wss_host_and_path() -> None:
    """Behind a TLS proxy that keeps Host, Twilio signed wss://<Host><path>; the fake signs the same."""
    validator = pytest.importorskip("twilio.request_validator").RequestValidator(TOKEN)
    calls: list[str] = []

    async def handler(stream: TwilioMediaStream) -> None:
        calls.append(stream.call_sid)

    async with TwilioServer(handler, auth_token=TOKEN) as server:
        signed = f"wss://127.0.0.1:{server.port}/media"
        async with FakeTwilioCall(server.url, auth_token=TOKEN) as call:
            assert call.public_url == signed
            assert validator.validate(signed, {}, twilio_signature(TOKEN, signed))
            await call.wait_closed()
        with pytest.raises(InvalidStatus) as info:  # signed for another host
            async with FakeTwilioCall(server.url, auth_token=TOKEN, public_url="wss://evil.test/media"):
                pass
        assert info.value.response.status_code == 403
    assert calls == ["CA00000000000000000000000000000001"]


async def test_no_token_refuses_to_start_unless_unsigned_is_allowed_explicitly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(stream: TwilioMediaStream) -> None:
        await stream.wait_closed()

    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    with pytest.raises(ValueError, match="TWILIO_AUTH_TOKEN"):
        TwilioServer(handler)
    with pytest.raises(ValueError, match="allow_unsigned"):
        TwilioServer(handler, auth_token=None)

    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "from-the-environment")
    server = TwilioServer(handler)
    assert server.signed
    async with server:
        with pytest.raises(InvalidStatus):
            async with FakeTwilioCall(server.url, auth_token=TOKEN):
                pass
        async with FakeTwilioCall(server.url, auth_token="from-the-environment") as call:
            await call.stop()
            assert (await call.wait_closed())[0] == 1000

    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    caplog.set_level(logging.WARNING, logger="voiceagent")
    async with TwilioServer(handler, allow_unsigned=True) as unsigned:
        assert not unsigned.signed
        async with FakeTwilioCall(unsigned.url) as call:
            await call.stop()
            assert (await call.wait_closed())[0] == 1000
    assert any("UNSIGNED" in r.getMessage() for r in caplog.records)


async def test_unknown_events_are_ignored_before_and_after_start() -> None:
    seen: dict[str, Any] = {}

    async def handler(stream: TwilioMediaStream) -> None:
        seen["digit"] = await anext(stream.dtmf())
        seen["reason"] = await stream.wait_closed()

    async with TwilioServer(handler, auth_token=TOKEN) as server:
        async with FakeTwilioCall(server.url, auth_token=TOKEN, handshake=False) as call:
            await call.send_json({"event": "someFutureEvent", "streamSid": call.stream_sid})
            await call.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            await call.send_json({"event": "事" * 40})
            await call.send_json(call.start_message())
            await call.send_json({"event": "hangup", "streamSid": call.stream_sid})
            await call.send_dtmf("7")
            await call.stop()
            assert (await call.wait_closed())[0] == 1000
    assert seen == {"digit": "7", "reason": "stop received"}


async def test_connection_without_start_is_closed_after_the_handshake_timeout() -> None:
    calls: list[str] = []

    async def handler(stream: TwilioMediaStream) -> None:
        calls.append(stream.call_sid)

    async with TwilioServer(handler, auth_token=TOKEN, handshake_timeout=0.05) as server:
        async with FakeTwilioCall(server.url, auth_token=TOKEN, handshake=False) as silent:
            await silent.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            assert await silent.wait_closed() == (1008, "no start event")
    assert calls == []


async def test_caller_audio_after_the_stream_ended_is_dropped_not_a_failure() -> None:
    """The stream can end (a send timed out, the app is leaving) while the caller still talks: a frame read
    then has nobody to go to, and must not fail the call (it raised ClosedResourceError)."""
    seen: dict[str, Any] = {}

    async def handler(stream: TwilioMediaStream) -> None:
        stream._finish("ended by the test")
        stream._put_audio(b"\x00\x00" * 160)
        seen["dropped"] = stream.dropped_audio_frames

    async with TwilioServer(handler, auth_token=TOKEN) as server:
        async with FakeTwilioCall(server.url, auth_token=TOKEN) as call:
            with anyio.fail_after(10):
                await call.wait_closed()
    assert seen["dropped"] == 1
    assert call.close_code == 1000
