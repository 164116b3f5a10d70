"""Whole calls on the vendor STT sources: fake Twilio caller -> TwilioServer -> Session -> the source ->
its fake. Deepgram's segment finals and speech_final make one user turn; the transcription source's
VAD segments of real speech make one turn per utterance."""

from __future__ import annotations

import shutil

import anyio
import pytest

from tests.stt_harnesses import spoken
from tests.test_session import eventually, silence
from voiceagent import Agent, LLMClient
from voiceagent.adapters.deepgram import DeepgramOptions, DeepgramSTT
from voiceagent.adapters.deepgram.fake import FakeDeepgramServer, Speech
from voiceagent.adapters.transcriptions import TranscriptionSTT
from voiceagent.adapters.transcriptions.fake import Clip, FakeTranscriptionServer
from voiceagent.adapters.twilio import TwilioMediaStream, TwilioServer
from voiceagent.adapters.twilio.fake_call import FakeTwilioCall
from voiceagent.audio import pcm16_to_ulaw, ulaw_to_pcm16
from voiceagent.session import Session
from voiceagent.testing.openai_server import FakeOpenAIServer, text_reply
from voiceagent.transport_output import TransportOutput
from voiceagent.vad import WebRtcVad

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]

SENTENCE = "I would like to book a table for two people at eight tonight please"  # 14 words


async def test_a_deepgram_utterance_in_three_segments_is_one_turn_and_one_reply() -> None:
    from voiceagent.adapters.espeak import EspeakSink

    sessions: list[Session] = []
    deepgram = FakeDeepgramServer([Speech(SENTENCE, 0.2, 3.0)], api_key="dg_test", max_words=5)

    async def call(stream: TwilioMediaStream) -> None:
        options = DeepgramOptions(encoding="mulaw", sample_rate=8000)
        async with DeepgramSTT("dg_test", options, url=deepgram.url) as stt:
            output = TransportOutput(stream, 8000)
            agent = Agent(
                llm=LLMClient(base_url=llm.base_url, api_key="sk_test"),
                sink=EspeakSink(output, words_per_minute=220),
                system_prompt="You book tables.",
            )
            session = Session(agent=agent, transport=stream, stt=stt, output=output)
            sessions.append(session)
            await session.run()

    async with FakeOpenAIServer() as llm:
        llm.enqueue(text_reply("Booked: a table for two at eight."))
        async with deepgram, TwilioServer(call, auth_token="test-auth-token") as server:
            async with FakeTwilioCall(server.url, auth_token="test-auth-token", playback_speed=20) as phone:
                await phone.send_pcm(silence(4.5), 8000)  # past speech_final and UtteranceEnd
                await eventually(lambda: bool(sessions) and len(sessions[0].results) == 1)
                await phone.stop()
            await eventually(lambda: bool(sessions) and not sessions[0].bot_speaking)
            with anyio.fail_after(10):
                while not deepgram.sessions or deepgram.sessions[0].sent[-1]["type"] != "Metadata":  # noqa: ASYNC110
                    await anyio.sleep(0.02)
    session = sessions[0]
    assert sessions[0].vad is None  # Deepgram reports speech itself: no local VAD
    sent = deepgram.sessions[0].sent
    finals = [
        m
        for m in sent
        if m["type"] == "Results" and m["is_final"] and m["channel"]["alternatives"][0]["transcript"]
    ]
    assert len(finals) == 3  # Deepgram cut the sentence in three segments...
    (result,) = session.results  # ...and it is still one turn, one reply
    assert result.user_text == SENTENCE
    assert len(llm.requests) == 1 and llm.requests[0].body["messages"][-1] == {
        "role": "user",
        "content": SENTENCE,
    }
    assert deepgram.sessions[0].query["encoding"] == "mulaw"


async def test_each_spoken_utterance_is_one_turn_on_the_transcription_source() -> None:
    from voiceagent.adapters.espeak import EspeakSink

    one, two = (ulaw_to_pcm16(pcm16_to_ulaw(spoken(t, 8000))) for t in ("what time is it", "thank you"))
    clips = [Clip("What time is it?", one), Clip("Thank you.", two)]  # as they arrive: mu-law and back
    sessions: list[Session] = []

    async def call(stream: TwilioMediaStream) -> None:
        stt = TranscriptionSTT(
            base_url=whisper.base_url, api_key="sk_test", sample_rate=8000, vad=WebRtcVad()
        )
        async with stt:
            output = TransportOutput(stream, 8000)
            agent = Agent(
                llm=LLMClient(base_url=llm.base_url, api_key="sk_test"),
                sink=EspeakSink(output, words_per_minute=220),
                system_prompt="You tell the time.",
            )
            session = Session(agent=agent, transport=stream, stt=stt, output=output)
            sessions.append(session)
            await session.run()

    async with FakeOpenAIServer() as llm, FakeTranscriptionServer(clips, api_key="sk_test") as whisper:
        llm.enqueue(text_reply("It is noon."))
        llm.enqueue(text_reply("You are welcome."))
        async with TwilioServer(call, auth_token="test-auth-token") as server:
            async with FakeTwilioCall(server.url, auth_token="test-auth-token", playback_speed=20) as phone:
                await phone.send_pcm(silence(0.5) + spoken("what time is it", 8000) + silence(1.0), 8000)
                await eventually(lambda: bool(sessions) and len(sessions[0].results) == 1)
                await eventually(lambda: not sessions[0].bot_speaking)
                await phone.send_pcm(spoken("thank you", 8000) + silence(1.0), 8000)
                await eventually(lambda: len(sessions[0].results) == 2)
                await phone.stop()
            await eventually(lambda: not sessions[0].bot_speaking)
    session = sessions[0]
    assert session.vad is None  # the source's own VAD: no second one
    assert [r.user_text for r in session.results] == ["What time is it?", "Thank you."]
    assert [r.text for r in whisper.requests] == ["What time is it?", "Thank you."]  # one request each
    assert [m["content"] for m in session.agent.conversation.history if m["role"] == "user"] == [
        "What time is it?",
        "Thank you.",
    ]
