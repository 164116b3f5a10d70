from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from typing import Any

import anyio
import openai
import pytest

from tests.audio_helpers import tone_power
from voiceagent import audio
from voiceagent.adapters.openai_speech import OpenAISpeechSink, deprecated_openai_model
from voiceagent.adapters.openai_speech_fake import FakeSpeechServer
from voiceagent.audio_output import CollectingOutput
from voiceagent.errors import TTSError, TTSInterruptedError
from voiceagent.limiter import ConcurrencyLimiter

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server() -> AsyncIterator[FakeSpeechServer]:
    async with FakeSpeechServer() as server:
        yield server


def make_sink(server: FakeSpeechServer, output: Any = None, **kwargs: Any) -> OpenAISpeechSink:
    client = openai.AsyncOpenAI(
        base_url=server.base_url, api_key=kwargs.pop("api_key", "test-key"), max_retries=0
    )
    kwargs.setdefault("model", "kokoro")  # a compatible server's own model name
    return OpenAISpeechSink(
        output if output is not None else CollectingOutput(24000), client=client, **kwargs
    )


async def test_streams_pcm_from_the_speech_endpoint(server: FakeSpeechServer) -> None:
    out = CollectingOutput(16000)
    sink = make_sink(server, out, model="tts-1", voice="nova", speed=1.5, instructions="cheerful")
    await sink.speak("Hello from an OpenAI compatible server.")
    await sink.flush()
    [request] = server.requests
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.body == {
        "model": "tts-1",
        "voice": "nova",
        "input": "Hello from an OpenAI compatible server.",
        "response_format": "pcm",
        "speed": 1.5,
        "instructions": "cheerful",
    }
    expected = audio.resample(request.pcm16, 24000, 16000)
    assert abs(len(out.pcm16) - len(expected)) <= 4  # resampled from 24 kHz, stream-wise
    assert tone_power(out.pcm16, 16000, 440) > 100 * tone_power(out.pcm16, 16000, 1500)
    assert out.chunks[0].text_span == "Hello from an OpenAI compatible server."
    assert sink.played_chars == len("Hello from an OpenAI compatible server.")
    assert len(sink.ttfb) == 1 and sink.request_ids == ["req_1"]


async def test_same_rate_output_gets_the_exact_bytes(server: FakeSpeechServer) -> None:
    out = CollectingOutput(24000)
    sink = make_sink(server, out)
    await sink.speak("Exact.")
    assert out.pcm16 == server.requests[0].pcm16


async def test_a_server_that_sends_wav_is_handled(server: FakeSpeechServer) -> None:
    out = CollectingOutput(24000)
    sink = make_sink(server, out, extra_body={"response_format": "wav"})
    await sink.speak("Wave file.")
    assert server.requests[0].body["response_format"] == "wav"
    assert out.pcm16 == server.requests[0].pcm16  # the header was parsed, not played


async def test_long_input_is_split(server: FakeSpeechServer) -> None:
    sink = make_sink(server, max_input_chars=100)
    text = "A sentence for splitting. " * 10
    await sink.speak(text)
    inputs = [r.body["input"] for r in server.requests]
    assert len(inputs) == 4 and "".join(inputs) == text and all(len(i) <= 100 for i in inputs)
    assert sink.played_chars == len(text)


@pytest.mark.parametrize(("status", "fragment"), [(429, "Rate limit reached"), (401, "Incorrect API key")])
async def test_status_errors(server: FakeSpeechServer, status: int, fragment: str) -> None:
    if status == 429:
        server.reject_status = 429
    out = CollectingOutput(24000)
    sink = make_sink(server, out, api_key="test-key" if status == 429 else "wrong")
    with pytest.raises(TTSError) as info:
        await sink.speak("Refused.")
    assert info.value.status_code == status and fragment in info.value.message
    assert info.value.request_id == "req_err_1"
    assert out.chunks == [] and sink.played_chars == 0


async def test_bad_request_from_the_server(server: FakeSpeechServer) -> None:
    sink = make_sink(server, extra_body={"response_format": "mp3"})
    with pytest.raises(TTSError, match="only speaks pcm and wav") as info:
        await sink.speak("Unsupported.")
    assert info.value.status_code == 400


async def test_drop_mid_stream(server: FakeSpeechServer) -> None:
    out = CollectingOutput(24000)
    text = "This stream stops after a little while, mid sentence."
    sink = make_sink(server, out)
    server.drop_next(after_chunks=3)
    with pytest.raises(TTSInterruptedError):
        await sink.speak(text)
    assert out.chunks and out.written_seconds < server.seconds_for(text)
    assert 0 < sink.played_chars < len(text)
    await sink.speak("Recovered.")
    assert sink.spoken_spans[-1].fully_played


async def test_unreachable_server() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
    sink = OpenAISpeechSink(CollectingOutput(24000), client=client, model="kokoro")
    with pytest.raises(TTSError, match="cannot reach the speech endpoint"):
        await sink.speak("Hello?")


async def test_cancel_during_slow_first_byte(server: FakeSpeechServer) -> None:
    server.first_byte_gate = anyio.Event()
    out = CollectingOutput(24000)
    sink = make_sink(server, out)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sink.speak, "Never heard.")
        await server.wait_until(lambda: server.started == 1)
        await sink.cancel()
    assert out.chunks == [] and sink.played_chars == 0 and out.clears == 1
    server.first_byte_gate.set()
    await sink.speak("Next.")
    assert sink.played_chars == len("Next.")


async def test_limiter_caps_concurrent_requests(server: FakeSpeechServer) -> None:
    server.first_byte_gate = anyio.Event()
    limiter = ConcurrencyLimiter(1)
    a, b = make_sink(server, limiter=limiter), make_sink(server, limiter=limiter)
    async with anyio.create_task_group() as tg:
        tg.start_soon(a.speak, "First.")
        await server.wait_until(lambda: server.started == 1)
        tg.start_soon(b.speak, "Second.")
        await anyio.wait_all_tasks_blocked()
        assert server.attempts == 1
        server.first_byte_gate.set()
    assert [r.body["input"] for r in server.requests] == ["First.", "Second."]


async def test_owned_client_is_closed(server: FakeSpeechServer) -> None:
    async with OpenAISpeechSink(
        CollectingOutput(24000), base_url=server.base_url, api_key="test-key", model="kokoro"
    ) as sink:
        await sink.speak("Own client.")
    assert sink.client.is_closed()


# ---- no default model that OpenAI shuts down (2027-01-06) ------------------------------------------


def test_the_model_is_required() -> None:
    client = openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="k")
    with pytest.raises(TypeError, match="model"):
        OpenAISpeechSink(CollectingOutput(24000), client=client)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="model is required"):
        OpenAISpeechSink(CollectingOutput(24000), client=client, model="")


@pytest.mark.parametrize(
    "model", ["tts-1", "tts-1-hd", "tts-1-1106", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15"]
)
def test_openais_deprecated_speech_models_warn_on_openai(model: str) -> None:
    client = openai.AsyncOpenAI(base_url="https://api.openai.com/v1", api_key="k")
    with pytest.warns(FutureWarning, match="2027-01-06"):
        OpenAISpeechSink(CollectingOutput(24000), client=client, model=model)


def test_the_same_names_on_other_servers_and_other_models_do_not_warn() -> None:
    other = openai.AsyncOpenAI(base_url="http://127.0.0.1:8880/v1", api_key="k")
    on_openai = openai.AsyncOpenAI(base_url="https://api.openai.com/v1", api_key="k")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OpenAISpeechSink(CollectingOutput(24000), client=other, model="tts-1")  # e.g. openedai-speech
        OpenAISpeechSink(CollectingOutput(24000), client=on_openai, model="some-future-tts")
    assert not deprecated_openai_model("tts-10") and not deprecated_openai_model("gpt-4o-mini-tts-x")
