"""Cartesia's WebSocket TTS engine through a ``Speaker`` against the fake on 127.0.0.1, and the official
``cartesia`` SDK (4.2.0) as the contract: its websocket client runs against the fake, and every message
our engine sends is checked against the SDK's own request types."""

from __future__ import annotations

import typing
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import pydantic
import pytest
from cartesia import AsyncCartesia
from cartesia.types.generation_request_param import GenerationRequestParam
from cartesia.types.raw_output_format_param import RawOutputFormatParam
from cartesia.types.websocket_client_event_param import CancelContextRequest
from cartesia.types.websocket_response import Chunk, Done

from tests.audio_helpers import tone_power
from voiceagent import audio
from voiceagent.adapters.cartesia import CartesiaEngine, CartesiaSink
from voiceagent.adapters.cartesia_fake import FakeCartesiaServer, error_message
from voiceagent.audio_output import CollectingOutput
from voiceagent.errors import TTSError, TTSInterruptedError
from voiceagent.speaker import Speaker
from voiceagent.testing.outputs import GatedOutput

pytestmark = pytest.mark.anyio

TEXT = "Hello from Cartesia."


@pytest.fixture
async def server() -> AsyncIterator[FakeCartesiaServer]:
    async with FakeCartesiaServer() as server:
        yield server


def engine(server: FakeCartesiaServer, **kwargs: Any) -> CartesiaEngine:
    kwargs.setdefault("api_key", "test-key")
    kwargs.setdefault("voice_id", "a0e99841-438c-4a64-b679-ae501e7d6091")
    return CartesiaEngine(url=server.ws_url, **kwargs)


def sdk_problems(typed_dict: Any, message: Mapping[str, Any]) -> list[str]:
    """Everything wrong with ``message`` as the SDK's ``typed_dict``: unknown keys, missing required keys,
    and what pydantic rejects (Literal values included)."""
    hints = typing.get_type_hints(typed_dict)
    problems = [f"{key!r} is not a field of {typed_dict.__name__}" for key in message if key not in hints]
    problems += [f"{key!r} is missing" for key in typed_dict.__required_keys__ if key not in message]
    try:
        pydantic.TypeAdapter(typed_dict).validate_python(dict(message), strict=True)
    except pydantic.ValidationError as exc:
        problems.append(f"{typed_dict.__name__} rejects it: {exc}")
    return problems


def check_against_sdk(messages: list[dict[str, Any]]) -> None:
    for message in messages:
        if message.get("cancel") is True:
            assert sdk_problems(CancelContextRequest, message) == []
            continue
        assert sdk_problems(GenerationRequestParam, message) == []
        assert sdk_problems(RawOutputFormatParam, message["output_format"]) == []
        assert set(message["voice"]) == {"id"}  # the SDK's TTSRequestVoiceObject: id is its one field


async def test_audio_arrives_through_a_speaker(server: FakeCartesiaServer) -> None:
    out = CollectingOutput(16000)
    async with Speaker(engine(server, sample_rate=24000, add_timestamps=True), out) as sink:
        await sink.speak(TEXT)
        await sink.flush()
    [upgrade] = server.upgrades
    assert upgrade.path == "/tts/websocket"
    assert upgrade.headers["authorization"] == "Bearer test-key"
    assert upgrade.headers["cartesia-version"] == "2026-08-14"
    [message] = server.messages
    assert message["transcript"] == TEXT and message["continue"] is False
    assert message["output_format"] == {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000}
    check_against_sdk(server.messages)
    [utterance] = server.utterances
    expected = audio.resample(utterance.pcm16, 24000, 16000)
    assert abs(len(out.pcm16) - len(expected)) <= 4
    assert tone_power(out.pcm16, 16000, 440) > 100 * tone_power(out.pcm16, 16000, 1500)
    assert out.chunks[0].text_span == TEXT and sink.played_chars == len(TEXT)
    [stamps] = sink.word_timestamps
    assert stamps.words == ("Hello", "from", "Cartesia.") and stamps.text == TEXT


async def test_barge_in_cancels_the_context_and_the_next_text_reuses_the_socket(
    server: FakeCartesiaServer,
) -> None:
    server.hold_after = 2  # the server is mid-generation when the barge-in lands
    out = GatedOutput(24000, free_writes=1)
    async with CartesiaSink(
        out, api_key="test-key", voice_id="v1", url=server.ws_url, sample_rate=24000
    ) as sink:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sink.speak, "A long first answer that the caller interrupts.")
                await out.blocked.wait()
                await sink.cancel()
            await server.wait_until(lambda: len(server.cancels) == 1)
        first = sink.context_ids[0]
        assert server.cancels == [{"context_id": first, "cancel": True}]
        assert sink.cancelled_contexts == [first]
        out.release()
        server.hold_after = None
        with anyio.fail_after(10):
            await sink.speak("Sure.")
            await sink.flush()
        assert server.connections_opened == 1  # no reconnect
        assert len(server.upgrades) == 1
    second = server.utterances[1]
    assert second.transcript == "Sure." and second.context_id == sink.context_ids[1] != first
    # generation stopped at the cancel: two 0.1 s chunks of a text worth more
    assert len(server.utterances[0].pcm16) == 2 * 2400 * 2 < 0.02 * 40 * 24000 * 2
    check_against_sdk(server.messages)


async def test_late_audio_of_a_cancelled_context_is_dropped(server: FakeCartesiaServer) -> None:
    # The server had generated the whole first text before the cancel: its chunks and done are still in
    # the socket when the next text starts, and none of it may be played as the next text's audio.
    out = GatedOutput(24000, free_writes=1)
    sink = Speaker(engine(server, sample_rate=24000), out)
    async with sink:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sink.speak, "A first answer the server finishes generating at once.")
                await out.blocked.wait()
                await server.wait_until(lambda: len(server.done) == 1)
                await sink.cancel()
            out.release()
            before = len(out.chunks)
            await sink.speak("Sure.")
            await sink.flush()
    assert server.connections_opened == 1 and len(server.cancels) == 1
    second = server.utterances[1]
    assert second.transcript == "Sure."
    # exactly the second text's audio, nothing of the first
    assert b"".join(c.pcm16 for c in out.chunks[before:]) == second.pcm16


async def test_an_error_message_is_a_tts_error(server: FakeCartesiaServer) -> None:
    server.fail_next(error_message("voice not found", status_code=404, error_code="voice_not_found"))
    out = CollectingOutput(24000)
    async with Speaker(engine(server), out) as sink:
        with pytest.raises(TTSError) as caught:
            await sink.speak(TEXT)
        assert caught.value.code == "voice_not_found" and caught.value.status_code == 404
        assert not isinstance(caught.value, TTSInterruptedError)
        assert caught.value.request_id == "req-fake"
        await sink.speak("Again.")  # the socket is still good
        await sink.flush()
        assert out.pcm16 == server.utterances[-1].pcm16
    assert server.connections_opened == 1


async def test_a_rejected_request_is_a_tts_error(server: FakeCartesiaServer) -> None:
    tts = engine(server, model_id="")
    async with Speaker(tts, CollectingOutput(24000)) as sink:
        with pytest.raises(TTSError, match="model_id") as caught:
            await sink.speak(TEXT)
        assert caught.value.status_code == 400 and caught.value.code == "invalid_request"


async def test_bad_key_and_refused_upgrade_are_tts_errors(server: FakeCartesiaServer) -> None:
    with pytest.raises(TTSError) as caught:
        async with Speaker(engine(server, api_key="wrong"), CollectingOutput(24000)):
            pass
    assert caught.value.status_code == 401 and "Invalid API key" in str(caught.value)
    server.reject_status = 429
    with pytest.raises(TTSError) as caught:
        await Speaker(engine(server), CollectingOutput(24000)).speak(TEXT)
    assert caught.value.status_code == 429


async def test_a_dropped_socket_mid_utterance_is_interrupted_and_the_next_text_reconnects(
    server: FakeCartesiaServer,
) -> None:
    server.drop_next(after_chunks=1)
    out = CollectingOutput(24000)
    async with Speaker(engine(server, sample_rate=24000), out) as sink:
        with anyio.fail_after(10):
            with pytest.raises(TTSInterruptedError):
                await sink.speak("A text long enough for several chunks of audio.")
            await sink.speak(TEXT)
            await sink.flush()
    assert server.connections_opened == 2
    assert out.pcm16.endswith(server.utterances[-1].pcm16)


async def test_a_socket_the_server_closed_while_idle_is_replaced_once(server: FakeCartesiaServer) -> None:
    out = CollectingOutput(24000)
    async with Speaker(engine(server, sample_rate=24000), out) as sink:
        with anyio.fail_after(10):
            await sink.speak(TEXT)
            assert await server.close_all() == 1
            await server.wait_until(lambda: server.connections_closed == 1)
            before = len(out.chunks)
            await sink.speak("Still here.")
            await sink.flush()
    assert server.connections_opened == 2
    assert b"".join(c.pcm16 for c in out.chunks[before:]) == server.utterances[-1].pcm16
    assert server.utterances[-1].transcript == "Still here."


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        CartesiaEngine(api_key="k", voice_id="v", sample_rate=12345)
    with pytest.raises(ValueError, match="voice_id"):
        CartesiaEngine(api_key="k", voice_id="")


async def test_the_official_sdk_runs_against_the_fake(server: FakeCartesiaServer) -> None:
    """The contract: Cartesia's own websocket client speaks to the fake, and the fake's answers parse as
    the SDK's response types; the SDK's cancel reaches the fake as ours does."""
    client = AsyncCartesia(api_key="test-key", websocket_base_url=server.base_url)
    request: GenerationRequestParam = {
        "context_id": "ctx-1",
        "model_id": "sonic-3",
        "transcript": TEXT,
        "voice": {"id": "v1"},
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 16000},
        "continue": False,
    }
    pcm = b""
    with anyio.fail_after(10):
        async with client.tts.websocket_connect() as connection:
            await connection.send(request)
            async for event in connection:
                if isinstance(event, Chunk):
                    pcm += event.audio or b""
                elif isinstance(event, Done):
                    break
            await connection.send({"context_id": "ctx-1", "cancel": True})
            await server.wait_until(lambda: len(server.cancels) == 1)
    assert pcm == server.utterances[0].pcm16 and pcm
    assert server.upgrades[0].headers["authorization"] == "Bearer test-key"
    # The SDK sends what our engine sends: the same keys and the same version.
    ours = CartesiaEngine(api_key="k", voice_id="v1", sample_rate=16000, language=None).request(TEXT, "ctx-1")
    assert ours == {**request, "model_id": "sonic-3"}
    assert server.upgrades[0].headers["cartesia-version"] == "2026-08-14"
    assert server.cancels == [{"context_id": "ctx-1", "cancel": True}]
    await client.close()
