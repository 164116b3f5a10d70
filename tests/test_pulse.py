"""Pulse STT client against the fake Pulse server over a real loopback WebSocket."""

from __future__ import annotations

import json
import math
import struct
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.test_fuzz import assert_pulse_agrees
from voiceagent.adapters.pulse import (
    PulseConcurrencyLimitError,
    PulseConnectionError,
    PulseErrorMessage,
    PulseHandshakeError,
    PulseOptions,
    PulseOtherMessage,
    PulseProtocolError,
    PulseServerError,
    PulseSpeechEvent,
    PulseSTT,
    PulseTranscript,
    build_url,
    parse_server_message,
)
from voiceagent.adapters.pulse.fake import (
    Emit,
    FakePulseServer,
    Speech,
    error_message,
    speech_ended,
    speech_started,
    transcript,
)
from voiceagent.audio import pcm16_to_ulaw
from voiceagent.stt import SpeechEnded, SpeechStarted, STTEvent, STTSource, Transcript

KEY = "sk_test"


def tone(seconds: float, rate: int) -> bytes:
    n = int(seconds * rate)
    return struct.pack(f"<{n}h", *(int(6000 * math.sin(2 * math.pi * 300 * i / rate)) for i in range(n)))


def base(url: str) -> str:
    return url.split("?", 1)[0]


# ---- options and parsing ----------------------------------------------------------------------------


def test_query_has_required_params_and_string_booleans() -> None:
    options = PulseOptions(
        language="hi", word_timestamps=False, extra={"keywords": "Acme:2", "diarize": True}
    )
    query = {k: v[0] for k, v in parse_qs(urlsplit(build_url(options)).query).items()}
    assert build_url(options).startswith("wss://api.smallest.ai/waves/v1/stt/live?")
    assert query == {
        "model": "pulse",
        "language": "hi",
        "encoding": "linear16",
        "sample_rate": "16000",
        "vad_events": "true",
        "word_timestamps": "false",
        "keywords": "Acme:2",
        "diarize": "true",
    }
    twilio = PulseOptions.for_twilio("en")
    assert (twilio.encoding, twilio.sample_rate) == ("mulaw", 8000)


@pytest.mark.parametrize(
    "kwargs",
    [{"language": ""}, {"encoding": "mp3"}, {"sample_rate": 11025}, {"eou_timeout_ms": 50}, {"model": ""}],
)
def test_bad_options_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PulseOptions(**kwargs)


def test_batch_size_is_capped_by_duration_in_whole_samples() -> None:
    assert PulseOptions().batch_size(4096, 128) == 4096  # linear16 16 kHz: 128 ms is 4096 bytes
    assert PulseOptions.for_twilio().batch_size(4096, 128) == 1024
    assert PulseOptions(encoding="opus").batch_size(4096, 128) == 4096
    assert PulseOptions(sample_rate=22050).batch_size(4096, 100) % 2 == 0


def test_parses_current_and_legacy_transcripts_vad_and_errors() -> None:
    full = transcript("Hello", is_final=True) | {"is_last": True}
    assert parse_server_message(json.dumps(full)) == PulseTranscript(
        "Hello", True, True, False, "en", "sess-fake"
    )
    legacy = {"transcript": "hi", "is_final": False, "is_last": False}
    assert parse_server_message(json.dumps(legacy)) == PulseTranscript("hi", False, False)
    assert parse_server_message(json.dumps(speech_started(1.5))) == PulseSpeechEvent(True, 1.5)
    assert parse_server_message(json.dumps(speech_ended(2))) == PulseSpeechEvent(False, 2.0)
    assert parse_server_message(json.dumps(error_message("bad audio"))) == PulseErrorMessage("bad audio")
    assert parse_server_message('{"type": "metadata"}') == PulseOtherMessage("metadata")
    for bad in ("nope", "[]", b"\xff", '{"transcript": 5}'):
        with pytest.raises(PulseProtocolError):
            parse_server_message(bad)


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_fuzz_parser_agrees_with_the_reference_on_arbitrary_input(raw: bytes | str) -> None:
    # Not just "no crash": the independent reference parser in test_fuzz says what each input must give.
    assert_pulse_agrees(raw)


# ---- against the fake server ------------------------------------------------------------------------


async def collect(stt: PulseSTT) -> list[STTEvent]:
    return [event async for event in stt.events()]


@pytest.mark.anyio
async def test_streams_batched_audio_and_yields_partials_finals_and_vad() -> None:
    script = [
        Emit(1, speech_started(0.1)),
        Emit(4096, transcript("hel")),
        Emit(8192, transcript("hello")),
        Emit(12288, transcript("hello world", is_final=True)),
        Emit(12288, speech_ended(0.4)),
    ]
    audio = tone(0.5, 16000)  # 16000 bytes
    async with FakePulseServer(script) as server:
        async with PulseSTT(KEY, PulseOptions(language="en"), url=server.url) as stt:
            assert isinstance(stt, STTSource)
            for offset in range(0, len(audio), 320):  # 10 ms chunks, as a transport delivers them
                await stt.send_audio(audio[offset : offset + 320])
        events = await collect(stt)

    session = server.sessions[0]
    assert events == [
        SpeechStarted(0.1),
        Transcript("hel", False),
        Transcript("hello", False),
        Transcript("hello world", True),
        SpeechEnded(0.4),
    ]
    assert bytes(session.audio) == audio
    assert session.frame_sizes == [4096, 4096, 4096, 16000 - 3 * 4096]  # the tail is flushed on close
    assert session.controls == ["close_stream"] and session.closed_by_close_stream
    assert session.headers["Authorization"] == f"Bearer {KEY}"
    assert session.query["model"] == "pulse" and session.query["vad_events"] == "true"


@pytest.mark.anyio
async def test_finalize_forces_a_final_and_keeps_the_stream_open() -> None:
    script = [Emit(1, transcript("good morn")), Emit(1000, transcript("good morning"))]
    async with FakePulseServer(script) as server:
        async with PulseSTT(KEY, url=server.url) as stt:
            events = stt.events()
            await stt.send_audio(tone(0.1, 16000))
            await stt.flush()
            assert await anext(events) == Transcript("good morn", False)
            assert await anext(events) == Transcript("good morning", False)
            await stt.finalize()
            assert await anext(events) == Transcript(
                "good morning", True, end_of_turn=True
            )  # answers our finalize
            await stt.send_audio(tone(0.05, 16000))
        assert [e async for e in events] == []  # is_last carried no new words
    assert server.sessions[0].controls == ["finalize", "close_stream"]
    assert server.sessions[0].sent[-1]["is_last"] is True


@pytest.mark.anyio
async def test_twilio_mulaw_8k_is_encoded_and_sent_in_short_batches() -> None:
    pcm = tone(0.3, 8000)
    async with FakePulseServer([Emit(2400, transcript("yes", is_final=True))]) as server:
        async with PulseSTT(KEY, PulseOptions.for_twilio("en"), url=server.url) as stt:
            for offset in range(0, len(pcm), 320):  # 20 ms Twilio frames
                await stt.send_audio(pcm[offset : offset + 320])
        events = await collect(stt)
    session = server.sessions[0]
    assert (session.query["encoding"], session.query["sample_rate"]) == ("mulaw", "8000")
    assert bytes(session.audio) == pcm16_to_ulaw(pcm)
    assert session.frame_sizes == [1024, 1024, 352]  # 128 ms batches, not half-second 4096-byte ones
    assert events == [Transcript("yes", True)]


@pytest.mark.anyio
async def test_legacy_transcript_shape_is_understood() -> None:
    script = [Emit(1, transcript("one")), Emit(1, transcript("one two", is_final=True))]
    async with FakePulseServer(script, legacy_shape=True) as server:
        async with PulseSTT(KEY, url=server.url, batch_bytes=320) as stt:
            await stt.send_audio(tone(0.01, 16000))
        events = await collect(stt)
    assert "type" not in server.sessions[0].sent[0]
    assert events == [Transcript("one", False), Transcript("one two", True)]


@pytest.mark.anyio
async def test_upgrade_is_refused_with_400_without_model_or_language_and_401_without_key() -> None:
    async with FakePulseServer() as server:
        for query in ("language=en", "model=pulse", "model=pulse&language=en&vad_events=yes"):
            with pytest.raises(InvalidStatus) as info:
                await connect(f"{server.url}?{query}", additional_headers={"Authorization": f"Bearer {KEY}"})
            assert info.value.response.status_code == 400
        with pytest.raises(PulseHandshakeError) as refused:
            async with PulseSTT("sk_wrong", url=server.url):
                pass
        assert refused.value.status_code == 401 and "API key" in refused.value.body
        assert server.sessions == []


@pytest.mark.anyio
async def test_server_error_message_is_raised_from_events() -> None:
    async with FakePulseServer([Emit(1, error_message("audio format mismatch"))]) as server:
        async with PulseSTT(KEY, url=server.url, batch_bytes=2) as stt:
            await stt.send_audio(b"\x00\x00")
            with pytest.raises(PulseServerError, match="audio format mismatch"):
                await collect(stt)
            with pytest.raises(PulseServerError):
                await stt.send_audio(b"\x00\x00")


@pytest.mark.anyio
async def test_close_1008_is_a_concurrency_limit_error() -> None:
    async with FakePulseServer(max_sessions=1) as server:
        async with PulseSTT(KEY, url=server.url) as first:
            async with PulseSTT(KEY, url=server.url) as second:
                with pytest.raises(PulseConcurrencyLimitError, match="1008"):
                    await collect(second)
            await first.send_audio(tone(0.01, 16000))
        assert await collect(first) == []
    assert server.sessions[0].closed_by_close_stream


@pytest.mark.anyio
async def test_connection_lost_before_is_last_is_an_error() -> None:
    async with FakePulseServer(
        [Emit(1, transcript("par")), Emit(10, close_code=1011, close_reason="boom")]
    ) as srv:
        async with PulseSTT(KEY, url=srv.url, batch_bytes=10) as stt:
            await stt.send_audio(b"\x00" * 10)
            events = stt.events()
            assert await anext(events) == Transcript("par", False)
            with pytest.raises(PulseConnectionError, match="1011"):
                await anext(events)


@pytest.mark.anyio
async def test_send_after_close_raises() -> None:
    async with FakePulseServer() as server:
        async with PulseSTT(KEY, url=server.url) as stt:
            pass
        with pytest.raises(PulseConnectionError, match="closed"):
            await stt.send_audio(b"\x00\x00")
        await stt.aclose()  # idempotent


@pytest.mark.anyio
async def test_unreachable_server_is_a_connection_error() -> None:
    async with FakePulseServer() as server:
        url = server.url
    with pytest.raises(PulseConnectionError):
        async with PulseSTT(KEY, url=url):
            pass


# ---- the fake hears speech as real Pulse does (segments, VAD, EOU, finalize) ---------------------------

SENTENCE = "please book a table for two at eight tonight in Paris"  # 10 words


async def hear(server: FakePulseServer, options: PulseOptions, seconds: float) -> list[STTEvent]:
    async with PulseSTT(KEY, options, url=server.url) as stt:
        await stt.send_audio(b"\x00\x00" * int(seconds * options.sample_rate))
    return await collect(stt)


@pytest.mark.anyio
async def test_speech_is_heard_as_segment_finals_every_few_words_with_vad_events_around_them() -> None:
    async with FakePulseServer([Speech(SENTENCE, 0.2, 2.2)], max_words=4) as server:
        events = await hear(server, PulseOptions(), 3.5)
    finals = [e.text for e in events if isinstance(e, Transcript) and e.is_final]
    assert finals == ["please book a table", "for two at eight", "tonight in Paris"]
    assert events[0] == SpeechStarted(0.2)
    assert events[1] == Transcript("please", False)
    ended = events.index(SpeechEnded(2.5))  # 0.3 s of trailing audio after the last word
    # The open segment is made final only after the end-of-utterance timeout (0.8 s), after speech_ended.
    assert events[ended + 1 :] == [Transcript("tonight in Paris", True)]
    assert not any(isinstance(e, Transcript) and e.end_of_turn for e in events)


@pytest.mark.anyio
async def test_finalize_on_speech_ended_closes_the_open_segment_once() -> None:
    async with FakePulseServer([Speech(SENTENCE, 0.0, 2.0)], max_words=4) as server:
        async with PulseSTT(KEY, url=server.url) as stt:
            events = stt.events()
            await stt.send_audio(b"\x00\x00" * int(2.4 * 16000))
            seen = [await anext(events)]
            while seen[-1] != SpeechEnded(2.3):
                seen.append(await anext(events))
            await stt.finalize()
            assert await anext(events) == Transcript("tonight in Paris", True, end_of_turn=True)
            await stt.send_audio(b"\x00\x00" * 16000)  # past the EOU timeout: nothing is left open
        assert [e async for e in events] == []
    assert [m.get("from_finalize") for m in server.sessions[0].sent if m.get("is_final")] == [
        False, False, True, False  # two segments, the answer to finalize, is_last (empty)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("server_options", "options"),
    [
        ({"finals": "utterance", "vad_events": False}, PulseOptions()),  # this fake's old behaviour
        ({}, PulseOptions(vad_events=False, extra={"finalize_on_words": False})),  # asked for in the query
    ],
)
@pytest.mark.anyio
async def test_one_transcript_per_utterance_and_no_vad_events_on_request(
    server_options: dict[str, Any], options: PulseOptions
) -> None:
    async with FakePulseServer([Speech("good morning to you", 0.0, 1.0)], **server_options) as server:
        events = await hear(server, options, 2.0)
    assert events == [
        Transcript("good", False),
        Transcript("good morning", False),
        Transcript("good morning to", False),
        Transcript("good morning to you", False),
        Transcript("good morning to you", True),
    ]


@pytest.mark.anyio
async def test_max_words_in_the_query_sets_the_segment_length() -> None:
    async with FakePulseServer([Speech("one two three four five six", 0.0, 1.0)]) as server:
        events = await hear(server, PulseOptions(vad_events=False, extra={"max_words": 3}), 2.0)
    assert [e.text for e in events if isinstance(e, Transcript) and e.is_final] == [
        "one two three",
        "four five six",
    ]


@pytest.mark.anyio
async def test_a_punctuation_only_transcript_is_no_words() -> None:
    script = [Emit(1, transcript("yes", is_final=True)), Emit(2, transcript("।", is_final=True))]
    async with FakePulseServer(script) as server:
        events = await hear(server, PulseOptions(), 0.01)
    assert events == [Transcript("yes", True)]


@pytest.mark.anyio
async def test_every_message_the_fake_sends_for_speech_parses_with_the_official_sdk() -> None:
    from smallestai.waves.speech_to_text.types.transcription_event import TranscriptionEvent

    async with FakePulseServer([Speech(SENTENCE, 0.0, 2.0)]) as server:
        await hear(server, PulseOptions(), 3.0)
    sent = server.sessions[0].sent
    transcripts = [m for m in sent if m.get("type") == "transcription"]
    assert {m["type"] for m in sent} == {"transcription", "speech_started", "speech_ended"}
    for message in transcripts:
        event = TranscriptionEvent.model_validate(message)
        assert event.transcript == event.transcription == message["transcript"]
        assert event.is_final is message["is_final"] and event.is_last is message["is_last"]
        if event.is_final:
            assert event.language == "en"
