from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
import pytest

from tests.audio_helpers import tone_power
from voiceagent.adapters.lightning import LightningHTTPSink
from voiceagent.adapters.lightning.fake import FakeLightningServer, spec_error
from voiceagent.audio_output import CollectingOutput
from voiceagent.errors import TTSError, TTSInterruptedError

pytestmark = pytest.mark.anyio

MODES: list[Literal["sse", "sync"]] = ["sse", "sync"]


@pytest.fixture
def key() -> str:
    return f"key-{uuid.uuid4().hex}"


@pytest.fixture
async def server(key: str) -> AsyncIterator[FakeLightningServer]:
    async with FakeLightningServer(api_key=key) as server:
        yield server


def make_sink(
    server: FakeLightningServer, key: str, mode: Literal["sse", "sync"], output: Any = None, **kwargs: Any
) -> LightningHTTPSink:
    return LightningHTTPSink(
        output if output is not None else CollectingOutput(24000),
        api_key=key,
        voice_id="magnus",
        mode=mode,
        base_url=server.http_base,
        **kwargs,
    )


@pytest.mark.parametrize("mode", MODES)
async def test_speaks_over_http(server: FakeLightningServer, key: str, mode: Literal["sse", "sync"]) -> None:
    out = CollectingOutput(24000)
    async with make_sink(server, key, mode, out, model="lightning_v3.1_pro") as sink:
        await sink.speak("Hello over HTTP.")
        await sink.flush()
    [request] = server.http_requests
    assert request.method == "POST"
    assert request.path == ("/waves/v1/tts/live" if mode == "sse" else "/waves/v1/tts")
    assert request.headers["authorization"] == f"Bearer {key}"
    assert request.headers["accept"] == ("text/event-stream" if mode == "sse" else "audio/wav")
    body = request.json()
    assert body["text"] == "Hello over HTTP." and body["voice_id"] == "magnus"
    assert body["model"] == "lightning_v3.1_pro" and body["sample_rate"] == 24000
    # the WAV header (sync) is parsed away: exactly the synthesized PCM arrives
    assert out.pcm16 == server.utterances[0].pcm16
    assert out.chunks[0].text_span == "Hello over HTTP."
    assert sink.played_chars == len("Hello over HTTP.")
    assert len(sink.ttfb) == 1 and sink.request_ids == ["http-1"]
    assert tone_power(out.pcm16, 24000, 440) > 100 * tone_power(out.pcm16, 24000, 1500)


@pytest.mark.parametrize("mode", MODES)
async def test_long_text_becomes_several_requests(
    server: FakeLightningServer, key: str, mode: Literal["sse", "sync"]
) -> None:
    text = "Another sentence in a long reply. " * 10
    async with make_sink(server, key, mode) as sink:
        await sink.speak(text)
    texts = [r.json()["text"] for r in server.http_requests]
    assert len(texts) == 2 and "".join(texts) == text and all(len(t) <= 250 for t in texts)
    assert sink.played_chars == len(text) and len(sink.ttfb) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_429_is_a_clear_error(
    server: FakeLightningServer, key: str, mode: Literal["sse", "sync"]
) -> None:
    server.reject_status = 429
    out = CollectingOutput(24000)
    async with make_sink(server, key, mode, out) as sink:
        with pytest.raises(TTSError) as info:
            await sink.speak("Too many.")
        assert info.value.status_code == 429 and "Too many requests" in info.value.message
        assert sink.played_chars == 0 and out.chunks == []
        server.reject_status = None
        await sink.speak("Fine now.")
    assert sink.played_chars == len("Fine now.")


async def test_retired_model_is_410(server: FakeLightningServer, key: str) -> None:
    # the sink refuses retired names itself; through `extra` the server's answer is surfaced
    async with make_sink(server, key, "sync", extra={"model": "lightning-v2"}) as sink:
        with pytest.raises(TTSError) as info:
            await sink.speak("Old model.")
    assert info.value.status_code == 410 and info.value.code == "MODEL_DEPRECATED"


@pytest.mark.parametrize("mode", MODES)
async def test_server_error_body(server: FakeLightningServer, key: str, mode: Literal["sse", "sync"]) -> None:
    server.fail_next(spec_error("voice not found", "VOICE_NOT_FOUND"))
    async with make_sink(server, key, mode) as sink:
        with pytest.raises(TTSError) as info:
            await sink.speak("Bad voice.")
    assert info.value.status_code == 500 and info.value.code == "VOICE_NOT_FOUND"


@pytest.mark.parametrize("mode", MODES)
async def test_drop_mid_stream(server: FakeLightningServer, key: str, mode: Literal["sse", "sync"]) -> None:
    out = CollectingOutput(24000)
    text = "This stream is cut off half way through the sentence."
    async with make_sink(server, key, mode, out) as sink:
        server.drop_next(after_chunks=2)
        with pytest.raises(TTSInterruptedError):
            await sink.speak(text)
        assert out.chunks and out.written_seconds < server.seconds_for(text)
        assert 0 < sink.played_chars < len(text)
        await sink.speak("Recovered.")
    assert sink.spoken_spans[-1].fully_played


async def test_unreachable_is_a_clear_error(key: str) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    sink = LightningHTTPSink(
        CollectingOutput(24000), api_key=key, voice_id="v", base_url=f"http://127.0.0.1:{port}/waves/v1"
    )
    async with sink:
        with pytest.raises(TTSError, match="cannot reach Lightning"):
            await sink.speak("Anyone there?")


@pytest.mark.parametrize("mode", MODES)
async def test_cancel_during_slow_first_byte(
    server: FakeLightningServer, key: str, mode: Literal["sse", "sync"]
) -> None:
    server.first_byte_gate = anyio.Event()
    out = CollectingOutput(24000)
    async with make_sink(server, key, mode, out) as sink:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.speak, "Never delivered.")
            await server.wait_until(lambda: server.requests_started == 1)
            await sink.cancel()
        assert out.chunks == [] and sink.played_chars == 0 and out.clears == 1
        server.first_byte_gate.set()
        await server.wait_until(lambda: not any(server.in_flight.values()))
        await sink.speak("Next.")
    assert sink.played_chars == len("Next.")


async def test_http_and_ws_share_the_account_slot(server: FakeLightningServer, key: str) -> None:
    from voiceagent.adapters.lightning import LightningSink

    server.first_byte_gate = anyio.Event()
    ws_sink = LightningSink(
        CollectingOutput(24000), api_key=key, voice_id="magnus", url=server.ws_url, keepalive_interval=None
    )
    async with ws_sink, make_sink(server, key, "sse") as http_sink:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ws_sink.speak, "Over the socket.")
            await server.wait_until(lambda: server.requests_started == 1)
            tg.start_soon(http_sink.speak, "Over HTTP.")
            await anyio.wait_all_tasks_blocked()
            assert server.http_requests == []  # waiting for the account's slot
            server.first_byte_gate.set()
    assert server.concurrency_violations == 0
    assert http_sink.played_chars == len("Over HTTP.")


@pytest.mark.parametrize("mode", MODES)
async def test_default_voice_and_the_voice_check_before_the_first_request(
    server: FakeLightningServer, key: str, mode: Literal["sse", "sync"]
) -> None:
    sink = LightningHTTPSink(CollectingOutput(24000), api_key=key, mode=mode, base_url=server.http_base)
    await sink.speak("No async with.")  # checked lazily, once
    await sink.speak("Again.")
    await sink.aclose()
    assert [r.json()["voice_id"] for r in server.http_requests] == ["magnus", "magnus"]
    assert len(server.voice_lookups) == 1
    bad = LightningHTTPSink(
        CollectingOutput(24000), api_key=key, voice_id="nobody", mode=mode, base_url=server.http_base
    )
    with pytest.raises(TTSError, match="no voice 'nobody'"):
        async with bad:
            pass
    with pytest.raises(TTSError, match="no voice 'nobody'"):
        await bad.speak("Never sent.")
    await bad.aclose()
    assert len(server.http_requests) == 2
