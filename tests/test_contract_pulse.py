"""Pulse STT: the fake and the adapter checked against clients the project did not write.

The official ``smallestai`` SDK's streaming STT client runs against ``FakePulseServer``, so the fake
accepts what the vendor's own client sends and answers in the vendor's own response models; and the
shapes other reference clients rely on (LiveKit: ``keepalive``/``pong`` and bare ``{"error": ...}``
frames; Pipecat: ``model=pulse-2``) are handled by the fake and the adapter.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest
from smallestai import AsyncSmallestAI
from smallestai.core.api_error import ApiError
from smallestai.environment import SmallestAIEnvironment
from smallestai.waves.helpers.streaming_stt import build_stt_stream_query, stream_speech_to_text
from smallestai.waves.speech_to_text.types.close_stream import CloseStream
from smallestai.waves.speech_to_text.types.finalize_signal import FinalizeSignal
from smallestai.waves.speech_to_text.types.transcription_error_event import TranscriptionErrorEvent
from smallestai.waves.speech_to_text.types.transcription_event import TranscriptionEvent
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.sdk_schemas import schema_problems
from voiceagent.adapters.pulse import (
    PulseErrorMessage,
    PulseOptions,
    PulseServerError,
    PulseSTT,
    PulseTranscript,
    parse_server_message,
)
from voiceagent.adapters.pulse.fake import Emit, FakePulseServer, error_message, transcript
from voiceagent.stt import Transcript

pytestmark = pytest.mark.anyio

KEY = "sk_test"


def tone(seconds: float, rate: int = 16000) -> bytes:
    n = int(seconds * rate)
    return struct.pack(f"<{n}h", *(int(6000 * math.sin(2 * math.pi * 300 * i / rate)) for i in range(n)))


def sdk_client(server: FakePulseServer) -> AsyncSmallestAI:
    parts = urlsplit(server.url)
    ws_root = f"{parts.scheme}://{parts.netloc}"
    http_root = ws_root.replace("ws://", "http://")
    environment = SmallestAIEnvironment(atoms=http_root, waves=http_root, waves_ws=ws_root, payment=http_root)
    return AsyncSmallestAI(api_key=KEY, environment=environment)


# ---- the official SDK's streaming STT client against the fake -----------------------------------------


async def test_sdk_stream_gets_partials_a_finalize_final_and_is_last_from_the_fake() -> None:
    script = [
        Emit(3200, transcript("hello")),
        Emit(6400, transcript("hello world", is_final=True)),
        Emit(9600, transcript("how are")),
    ]
    async with FakePulseServer(script, api_key=KEY) as server:
        client = sdk_client(server)
        events: list[TranscriptionEvent] = []
        with anyio.fail_after(10):
            async with stream_speech_to_text(
                client, language="en", sample_rate=16000, vad_events=True, keywords=["Smallest", "Pulse"]
            ) as socket:
                audio = tone(0.4)
                for offset in range(0, len(audio), 3200):
                    await socket.send_audio_chunk_out(audio[offset : offset + 3200])
                await socket.send_finalize_signal(FinalizeSignal(type="finalize"))
                await socket.send_close_stream(CloseStream(type="close_stream"))
                async for event in socket:
                    assert isinstance(event, TranscriptionEvent), event
                    events.append(event)
                    if event.is_last:
                        break
        session = server.sessions[0]
    assert session.query["model"] == "pulse" and session.query["keywords"] == "Smallest,Pulse"
    assert session.query["vad_events"] == "true"
    assert session.controls == ["finalize", "close_stream"]
    assert [(e.transcript, e.is_final, e.from_finalize) for e in events] == [
        ("hello", False, False),
        ("hello world", True, False),
        ("how are", False, False),
        ("how are", True, True),
        ("", True, False),
    ]
    assert events[-1].is_last is True and events[1].language == "en"


async def test_sdk_stream_reads_the_fakes_error_as_its_error_event() -> None:
    async with FakePulseServer([Emit(3200, error_message("audio too loud"))], api_key=KEY) as server:
        with anyio.fail_after(10):
            async with stream_speech_to_text(sdk_client(server), language="en") as socket:
                await socket.send_audio_chunk_out(tone(0.1))
                event = await socket.recv()
    assert isinstance(event, TranscriptionErrorEvent) or (
        isinstance(event, TranscriptionEvent) and event.type == "error"  # the SDK's union picks either
    )
    assert event.model_dump(by_alias=True)["message"] == "audio too loud"


async def test_the_fake_refuses_what_the_sdk_says_the_service_refuses() -> None:
    async with FakePulseServer(api_key=KEY) as server:
        with pytest.raises(ApiError) as info:
            async with stream_speech_to_text(sdk_client(server), language="en", model="pulse-pro"):
                pass
    assert info.value.status_code == 400
    assert server.rejected and server.rejected[0][0] == 400


# ---- shapes other reference clients rely on ---------------------------------------------------------------


async def test_keepalive_is_answered_with_pong_as_livekit_expects() -> None:
    async with FakePulseServer(api_key=KEY) as server:
        with anyio.fail_after(10):
            async with connect(
                f"{server.url}?model=pulse&language=en", additional_headers={"Authorization": f"Bearer {KEY}"}
            ) as ws:
                await ws.send(json.dumps({"type": "keepalive"}))
                answer = json.loads(await ws.recv())
    assert answer == {"type": "pong"}
    assert server.sessions[0].controls == ["keepalive"]


async def test_pulse_2_streams_as_pipecat_does() -> None:
    async with FakePulseServer([Emit(3200, transcript("hi", is_final=True))], api_key=KEY) as server:
        got: list[Any] = []
        with anyio.fail_after(10):
            async with PulseSTT(KEY, PulseOptions(model="pulse-2", language="en"), url=server.url) as stt:
                await stt.send_audio(tone(0.2))
                async for event in stt.events():
                    got.append(event)
                    break
    assert server.sessions[0].query["model"] == "pulse-2"
    assert got == [Transcript("hi", True)]


async def test_pulse_pro_is_refused_before_the_upgrade() -> None:
    async with FakePulseServer(api_key=KEY) as server:
        with pytest.raises(InvalidStatus) as info:
            async with connect(
                f"{server.url}?model=pulse-pro&language=en",
                additional_headers={"Authorization": f"Bearer {KEY}"},
            ):
                pass
    assert info.value.response.status_code == 400


def test_a_bare_error_frame_is_an_error_and_a_transcript_stays_a_transcript() -> None:
    assert parse_server_message('{"error": "model not loaded"}') == PulseErrorMessage("model not loaded")
    assert parse_server_message('{"error": {"message": "bad audio"}}') == PulseErrorMessage("bad audio")
    message = parse_server_message('{"transcript": "hi", "is_final": true, "error": null}')
    assert isinstance(message, PulseTranscript) and message.text == "hi"
    message = parse_server_message('{"transcript": "hi", "is_final": false, "error": "x"}')
    assert isinstance(message, PulseTranscript)


async def test_a_self_hosted_servers_bare_error_frame_surfaces_from_events() -> None:
    # A self-hosted Pulse reports errors as {"error": "..."}; it used to be dropped, leaving the
    # stream waiting forever.
    script = [Emit(3200, transcript("partial")), Emit(6400, {"error": "inference worker crashed"})]
    async with FakePulseServer(script, api_key=KEY) as server:
        got: list[Any] = []
        with anyio.fail_after(10):
            async with PulseSTT(KEY, url=server.url) as stt:
                await stt.send_audio(tone(0.5))
                await stt.flush()
                with pytest.raises(PulseServerError, match="inference worker crashed"):
                    async for event in stt.events():
                        got.append(event)
    assert got == [Transcript("partial", False)]


# ---- what the adapter sends validates against the SDK's own request side --------------------------------


def test_the_adapters_query_is_what_the_sdks_typed_helper_builds() -> None:
    options = PulseOptions(
        language="hi", sample_rate=8000, encoding="mulaw", word_timestamps=True, eou_timeout_ms=600
    )
    sdk = build_stt_stream_query(
        language="hi",
        sample_rate=8000,
        encoding="mulaw",
        vad_events=True,
        word_timestamps=True,
        eou_timeout_ms=600,
    )
    assert options.query() == {name: str(value) for name, value in sdk.items()}


async def test_the_adapters_control_messages_validate_against_the_sdk() -> None:
    async with FakePulseServer(api_key=KEY) as server:
        with anyio.fail_after(10):
            async with PulseSTT(KEY, url=server.url) as stt:
                await stt.send_audio(tone(0.1))
                await stt.finalize()
        finalize, close = server.sessions[0].control_messages
    assert schema_problems(FinalizeSignal, finalize) == []
    assert schema_problems(CloseStream, close) == []
    assert schema_problems(FinalizeSignal, {"type": "flush"}) != []  # the check can fail
