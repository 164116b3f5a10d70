"""The OpenAI-compatible transcription STT source: the real ``openai`` SDK's multipart request parsed
by the fake, VAD segmentation of real (espeak-ng) speech, retries and typed errors."""

from __future__ import annotations

import socket

import anyio
import httpx
import openai
import pytest

from tests.stt_harnesses import spoken
from voiceagent.adapters.transcriptions import (
    Segment,
    TranscriptionConnectionError,
    TranscriptionStatusError,
    TranscriptionSTT,
    VadSegmenter,
)
from voiceagent.adapters.transcriptions.fake import Clip, FakeTranscriptionServer, parse_multipart, read_wav
from voiceagent.audio import wav_bytes
from voiceagent.endpointing import EndpointingDetector
from voiceagent.stt import SpeechEnded, SpeechStarted, STTEvent, Transcript
from voiceagent.vad import VADEvent, WebRtcVad

pytestmark = pytest.mark.anyio

RATE = 16000
KEY = "sk_test"


def sdk(server: FakeTranscriptionServer, key: str = KEY, retries: int = 2) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key=key, max_retries=retries)


async def transcribe(stt: TranscriptionSTT, *pieces: bytes) -> list[STTEvent]:
    """Feed each piece of audio, waiting after each but the last for one more transcript (as a caller
    speaking in real time gives the endpoint time to answer)."""
    got: list[STTEvent] = []
    with anyio.fail_after(30):
        async with stt:
            async with anyio.create_task_group() as tg:
                transcripts = anyio.Semaphore(0)

                async def read() -> None:
                    async for event in stt.events():
                        got.append(event)
                        if isinstance(event, Transcript):
                            transcripts.release()

                tg.start_soon(read)
                for i, audio in enumerate(pieces):
                    for offset in range(0, len(audio), 640):
                        await stt.send_audio(audio[offset : offset + 640])
                    if i < len(pieces) - 1:
                        await transcripts.acquire()
                await stt.aclose()
    return got


# ---- the openai SDK against the fake ----------------------------------------------------------------------


async def test_the_sdks_multipart_request_is_parsed_field_by_field() -> None:
    clip = spoken("good morning", RATE)
    async with FakeTranscriptionServer([Clip("Good morning.", clip)], api_key=KEY) as server:
        client = sdk(server)
        with anyio.fail_after(30):
            result = await client.audio.transcriptions.create(
                model="whisper-1",
                file=("call.wav", wav_bytes(b"\0\0" * 800 + clip, RATE), "audio/wav"),
                language="en",
                prompt="A greeting.",
                temperature=0.2,
            )
            text = await client.audio.transcriptions.create(
                model="whisper-1",
                file=("call.wav", wav_bytes(clip, RATE), "audio/wav"),
                response_format="text",
            )
            verbose = await client.audio.transcriptions.create(
                model="whisper-1",
                file=("call.wav", wav_bytes(clip, RATE), "audio/wav"),
                response_format="verbose_json",
            )
    assert result.text == "Good morning." and text.strip() == "Good morning."
    assert verbose.text == "Good morning." and verbose.duration == pytest.approx(len(clip) / 2 / RATE)
    first = server.requests[0]
    assert first.fields == {
        "model": "whisper-1",
        "language": "en",
        "prompt": "A greeting.",
        "temperature": "0.2",
    }
    assert (
        first.file is not None
        and first.file.filename == "call.wav"
        and first.file.content_type == "audio/wav"
    )
    assert first.sample_rate == RATE and first.headers["authorization"] == f"Bearer {KEY}"
    assert server.requests[1].fields["response_format"] == "text"


async def test_the_fake_refuses_as_the_endpoint_does() -> None:
    async with FakeTranscriptionServer(api_key=KEY) as server:
        with anyio.fail_after(30):
            with pytest.raises(openai.AuthenticationError):
                await sdk(server, "wrong").audio.transcriptions.create(
                    model="whisper-1", file=("a.wav", wav_bytes(b"\0\0" * 160, RATE), "audio/wav")
                )
            with pytest.raises(openai.BadRequestError, match=r"WAV|wav|RIFF|file"):
                await sdk(server).audio.transcriptions.create(model="whisper-1", file=("a.wav", b"not a wav"))
            async with httpx.AsyncClient() as http:  # a form without the file: 400, as the real one
                answer = await http.post(
                    f"{server.base_url}/audio/transcriptions",
                    data={"model": "whisper-1"},
                    files={"other": ("x.txt", b"x")},
                    headers={"Authorization": f"Bearer {KEY}"},
                )
    assert answer.status_code == 400 and "file" in answer.json()["error"]["message"]


def test_multipart_parsing_rejects_a_body_without_its_closing_boundary() -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
    with pytest.raises(ValueError, match="closing boundary"):
        parse_multipart(body, "multipart/form-data; boundary=b")
    fields, files = parse_multipart(body + b"--b--\r\n", "multipart/form-data; boundary=b")
    assert fields == {"model": "whisper-1"} and files == {}


# ---- the source -------------------------------------------------------------------------------------


async def test_each_utterance_is_one_request_and_one_end_of_turn_final() -> None:
    one, two = spoken("what time is it", RATE), spoken("thank you very much", RATE)
    pause = b"\0\0" * RATE
    clips = [Clip("What time is it?", one), Clip("Thank you very much.", two)]
    async with FakeTranscriptionServer(clips, api_key=KEY) as server:
        stt = TranscriptionSTT(
            sdk(server), model="whisper-large-v3", language="en", vad=WebRtcVad(min_silence=0.5)
        )
        events = await transcribe(stt, pause + one + pause, two + pause)
    assert [type(e).__name__ for e in events] == [
        "SpeechStarted", "SpeechEnded", "Transcript", "SpeechStarted", "SpeechEnded", "Transcript",
    ]  # fmt: skip
    finals = [e for e in events if isinstance(e, Transcript)]
    assert finals == [
        Transcript("What time is it?", True, True),
        Transcript("Thank you very much.", True, True),
    ]
    assert [r.fields["model"] for r in server.requests] == ["whisper-large-v3"] * 2
    assert all(r.fields["language"] == "en" and r.sample_rate == RATE for r in server.requests)
    starts = [e.at for e in events if isinstance(e, SpeechStarted)]
    assert 0.9 <= starts[0] <= 1.3 and starts[1] > starts[0] + len(one) / 2 / RATE
    detector, now, turns = EndpointingDetector(), 0.0, []
    for event in events:
        now += 0.1
        detector.observe(event, now)
        if isinstance(event, Transcript) and detector.ends_at() is not None:
            turns.append(detector.take())
    assert turns == ["What time is it?", "Thank you very much."]


async def test_a_dropped_request_is_retried_by_the_sdk_and_nothing_is_lost() -> None:
    clip = spoken("hello", RATE)
    async with FakeTranscriptionServer([Clip("hello", clip)], api_key=KEY, drop=1) as server:
        stt = TranscriptionSTT(sdk(server, retries=2), vad=WebRtcVad())
        events = await transcribe(stt, b"\0\0" * RATE + clip + b"\0\0" * RATE)
    assert [e.text for e in events if isinstance(e, Transcript)] == ["hello"]
    assert len(server.requests) == 2 and server.requests[1].text == "hello"


async def test_a_refused_key_and_an_unreachable_server_are_typed_errors() -> None:
    clip = spoken("hello", RATE)
    async with FakeTranscriptionServer([Clip("hello", clip)], api_key=KEY) as server:
        stt = TranscriptionSTT(sdk(server, "wrong"), vad=WebRtcVad())
        with anyio.fail_after(30):
            async with stt:
                for offset in range(0, RATE * 2 + len(clip) * 2, 640):
                    await stt.send_audio((b"\0\0" * RATE + clip + b"\0\0" * RATE)[offset : offset + 640])
                with pytest.raises(TranscriptionStatusError) as info:
                    async for _ in stt.events():
                        pass
                with pytest.raises(TranscriptionStatusError):
                    await stt.send_audio(b"\0\0" * 160)  # the failure is sticky, not swallowed
    assert info.value.status_code == 401
    # A port held bound but never listening refuses every connection; a port merely closed could be
    # taken at once by another process's server on a shared machine (and then hang, not refuse).
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{held.getsockname()[1]}/v1"
        stt = TranscriptionSTT(openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0), vad=WebRtcVad())
        with anyio.fail_after(30):
            async with stt:
                await stt.send_audio(b"\0\0" * RATE + clip + b"\0\0" * RATE)
                with pytest.raises(TranscriptionConnectionError):
                    async for _ in stt.events():
                        pass


# ---- segmentation (pure) ----------------------------------------------------------------------------


class ScriptedVad:
    """Says speech starts/ends at given seconds of the audio fed (a stand-in for a VAD's decisions)."""

    def __init__(self, *events: VADEvent) -> None:
        self.events, self.fed = list(events), 0

    def process(self, pcm: bytes, sample_rate: int) -> list[VADEvent]:
        self.fed += len(pcm) // 2
        now = self.fed / sample_rate
        due = [e for e in self.events if e.at + 0.05 <= now]  # decided a little after the fact
        self.events = [e for e in self.events if e not in due]
        return due


def ramp(seconds: float, rate: int = 100) -> bytes:
    return b"".join((i % 30000).to_bytes(2, "little") for i in range(int(seconds * rate)))


def test_a_segment_starts_a_pre_roll_before_the_speech_and_ends_where_it_is_heard_to_end() -> None:
    audio = ramp(3.0)
    segmenter = VadSegmenter(ScriptedVad(SpeechStarted(at=1.0), SpeechEnded(at=2.0)), 100, pre_roll=0.3)
    out = [item for i in range(0, len(audio), 2) for item in segmenter.process(audio[i : i + 2])]
    assert [type(item).__name__ for item in out] == ["SpeechStarted", "SpeechEnded", "Segment"]
    segment = out[2]
    assert isinstance(segment, Segment) and segment.end_of_speech
    assert (segment.start, segment.end) == (0.7, 2.05)
    assert segment.pcm == audio[2 * 70 : 2 * 205]  # the caller's own samples, uncut


def test_a_long_utterance_is_cut_at_max_segment_without_end_of_speech_and_flushed_at_close() -> None:
    audio = ramp(3.0)
    segmenter = VadSegmenter(ScriptedVad(SpeechStarted(at=0.5)), 100, pre_roll=0.0, max_segment=1.0)
    out = [item for i in range(0, len(audio), 2) for item in segmenter.process(audio[i : i + 2])]
    segments = [item for item in out if isinstance(item, Segment)]
    assert [(s.start, s.end, s.end_of_speech) for s in segments] == [(0.5, 1.5, False), (1.5, 2.5, False)]
    last = segmenter.flush()
    assert last is not None and (last.start, last.end, last.end_of_speech) == (2.5, 3.0, True)
    assert b"".join(s.pcm for s in [*segments, last]) == audio[2 * 50 :]


def test_the_fake_hears_only_a_whole_clip() -> None:
    clip = spoken("hello", 8000)
    wav = wav_bytes(b"\0\0" * 100 + clip, 8000)
    pcm, rate = read_wav(wav)
    server = FakeTranscriptionServer([Clip("hello", clip)])
    assert rate == 8000 and server.hear(pcm) == "hello"
    assert server.hear(pcm[: len(pcm) // 2]) == ""
