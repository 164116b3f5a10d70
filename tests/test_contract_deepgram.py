"""Deepgram live STT: the fake checked against the official ``deepgram-sdk`` client, and the adapter
checked against the fake and the SDK (every message it sends is one the SDK sends)."""

from __future__ import annotations

import inspect
import json
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from deepgram.listen.v1.raw_client import AsyncRawV1Client
from deepgram.listen.v1.types import (
    ListenV1CloseStream,
    ListenV1Finalize,
    ListenV1KeepAlive,
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from tests.sdk_schemas import schema_problems
from voiceagent.adapters.deepgram import (
    DeepgramHandshakeError,
    DeepgramOptions,
    DeepgramResults,
    DeepgramServerError,
    DeepgramSTT,
    parse_server_message,
)
from voiceagent.adapters.deepgram.fake import Emit, FakeDeepgramServer, Speech, results
from voiceagent.endpointing import EndpointingDetector
from voiceagent.stt import SpeechEnded, SpeechStarted, STTEvent, Transcript

pytestmark = pytest.mark.anyio

KEY = "dg_test"
RATE = 16000
SCRIPT = [Speech("hello there how are you today", 0.2, 1.1)]
SERVER_MODELS: dict[str, Any] = {
    "Results": ListenV1Results,
    "SpeechStarted": ListenV1SpeechStarted,
    "UtteranceEnd": ListenV1UtteranceEnd,
    "Metadata": ListenV1Metadata,
}
CONTROL_MODELS: dict[str, Any] = {
    "KeepAlive": ListenV1KeepAlive,
    "Finalize": ListenV1Finalize,
    "CloseStream": ListenV1CloseStream,
}


def silence(seconds: float, rate: int = RATE) -> bytes:
    return b"\0\0" * int(seconds * rate)


def sdk_client(server: FakeDeepgramServer, key: str = KEY) -> AsyncDeepgramClient:
    parts = urlsplit(server.url)
    ws_root = f"{parts.scheme}://{parts.netloc}"
    http_root = ws_root.replace("ws://", "http://")
    environment = DeepgramClientEnvironment(
        base=http_root, production=ws_root, agent=ws_root, agent_rest=http_root
    )
    return AsyncDeepgramClient(api_key=key, environment=environment)


async def sdk_session(server: FakeDeepgramServer, audio: bytes) -> list[Any]:
    got: list[Any] = []
    with anyio.fail_after(10):
        async with sdk_client(server).listen.v1.connect(
            model="nova-3",
            encoding="linear16",
            sample_rate=RATE,
            interim_results="true",
            endpointing=300,
            utterance_end_ms=1000,
            vad_events="true",
        ) as socket:
            for offset in range(0, len(audio), 3200):
                await socket.send_media(audio[offset : offset + 3200])
            await socket.send_keep_alive()
            await socket.send_finalize()
            await socket.send_close_stream()
            async for message in socket:
                got.append(message)
    return got


async def adapter_session(server: FakeDeepgramServer, audio: bytes, **options: Any) -> list[STTEvent]:
    got: list[STTEvent] = []
    with anyio.fail_after(10):
        async with DeepgramSTT(KEY, DeepgramOptions(**options), url=server.url) as stt:
            async with anyio.create_task_group() as tg:

                async def read() -> None:
                    async for event in stt.events():
                        got.append(event)

                tg.start_soon(read)
                for offset in range(0, len(audio), 3200):
                    await stt.send_audio(audio[offset : offset + 3200])
                await stt.finalize()
                await stt.aclose()
    return got


# ---- the official SDK against the fake ---------------------------------------------------------------------


async def test_sdk_hears_interims_finals_endpoint_utterance_end_and_metadata_from_the_fake() -> None:
    async with FakeDeepgramServer(SCRIPT, api_key=KEY) as server:
        got = await sdk_session(server, silence(2.5))
        session = server.sessions[0]
    kinds = [type(m).__name__ for m in got]
    assert kinds[0] == "ListenV1SpeechStarted" and kinds[-1] == "ListenV1Metadata"
    results = [m for m in got if isinstance(m, ListenV1Results)]
    texts = [(r.channel.alternatives[0].transcript, r.is_final, r.speech_final) for r in results]
    assert texts[:6] == [
        ("hello", False, False),
        ("hello there", False, False),
        ("hello there how", False, False),
        ("hello there how are", False, False),
        ("hello there how are you", True, False),  # a segment final, not the end of speech
        ("today", False, False),
    ]
    assert texts[6] == ("today", True, True)  # endpointing: 300 ms after the last word
    assert isinstance(got[kinds.index("ListenV1UtteranceEnd")], ListenV1UtteranceEnd)
    assert got[kinds.index("ListenV1UtteranceEnd")].last_word_end == pytest.approx(1.1)
    assert results[-1].from_finalize is True  # the answer to Finalize
    assert session.controls == [{"type": "KeepAlive"}, {"type": "Finalize"}, {"type": "CloseStream"}]
    assert session.headers["Authorization"] == f"Token {KEY}"


async def test_every_message_the_fake_sends_is_one_the_sdk_models_strictly() -> None:
    async with FakeDeepgramServer(SCRIPT, api_key=KEY) as server:
        await sdk_session(server, silence(2.5))
        sent = server.sessions[0].sent
    assert {m["type"] for m in sent} == set(SERVER_MODELS)
    for message in sent:
        assert schema_problems(SERVER_MODELS[message["type"]], message) == [], message


async def test_the_fake_refuses_a_bad_key_as_the_sdk_expects() -> None:
    async with FakeDeepgramServer(api_key=KEY) as server:
        with pytest.raises(ApiError) as info:
            async with sdk_client(server, "wrong").listen.v1.connect(model="nova-3"):
                pass
    assert info.value.status_code == 401 and server.rejected[0][0] == 401


# ---- our adapter against the SDK's messages and the fake ---------------------------------------------


async def test_the_adapter_sends_only_what_the_sdk_sends() -> None:
    async with FakeDeepgramServer(SCRIPT, api_key=KEY) as server:
        await sdk_session(server, silence(2.5))
        async with DeepgramSTT(KEY, url=server.url, keepalive=0.05) as stt:
            with anyio.fail_after(10):
                while not server.sessions[1].controls:  # noqa: ASYNC110  # a KeepAlive, once the stream is idle
                    await anyio.sleep(0.01)
                await stt.send_audio(silence(0.1))
                await stt.finalize()
        sdk, ours = server.sessions
    sdk_controls = {json.dumps(c, sort_keys=True) for c in sdk.controls}
    assert {json.dumps(c, sort_keys=True) for c in ours.controls} <= sdk_controls
    assert {c["type"] for c in ours.controls} == {"KeepAlive", "Finalize", "CloseStream"}
    for control in ours.controls:
        assert schema_problems(CONTROL_MODELS[control["type"]], control) == []
    sdk_params = set(inspect.signature(AsyncRawV1Client.connect).parameters)
    assert set(ours.query) <= sdk_params, set(ours.query) - sdk_params
    for name in (
        "encoding",
        "sample_rate",
        "interim_results",
        "endpointing",
        "utterance_end_ms",
        "vad_events",
    ):
        assert ours.query[name] == sdk.query[name] or name == "sample_rate"
    assert ours.headers["Authorization"] == sdk.headers["Authorization"]
    assert all(size == 1600 for size in ours.frame_sizes[:-1])  # 50 ms frames at 16 kHz (mono PCM16)


async def test_the_adapter_maps_deepgrams_events_onto_the_end_of_turn_detector() -> None:
    script = [Speech("hello there how are you today", 0.2, 1.1), Speech("and you", 3.0, 3.4)]
    async with FakeDeepgramServer(script, api_key=KEY) as server:
        events = await adapter_session(server, silence(4.0))
    assert events[0] == SpeechStarted(at=0.2)
    finals = [e for e in events if isinstance(e, Transcript) and e.is_final]
    assert [(f.text, f.end_of_turn) for f in finals] == [
        ("hello there how are you", False),
        ("today", True),  # speech_final
        ("and you", True),
    ]
    # One end of speech per utterance: at speech_final; the UtteranceEnd after it adds nothing.
    assert [type(e).__name__ for e in events if not isinstance(e, Transcript)] == [
        "SpeechStarted",
        "SpeechEnded",
        "SpeechStarted",
        "SpeechEnded",
    ]
    detector, now, turns = EndpointingDetector(), 0.0, []
    for event in events:
        now += 0.1
        detector.observe(event, now)
        ends = detector.ends_at()
        if isinstance(event, SpeechEnded) and ends is not None:
            turns.append(detector.take())
    assert turns == ["hello there how are you today", "and you"]


async def test_utterance_end_ends_the_speech_when_endpointing_never_fires() -> None:
    async with FakeDeepgramServer(SCRIPT, api_key=KEY) as server:
        events = await adapter_session(server, silence(2.5), endpointing=False)
        assert server.sessions[0].query["endpointing"] == "false"
    ends = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(ends) == 1 and ends[0].at == pytest.approx(1.1)  # from UtteranceEnd's last_word_end
    assert [e.text for e in events if isinstance(e, Transcript) and e.is_final] == [
        "hello there how are you",
        "today",
    ]


async def test_a_finalize_final_ends_the_turn() -> None:
    async with FakeDeepgramServer([Speech("wait for it", 0.1, 0.4)], api_key=KEY) as server:
        events = await adapter_session(server, silence(0.45), endpointing=False, utterance_end_ms=None)
        assert server.sessions[0].controls[0] == {"type": "Finalize"}
    assert [e for e in events if isinstance(e, Transcript) and e.is_final] == [
        Transcript("wait for it", True, True)
    ]


async def test_an_idle_stream_is_closed_with_net_0001_and_the_error_is_typed() -> None:
    async with FakeDeepgramServer(api_key=KEY, idle_timeout=0.2) as server:
        with anyio.fail_after(10):
            async with DeepgramSTT(KEY, url=server.url, keepalive=60) as stt:
                with pytest.raises(DeepgramServerError, match="NET-0001") as info:
                    async for _ in stt.events():
                        pass
    assert info.value.code == 1011


async def test_keepalive_keeps_an_idle_stream_open() -> None:
    async with FakeDeepgramServer(api_key=KEY, idle_timeout=0.5) as server:
        with anyio.fail_after(10):
            async with DeepgramSTT(KEY, url=server.url, keepalive=0.05) as stt:
                while stt.keepalives_sent < 20:  # noqa: ASYNC110  # well past the idle timeout, by KeepAlives alone
                    await anyio.sleep(0.02)
                await stt.send_audio(silence(0.1))
        assert server.sessions[0].sent[-1]["type"] == "Metadata"  # closed by CloseStream, not NET-0001


async def test_bad_options_and_a_bad_key_are_typed_handshake_errors() -> None:
    async with FakeDeepgramServer(api_key=KEY) as server:
        with pytest.raises(DeepgramHandshakeError) as info:
            async with DeepgramSTT("wrong", url=server.url):
                pass
        assert info.value.status_code == 401
        bad = DeepgramOptions(extra={"interim_results": "yes"})
        with pytest.raises(DeepgramHandshakeError) as info:
            async with DeepgramSTT(KEY, bad, url=server.url):
                pass
        assert info.value.status_code == 400


async def test_a_server_error_message_and_a_data_close_are_typed() -> None:
    error = {"type": "Error", "variant": "SchemaError", "description": "bad frame", "message": "{}"}
    for item in (Emit(3200, error), Emit(3200, close_code=1008, close_reason="DATA-0000")):
        async with FakeDeepgramServer([item], api_key=KEY) as server:
            with anyio.fail_after(10):
                async with DeepgramSTT(KEY, url=server.url) as stt:
                    await stt.send_audio(silence(0.2))
                    with pytest.raises(DeepgramServerError):
                        async for _ in stt.events():
                            pass


def test_parse_reads_deepgrams_documented_results_shape() -> None:
    alternative = {"transcript": "another big", "confidence": 0.96, "words": []}
    doc = {
        "type": "Results",
        "channel_index": [0, 1],
        "duration": 1.04,
        "start": 0.0,
        "is_final": True,
        "speech_final": True,
        "channel": {"alternatives": [alternative]},
        "metadata": {
            "request_id": "r",
            "model_info": {"name": "n", "version": "v", "arch": "a"},
            "model_uuid": "u",
        },
    }
    assert schema_problems(ListenV1Results, doc) == []
    assert parse_server_message(json.dumps(doc)) == DeepgramResults(
        "another big", True, True, False, 0.0, 1.04
    )


async def test_the_fake_accepts_the_key_as_a_websocket_subprotocol_as_deepgram_does() -> None:
    async with FakeDeepgramServer(api_key=KEY) as server:
        with anyio.fail_after(10):
            async with connect(server.url, subprotocols=[Subprotocol("token"), Subprotocol(KEY)]) as ws:
                assert ws.subprotocol == "token"
                await ws.send(json.dumps({"type": "CloseStream"}))
                assert json.loads(await ws.recv())["type"] == "Metadata"
            with pytest.raises(InvalidStatus):
                async with connect(server.url, subprotocols=[Subprotocol("token"), Subprotocol("wrong")]):
                    pass


async def test_a_late_utterance_end_about_earlier_words_does_not_end_the_new_speech() -> None:
    def final(text: str, start: float, end: float) -> dict[str, Any]:
        return results([(text, start, end)], start, end, is_final=True, speech_final=True)

    script = [
        Emit(1600, {"type": "SpeechStarted", "channel": [0, 1], "timestamp": 0.1}),
        Emit(3200, final("hi", 0.1, 0.5)),
        Emit(4800, {"type": "SpeechStarted", "channel": [0, 1], "timestamp": 1.6}),
        Emit(6400, {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 0.5}),  # stale: before 1.6
        Emit(8000, final("there", 1.6, 2.0)),
    ]
    async with FakeDeepgramServer(script, api_key=KEY) as server:
        events = await adapter_session(server, silence(0.3))
    assert [(type(e).__name__, e.at) for e in events if not isinstance(e, Transcript)] == [
        ("SpeechStarted", 0.1),
        ("SpeechEnded", 0.5),
        ("SpeechStarted", 1.6),
        ("SpeechEnded", 2.0),  # from the speech_final of "there", not the stale UtteranceEnd
    ]
