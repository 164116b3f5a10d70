from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from tests.audio_helpers import tone_power
from voiceagent.adapters.elevenlabs import ElevenLabsSink
from voiceagent.adapters.elevenlabs_fake import FakeElevenLabsServer
from voiceagent.audio_output import CollectingOutput
from voiceagent.errors import TTSError, TTSInterruptedError
from voiceagent.testing.outputs import GatedOutput

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server() -> AsyncIterator[FakeElevenLabsServer]:
    async with FakeElevenLabsServer() as server:
        yield server


def make_sink(server: FakeElevenLabsServer, output: Any = None, **kwargs: Any) -> ElevenLabsSink:
    kwargs.setdefault("api_key", "test-key")
    kwargs.setdefault("voice_id", "JBFqnCBsd6RMkjVDRZzb")
    return ElevenLabsSink(
        output if output is not None else CollectingOutput(16000), base_url=server.base_url, **kwargs
    )


async def test_streams_pcm_with_the_documented_messages(server: FakeElevenLabsServer) -> None:
    out = CollectingOutput(16000)
    sink = make_sink(server, out, voice_settings={"stability": 0.5, "similarity_boost": 0.8})
    with anyio.fail_after(10):
        await sink.speak("Hello from ElevenLabs.")
        await sink.flush()
    [upgrade] = server.upgrades
    assert upgrade.path == "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/stream-input"
    assert upgrade.query == {"model_id": "eleven_flash_v2_5", "output_format": "pcm_16000"}
    assert upgrade.headers["xi-api-key"] == "test-key"
    assert server.messages == [
        {"text": " ", "voice_settings": {"stability": 0.5, "similarity_boost": 0.8}},
        {"text": "Hello from ElevenLabs. ", "flush": True},
        {"text": ""},
    ]
    [utterance] = server.utterances
    assert out.pcm16 == utterance.pcm16  # same rate: no resampling
    assert tone_power(out.pcm16, 16000, 440) > 100 * tone_power(out.pcm16, 16000, 1500)
    assert out.chunks[0].text_span == "Hello from ElevenLabs."
    assert sink.played_chars == len("Hello from ElevenLabs.")


async def test_resamples_to_the_output_rate(server: FakeElevenLabsServer) -> None:
    out = CollectingOutput(8000)
    sink = make_sink(server, out, sample_rate=24000)
    with anyio.fail_after(10):
        await sink.speak("Resampled speech.")
        await sink.flush()
    assert server.upgrades[0].query["output_format"] == "pcm_24000"
    expected = len(server.utterances[0].pcm16) // 3
    assert abs(len(out.pcm16) - expected) <= 4
    assert tone_power(out.pcm16, 8000, 440) > 100 * tone_power(out.pcm16, 8000, 1500)


async def test_bad_key_is_a_typed_error_and_nothing_is_heard(server: FakeElevenLabsServer) -> None:
    sink = make_sink(server, api_key="wrong")
    with anyio.fail_after(10), pytest.raises(TTSError) as info:
        await sink.speak("Nobody hears this.")
    assert info.value.code == "invalid_api_key"
    assert not isinstance(info.value, TTSInterruptedError)
    assert sink.played_chars == 0


async def test_rejected_upgrade_carries_the_status(server: FakeElevenLabsServer) -> None:
    server.reject_status = 429
    sink = make_sink(server)
    with anyio.fail_after(10), pytest.raises(TTSError) as info:
        await sink.speak("Too many.")
    assert info.value.status_code == 429


async def test_vendor_error_message_is_a_typed_error(server: FakeElevenLabsServer) -> None:
    server.fail_next("quota_exceeded", "You have exceeded your quota")
    sink = make_sink(server)
    with anyio.fail_after(10), pytest.raises(TTSError, match="exceeded your quota") as info:
        await sink.speak("Over quota.")
    assert info.value.code == "quota_exceeded"


async def test_drop_mid_utterance_is_interrupted_then_the_next_text_reconnects(
    server: FakeElevenLabsServer,
) -> None:
    server.drop_next(after_chunks=2)
    out = CollectingOutput(16000)
    sink = make_sink(server, out)
    text = "A long sentence that will be cut off part way through its audio."
    with anyio.fail_after(10):
        with pytest.raises(TTSInterruptedError):
            await sink.speak(text)
        assert len(out.pcm16) == 2 * int(0.1 * 16000) * 2  # the two chunks that arrived were kept
        await sink.speak("Back again.")
        await sink.flush()
    assert len(server.upgrades) == 2
    assert server.utterances[1].text == "Back again. "


async def test_barge_in_closes_the_socket_and_stops_audio(server: FakeElevenLabsServer) -> None:
    out = GatedOutput(16000, free_writes=1)
    sink = make_sink(server, out)
    text = "A sentence long enough to be interrupted while its audio is being delivered to the caller."
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.speak, text)
            await out.blocked.wait()
            await sink.cancel()
            out.release()
        # The socket is closed by the barge-in (not left open for the server to keep generating).
        await server.wait_until(lambda: server.connections_closed == 1)
    assert len(out.chunks) == 1  # nothing was written after the cancel
    assert sink.played_chars < len(text)


async def test_blank_text_opens_no_connection(server: FakeElevenLabsServer) -> None:
    sink = make_sink(server)
    with anyio.fail_after(10):
        await sink.speak("   ")
        await sink.flush()
    assert server.upgrades == []


async def test_unicode_text_is_sent_as_written(server: FakeElevenLabsServer) -> None:
    sink = make_sink(server)
    with anyio.fail_after(10):
        await sink.speak("Grüße, こんにちは 👋")
        await sink.flush()
    assert server.utterances[0].text == "Grüße, こんにちは 👋 "
    assert sink.played_chars == len("Grüße, こんにちは 👋")


def test_rejects_an_unsupported_rate() -> None:
    from voiceagent.adapters.elevenlabs import ElevenLabsEngine

    with pytest.raises(ValueError, match="sample_rate"):
        ElevenLabsEngine(api_key="k", voice_id="v", sample_rate=11025)
