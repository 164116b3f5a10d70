"""Lightning TTS: the fake and the adapters checked against the official ``smallestai`` SDK (5.14.0).

The SDK's WebSocket and HTTP TTS clients run against ``FakeLightningServer`` and read its answers with
their own response models; every message the adapters send validates against the SDK's request models
(``tests/sdk_schemas.py``: no unknown keys, every enum value one the SDK lists).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from smallestai import AsyncSmallestAI
from smallestai.core.http_sse import EventSource
from smallestai.environment import SmallestAIEnvironment
from smallestai.waves.tts.types.tts_request_message import TtsRequestMessage
from smallestai.waves.tts.types.tts_response_message import TtsResponseMessage
from smallestai.waves.types.get_voices_waves_response import GetVoicesWavesResponse
from smallestai.waves.types.tts_request import TtsRequest
from websockets.asyncio.client import connect

from tests.sdk_schemas import schema_problems
from voiceagent import audio
from voiceagent.adapters.lightning import LightningHTTPSink, LightningSink
from voiceagent.adapters.lightning.fake import FakeLightningServer
from voiceagent.audio_output import CollectingOutput
from voiceagent.testing.tone import tone

pytestmark = pytest.mark.anyio


@pytest.fixture
def key() -> str:
    return f"key-{uuid.uuid4().hex}"  # the per-account limiter and voice cache are process-wide


@pytest.fixture
async def server(key: str) -> AsyncIterator[FakeLightningServer]:
    async with FakeLightningServer(api_key=key) as server:
        yield server


def sdk_client(server: FakeLightningServer, key: str) -> AsyncSmallestAI:
    ws_root = "ws://" + urlsplit(server.ws_url).netloc
    http_root = "http://" + urlsplit(server.http_base).netloc
    environment = SmallestAIEnvironment(atoms=http_root, waves=http_root, waves_ws=ws_root, payment=http_root)
    return AsyncSmallestAI(api_key=key, environment=environment)


# ---- the SDK's clients against the fake -------------------------------------------------------------------


async def test_sdk_websocket_client_streams_from_the_fake(server: FakeLightningServer, key: str) -> None:
    client = sdk_client(server, key)
    frames: list[TtsResponseMessage] = []
    base: dict[str, Any] = {"voice_id": "magnus", "model": "lightning_v3.1_pro", "sample_rate": 16000}
    with anyio.fail_after(10):
        async with client.waves.tts.connect() as socket:
            await socket.synthesize_streaming_tts(
                TtsRequestMessage(**base, text="Hello from the SDK. ", continue_=True, word_timestamps=True)
            )
            await socket.synthesize_streaming_tts(
                TtsRequestMessage(**base, text="Second part.", continue_=True)
            )
            await socket.synthesize_streaming_tts(TtsRequestMessage(**base, text="", flush=True))
            async for frame in socket:
                assert isinstance(frame, TtsResponseMessage), frame
                frames.append(frame)
                if frame.status == "complete":
                    break
    [utterance] = server.utterances
    assert utterance.text == "Hello from the SDK. Second part." and utterance.sample_rate == 16000
    chunks = [f for f in frames if f.status == "chunk"]
    assert (
        b"".join(base64.b64decode(f.data.audio) for f in chunks if f.data and f.data.audio) == utterance.pcm16
    )
    assert all(f.request_id == chunks[0].request_id and f.session_id for f in chunks)
    stamps = [f.data for f in frames if f.status == "word_timestamp" and f.data]
    assert [s.word for s in stamps] == ["Hello", "from", "the", "SDK.", "Second", "part."][: len(stamps)]
    assert stamps and all(s.start is not None and s.end is not None and s.id is not None for s in stamps)
    assert server.upgrades[0].headers["authorization"] == f"Bearer {key}"


async def test_sdk_websocket_client_gets_the_idle_timeout_frame(
    server: FakeLightningServer, key: str
) -> None:
    client = sdk_client(server, key)
    with anyio.fail_after(10):
        async with client.waves.tts.connect() as socket:
            await server.wait_until(lambda: server.connections_opened == 1)
            await server.expire_idle()
            frame = await socket.recv()
    assert isinstance(frame, TtsResponseMessage) and frame.model_extra is not None
    assert frame.model_dump()["status"] == "error"
    assert "inactivity" in frame.model_extra["message"]


@pytest.mark.parametrize(
    ("output_format", "check"),
    [
        ("wav", lambda body, pcm: body[:4] == b"RIFF" and audio.read_wav(body) == (pcm, 16000)),
        (None, lambda body, pcm: body == pcm),  # the server default is pcm: raw samples
        ("pcm", lambda body, pcm: body == pcm),
        ("ulaw", lambda body, pcm: body == audio.pcm16_to_ulaw(pcm)),
        ("alaw", lambda body, pcm: body == audio.pcm16_to_alaw(pcm)),
    ],
)
async def test_sdk_sync_client_gets_the_output_format_it_asked_for(
    server: FakeLightningServer, key: str, output_format: str | None, check: Any
) -> None:
    client = sdk_client(server, key)
    options: dict[str, Any] = {} if output_format is None else {"output_format": output_format}
    with anyio.fail_after(10):
        body = b"".join(
            [
                chunk
                async for chunk in client.waves.synthesize_tts(
                    text="Format check.", voice_id="magnus", sample_rate=16000, **options
                )
            ]
        )
    [request] = server.http_requests
    assert request.headers["accept"] == "audio/wav"  # what the SDK always sends
    assert check(body, tone(server.seconds_for("Format check."), 16000))


async def test_sse_from_the_fake_parses_with_the_sdks_event_source(
    server: FakeLightningServer, key: str
) -> None:
    # The SDK's own synthesize_sse_tts (5.14.0) types each event as `str` and drops the documented JSON
    # events with a warning, so its SSE parser is used directly on the same request.
    request = {"text": "Streamed.", "voice_id": "magnus", "sample_rate": 24000}
    assert schema_problems(TtsRequest, request) == []
    events: list[dict[str, Any]] = []
    with anyio.fail_after(10):
        async with (
            httpx.AsyncClient() as http,
            http.stream(
                "POST",
                f"{server.http_base}/tts/live",
                json=request,
                headers={"Authorization": f"Bearer {key}"},
            ) as response,
        ):
            assert response.headers["content-type"] == "text/event-stream"
            async for sse in EventSource(response).aiter_sse():
                events.append({"event": sse.event, **json.loads(sse.data)})
    audio_events = [e for e in events if e["event"] == "audio"]
    assert all(e["done"] is False for e in audio_events) and events[-1]["done"] is True
    pcm = b"".join(base64.b64decode(e["audio"]) for e in audio_events)
    assert pcm == server.utterances[0].pcm16


async def test_sdk_get_voices_reads_the_fakes_catalog(server: FakeLightningServer, key: str) -> None:
    with anyio.fail_after(10):
        answer = await sdk_client(server, key).waves.get_voices(model="lightning-v3.1")
    assert isinstance(answer, GetVoicesWavesResponse) and answer.voices
    by_id = {v.voice_id: v for v in answer.voices}
    assert {"magnus", "meher"} <= by_id.keys()
    tags = by_id["meher"].tags
    assert tags is not None and tags.language == ["hindi", "english"]


async def test_the_fake_stops_a_synthesis_on_cancel_request_without_an_error(
    server: FakeLightningServer, key: str
) -> None:
    server.first_byte_gate = anyio.Event()
    base = {"voice_id": "magnus", "model": "lightning_v3.1", "context_id": "ctx1"}
    with anyio.fail_after(10):
        async with connect(server.ws_url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
            await ws.send(json.dumps({**base, "text": "Long answer.", "continue": True}))
            await ws.send(json.dumps({**base, "text": "", "flush": True}))
            await server.wait_until(lambda: server.requests_started == 1)
            await ws.send(json.dumps({**base, "cancel_request": True}))
            await server.wait_until(lambda: server.cancelled_syntheses == 1)
            server.first_byte_gate.set()
            await ws.send(json.dumps({**base, "text": "Next.", "flush": True}))
            answers = []
            while not answers or answers[-1].get("status") != "complete":
                answers.append(json.loads(await ws.recv()))
    assert all(a["status"] in ("chunk", "complete") for a in answers)  # no MISSING_TEXT for the cancel
    assert [u.text for u in server.utterances] == ["Next."]
    assert server.in_flight[key] == 0


# ---- every message the adapters send validates against the SDK's request models ----------------------


async def test_websocket_sink_messages_validate_against_the_sdk(
    server: FakeLightningServer, key: str
) -> None:
    out = CollectingOutput(24000)
    async with LightningSink(
        out,
        api_key=key,
        model="lightning_v3.1_pro",
        url=server.ws_url,
        language="hi",
        speed=1.2,
        word_timestamps=True,
        max_buffer_flush_ms=200,
        keepalive_interval=0.01,
    ) as sink:
        with anyio.fail_after(10):
            await server.wait_until(lambda: server.keepalives >= 1)
        await sink.speak("A first sentence. " * 20)  # over 250 characters: several pieces
    kinds = {"keepalive": 0, "piece": 0, "flush": 0}
    for message in server.messages:
        assert schema_problems(TtsRequestMessage, message) == [], message
        kinds["flush" if message.get("flush") else "piece" if message.get("continue") else "keepalive"] += 1
    assert kinds["keepalive"] >= 1 and kinds["piece"] >= 2 and kinds["flush"] == 1


async def test_the_unconfirmed_cancel_request_is_livekits_message(
    server: FakeLightningServer, key: str
) -> None:
    server.first_byte_gate = anyio.Event()
    async with LightningSink(
        CollectingOutput(24000), api_key=key, url=server.ws_url, keepalive_interval=None, cancel_request=True
    ) as sink:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.speak, "Cut off.")
            await server.wait_until(lambda: server.requests_started == 1)
            await sink.cancel()
        with anyio.fail_after(10):
            await server.wait_until(lambda: len(server.cancels) == 1)
    [cancel] = server.cancels
    requests = [m for m in server.messages if m is not cancel]
    for message in requests:  # context_id: LiveKit's field, not in the SDK's schema (UNCONFIRMED)
        assert schema_problems(TtsRequestMessage, message, allowed_extra={"context_id"}) == []
    # The cancel is LiveKit's message as it sends it: the request's fields and context, no text.
    flush = next(m for m in requests if m.get("flush"))
    assert cancel == {
        **{k: v for k, v in flush.items() if k not in ("text", "flush")},
        "cancel_request": True,
    }


@pytest.mark.parametrize("mode", ["sse", "sync"])
async def test_http_sink_bodies_validate_against_the_sdk(
    server: FakeLightningServer, key: str, mode: Literal["sse", "sync"]
) -> None:
    async with LightningHTTPSink(
        CollectingOutput(16000), api_key=key, mode=mode, base_url=server.http_base, language="auto", speed=0.8
    ) as sink:
        await sink.speak("Checked against the SDK.")
    [request] = server.http_requests
    assert schema_problems(TtsRequest, request.json()) == []
