"""Plivo end to end, every part real: a fake Plivo call over a signed WebSocket -> PlivoServer ->
Session -> Pulse STT adapter -> fake Pulse server; the agent's turns stream from the fake Electron
server; espeak-ng speaks into the call's output; Plivo checkpoints tell what the caller heard; barge-in
clears Plivo's buffer; hang-up, transfer and DTMF go through Plivo's Call API (a fake on loopback)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from websockets.exceptions import InvalidStatus

from tests.test_session import AUDIO_128MS, BATCH, LONG_ANSWER, eventually, heard_a_second
from voiceagent import Agent, LLMClient
from voiceagent.adapters.plivo import PlivoCallControl, PlivoServer, compute_signature_v3, dial_xml
from voiceagent.adapters.plivo.fake import FakePlivoCall
from voiceagent.adapters.plivo.fake_rest import FakePlivoRest
from voiceagent.adapters.pulse import PulseOptions, PulseSTT
from voiceagent.adapters.pulse.fake import Emit, FakePulseServer, transcript
from voiceagent.audio import sine_pcm16
from voiceagent.session import Session
from voiceagent.telephony import AudioFormat, CallControlError
from voiceagent.telephony.stream import MediaStream
from voiceagent.testing.loopback_http import HTTPRequest, LoopbackHTTPServer, Responder
from voiceagent.testing.openai_server import FakeOpenAIServer, text_reply
from voiceagent.tts import AudioChunk

TOKEN = "plivo-session-token"
pytestmark = pytest.mark.anyio
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


async def run_call(
    llm: FakeOpenAIServer,
    pulse: FakePulseServer,
    script: Callable[[FakePlivoCall, list[Session]], Any],
    *,
    playback_speed: float,
) -> tuple[list[Session], FakePlivoCall]:
    from voiceagent.adapters.espeak import EspeakSink

    sessions: list[Session] = []

    async def call(stream: MediaStream) -> None:
        async with PulseSTT("sk_test", PulseOptions.for_twilio("en"), url=pulse.url) as stt:
            agent = Agent(
                llm=LLMClient(base_url=llm.base_url, api_key="sk_test"),
                sink=EspeakSink(stream.output, words_per_minute=220),
                system_prompt="You are a phone storyteller.",
            )
            sessions.append(Session(agent=agent, transport=stream, stt=stt))
            await sessions[-1].run()

    async with pulse, PlivoServer(call, auth_token=TOKEN) as server:
        async with FakePlivoCall(server.url, auth_token=TOKEN, playback_speed=playback_speed) as phone:
            await script(phone, sessions)
            await phone.hang_up()  # Plivo ends a stream by closing its socket
        await eventually(lambda: bool(sessions) and not sessions[0].bot_speaking)
    return sessions, phone


@needs_espeak
async def test_a_plivo_call_turn_speaks_into_the_phone_and_checkpoints_confirm_it_was_heard() -> None:
    async with FakeOpenAIServer() as llm:
        llm.enqueue(text_reply("It is sunny in Paris, eighteen degrees."))
        pulse = FakePulseServer([Emit(BATCH, transcript("What's the weather in Paris?", is_final=True))])

        async def script(phone: FakePlivoCall, sessions: list[Session]) -> None:
            await phone.send_pcm(AUDIO_128MS, 8000)
            await eventually(lambda: bool(sessions) and len(sessions[0].results) == 1)

        sessions, phone = await run_call(llm, pulse, script, playback_speed=20)
    result = sessions[0].results[0]
    assert result.heard_text == "It is sunny in Paris, eighteen degrees." and not result.interrupted
    assert llm.requests[0].body["messages"][-1] == {"role": "user", "content": "What's the weather in Paris?"}
    assert sessions[0].output is not None and sessions[0].output.played_seconds > 1.0
    assert phone.played_checkpoints and phone.errors == []
    assert len(phone.played) > 8000  # over a second of the bot's mu-law reached the caller


@needs_espeak
async def test_barge_in_clears_plivos_buffer_and_keeps_only_what_the_caller_heard() -> None:
    async with FakeOpenAIServer() as llm:
        llm.enqueue(text_reply(LONG_ANSWER), text_reply("Sure, I'll stop."))
        pulse = FakePulseServer(
            [
                Emit(BATCH, transcript("Tell me a story.", is_final=True)),
                Emit(2 * BATCH, transcript("wait, stop")),
                Emit(2 * BATCH, transcript("wait, stop please", is_final=True)),
            ]
        )

        async def script(phone: FakePlivoCall, sessions: list[Session]) -> None:
            await phone.send_pcm(AUDIO_128MS, 8000)
            await eventually(lambda: heard_a_second(sessions))
            await phone.send_pcm(AUDIO_128MS, 8000)  # the caller talks over the bot
            await eventually(lambda: bool(sessions) and len(sessions[0].results) == 2)

        sessions, phone = await run_call(llm, pulse, script, playback_speed=1)
    session = sessions[0]
    assert session.barge_ins == 1 and phone.clears >= 1
    first, second = session.results
    assert first.interrupted and not second.interrupted
    assert 0 < len(first.heard_text) < len(LONG_ANSWER)
    kept = session.agent.conversation.history[1]["content"]
    assert LONG_ANSWER.startswith(kept) and len(kept) < len(LONG_ANSWER)
    assert llm.requests[1].body["messages"][2] == {"role": "assistant", "content": kept}
    # Plivo never answers the checkpoints a clear dropped; the stream did not wait for them.
    assert phone.dropped_checkpoints
    assert sum(m.get("event") == "clearAudio" for m in phone.received) == phone.clears
    assert phone.errors == []


async def test_audio_both_ways_in_l16_at_16_khz() -> None:
    """The caller's L16 reaches the handler as PCM; what it sends back plays out sample for sample."""
    tone = sine_pcm16(500, 0.2, 16000)
    heard: list[bytes] = []

    async def echo(stream: MediaStream) -> None:
        assert stream.start.inbound_format == AudioFormat("l16", 16000)
        received = b""
        async for pcm in stream.audio_in():
            received += pcm
            if len(received) >= len(tone):
                break
        heard.append(received)
        await stream.send_audio(AudioChunk(received, 16000))
        await stream.mark("echoed")
        async for name in stream.played_marks():
            if name == "echoed":
                break

    with anyio.fail_after(30):
        async with PlivoServer(echo, auth_token=TOKEN) as server:
            async with FakePlivoCall(
                server.url, auth_token=TOKEN, content_type="audio/x-l16;rate=16000", playback_speed=50
            ) as phone:
                await phone.send_pcm(tone, 16000)
                await phone.wait_until(lambda: phone.played_checkpoints == ["echoed"])
                await phone.wait_closed()
    assert heard == [tone]
    assert phone.played_pcm16 == tone  # 200 ms is ten whole 20 ms frames: no padding
    assert phone.errors == []


@pytest.fixture
async def rest() -> AsyncIterator[FakePlivoRest]:
    async with FakePlivoRest() as fake:
        yield fake


async def test_call_control_through_the_stream(rest: FakePlivoRest) -> None:
    """DTMF in arrives on the stream; DTMF out goes on the stream (sendDTMF); transfer and hang-up go
    to Plivo's Call API for this call's callId, with the Auth ID the stream's accountId gave."""

    async def transfer_xml(request: HTTPRequest, respond: Responder) -> None:
        await respond.send(
            200, dial_xml(request.query["to"][0]).encode(), {"Content-Type": "application/xml"}
        )

    digits: list[str] = []

    async def handler(stream: MediaStream) -> None:
        async for digit in stream.dtmf():
            digits.append(digit)
            if digit == "#":
                break
        await stream.send_dtmf("1234")
        await stream.transfer("+15550199")
        await stream.hang_up()
        with pytest.raises(CallControlError, match=r"E\.164"):
            await stream.transfer("nobody")

    async with LoopbackHTTPServer(transfer_xml) as app:
        factory = PlivoCallControl.factory(
            auth_token=rest.auth_token, base_url=rest.base_url, transfer_url=f"{app.url}/dial?to={{to}}"
        )
        with anyio.fail_after(30):
            async with PlivoServer(handler, auth_token=TOKEN, control_factory=factory) as server:
                async with FakePlivoCall(server.url, auth_token=TOKEN, account_id=rest.auth_id) as phone:
                    rest.add_call(phone.call_id)
                    for digit in "42#":
                        await phone.send_dtmf(digit)
                    await rest.wait_for(2)
                    await phone.wait_until(lambda: phone.dtmf_sent == ["1234"])
    assert digits == ["4", "2", "#"]
    assert [(a.kind, a.call_uuid) for a in rest.actions] == [
        ("transfer", phone.call_id),
        ("hangup", phone.call_id),
    ]
    assert (
        rest.actions[0].fetched_xml is not None
        and "<Number>+15550199</Number>" in rest.actions[0].fetched_xml
    )
    assert rest.rejected == [] and phone.errors == []


async def test_upgrades_are_signature_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []

    async def handler(stream: MediaStream) -> None:
        started.append(stream.call_id)

    with anyio.fail_after(30):
        async with PlivoServer(handler, auth_token=TOKEN, path="/plivo") as server:
            for token in (None, "not-the-token"):
                with pytest.raises(InvalidStatus) as refused:
                    async with FakePlivoCall(server.url, auth_token=token):
                        pass
                assert refused.value.response.status_code == 403
            # Signed over the URL Plivo's Node stream SDK reconstructs (https://): accepted too.
            url = server.url
            https_url = "https://" + url.split("://", 1)[1]
            async with FakePlivoCall(server.url, auth_token=TOKEN, public_url=https_url) as phone:
                await phone.hang_up()
            await eventually(lambda: started == [phone.call_id])
        assert server.rejected_upgrades == 2
    assert compute_signature_v3(TOKEN, https_url, "n") != compute_signature_v3(TOKEN, url, "n")
    monkeypatch.delenv("PLIVO_AUTH_TOKEN", raising=False)
    with pytest.raises(ValueError, match="allow_unsigned=True"):
        PlivoServer(handler)
    assert not PlivoServer(handler, allow_unsigned=True).signed


async def test_a_malformed_frame_ends_only_that_call() -> None:
    calls: list[MediaStream] = []

    async def handler(stream: MediaStream) -> None:
        calls.append(stream)
        await stream.wait_closed()

    with anyio.fail_after(30):
        async with PlivoServer(handler, auth_token=TOKEN) as server:
            async with (
                FakePlivoCall(server.url, auth_token=TOKEN) as bad,
                FakePlivoCall(server.url, auth_token=TOKEN) as good,
            ):
                await eventually(lambda: len(calls) == 2)
                await bad.send_json(
                    {"event": "media", "streamId": bad.stream_id, "media": {"payload": "***"}}
                )
                code, reason = await bad.wait_closed()
                assert code == 1008 and "base64" in reason
                await good.send_pcm(sine_pcm16(300, 0.04, 8000), 8000)
                assert not good.closed.is_set()
                await good.hang_up()
    reasons = {stream.call_id: stream.close_reason or "" for stream in calls}
    assert "base64" in reasons[bad.call_id] and "base64" not in reasons[good.call_id]
