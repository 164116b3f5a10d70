"""A whole call on Deepgram: fake Twilio caller -> TwilioServer -> Session -> DeepgramSTT -> the fake
Deepgram; Deepgram's segment finals, speech_final and UtteranceEnd make one user turn and one reply."""

from __future__ import annotations

import shutil

import anyio
import pytest

from tests.test_session import eventually, silence
from voiceagent import Agent, LLMClient
from voiceagent.adapters.deepgram import DeepgramOptions, DeepgramSTT
from voiceagent.adapters.deepgram.fake import FakeDeepgramServer, Speech
from voiceagent.adapters.twilio import TwilioMediaStream, TwilioServer
from voiceagent.session import Session
from voiceagent.testing.openai_server import FakeOpenAIServer, text_reply
from voiceagent.testing.twilio_client import FakeTwilioCall
from voiceagent.transport_output import TransportOutput

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
