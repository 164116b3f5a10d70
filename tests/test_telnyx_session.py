"""A real Session answers a fake Telnyx call, every part real: the fake Telnyx caller (built from
Telnyx's docs) over a WebSocket -> TelnyxServer -> Session -> Pulse STT adapter -> fake Pulse server;
the agent's turns stream from the fake OpenAI-compatible LLM server; espeak-ng speaks into the call's
own output; Telnyx's marks say what the caller heard, and a barge-in clears Telnyx's playback."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import anyio
import numpy
import pytest

from voiceagent import Agent, LLMClient
from voiceagent.adapters.pulse import PulseOptions, PulseSTT
from voiceagent.adapters.pulse.fake import Emit, FakePulseServer, transcript
from voiceagent.adapters.telnyx.fake import FakeTelnyxCall
from voiceagent.adapters.telnyx.server import TelnyxServer
from voiceagent.session import Session
from voiceagent.telephony.stream import MediaStream
from voiceagent.testing.openai_server import FakeOpenAIServer, text_reply

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]

TOKEN = "telnyx-session-token-77aa"
LONG_ANSWER = (
    "Once upon a time there was a lighthouse keeper who counted ships. "
    "Every night she wrote their names in a blue book. "
    "One winter a ship came that had no name at all, and she waited for it until morning. "
    "The end."
)


def _pulse_options(rate: int) -> PulseOptions:
    return (
        PulseOptions.for_twilio("en")
        if rate == 8000
        else PulseOptions(language="en", encoding="linear16", sample_rate=rate)
    )


def _batch(rate: int) -> int:
    """Bytes of one 128 ms Pulse batch, in the Pulse session's encoding (mu-law 8 kHz or PCM16)."""
    return 1024 if rate == 8000 else rate * 128 // 1000 * 2


async def eventually(predicate: Callable[[], bool], limit: float = 30.0) -> None:
    """Poll ``predicate``: the state it reads lives in several objects with no single event to wait on."""
    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.02)


async def run_call(
    llm: FakeOpenAIServer,
    pulse: FakePulseServer,
    script: Callable[[FakeTelnyxCall, list[Session]], Any],
    *,
    codec: str,
    rate: int,
    playback_speed: float,
) -> tuple[list[Session], FakeTelnyxCall]:
    from voiceagent.adapters.espeak import EspeakSink

    sessions: list[Session] = []

    async def call(stream: MediaStream) -> None:
        async with PulseSTT("sk_test", _pulse_options(rate), url=pulse.url) as stt:
            agent = Agent(
                llm=LLMClient(base_url=llm.base_url, api_key="sk_test"),
                sink=EspeakSink(stream.output, words_per_minute=220),
                system_prompt="You are a phone storyteller.",
            )
            session = Session(agent=agent, transport=stream, stt=stt)
            sessions.append(session)
            await session.run()

    server = TelnyxServer(
        call, stream_auth_token=TOKEN, bidirectional_codec=codec, bidirectional_sample_rate=rate, api_key=None
    )
    async with pulse, server:
        async with FakeTelnyxCall(
            server.url,
            encoding=codec,
            sample_rate=rate,
            bidirectional_codec=codec,
            bidirectional_sample_rate=rate,
            stream_auth_token=TOKEN,
            playback_speed=playback_speed,
        ) as phone:
            await script(phone, sessions)
            await phone.stop()
        await eventually(lambda: bool(sessions) and not sessions[0].bot_speaking)
    return sessions, phone


@pytest.mark.parametrize(("codec", "rate"), [("PCMU", 8000), ("PCMA", 8000), ("L16", 16000)])
async def test_a_turn_speaks_into_the_telnyx_call_and_marks_confirm_it_was_heard(
    codec: str, rate: int
) -> None:
    silence_128ms = b"\x00\x00" * (rate * 128 // 1000)
    async with FakeOpenAIServer() as llm:
        llm.enqueue(text_reply("It is sunny in Paris, eighteen degrees."))
        pulse = FakePulseServer(
            [Emit(_batch(rate), transcript("What's the weather in Paris?", is_final=True))]
        )

        async def script(phone: FakeTelnyxCall, sessions: list[Session]) -> None:
            await phone.send_pcm(silence_128ms, rate)
            await eventually(lambda: bool(sessions) and len(sessions[0].results) == 1)

        sessions, phone = await run_call(llm, pulse, script, codec=codec, rate=rate, playback_speed=20)
    result = sessions[0].results[0]
    assert result.heard_text == "It is sunny in Paris, eighteen degrees." and not result.interrupted
    assert llm.requests[0].body["messages"][-1] == {"role": "user", "content": "What's the weather in Paris?"}
    assert sessions[0].output is not None and sessions[0].output.played_seconds > 1.0
    assert phone.errors == [] and phone.echoed_marks and not any(m.flushed for m in phone.echoed_marks)
    heard = numpy.frombuffer(phone.played_pcm16, dtype="<i2").astype(float)
    assert len(heard) / rate > 1.0 and numpy.abs(heard).max() > 2000
    # Speech is smooth from sample to sample; the same bytes in the wrong order are close to noise.
    roughness = numpy.abs(numpy.diff(heard)).mean() / numpy.abs(heard).mean()
    assert roughness < 0.8


async def test_barge_in_clears_telnyx_playback_and_keeps_only_what_the_caller_heard() -> None:
    speech_128ms = b"\x00\x00" * 1024
    async with FakeOpenAIServer() as llm:
        llm.enqueue(text_reply(LONG_ANSWER), text_reply("Sure, I'll stop."))
        pulse = FakePulseServer(
            [
                Emit(1024, transcript("Tell me a story.", is_final=True)),
                Emit(2048, transcript("wait, stop")),
                Emit(2048, transcript("wait, stop please", is_final=True)),
            ]
        )

        async def script(phone: FakeTelnyxCall, sessions: list[Session]) -> None:
            await phone.send_pcm(speech_128ms, 8000)
            # The bot is talking and the caller has heard a second of it (marks sent back in real time)...
            await eventually(
                lambda: (
                    bool(sessions) and (sessions[0].output or 0) and sessions[0].output.played_seconds >= 1.0
                )
            )  # type: ignore[union-attr]
            # ...then talks over it.
            await phone.send_pcm(speech_128ms, 8000)
            await eventually(lambda: bool(sessions) and len(sessions[0].results) == 2)

        sessions, phone = await run_call(llm, pulse, script, codec="PCMU", rate=8000, playback_speed=1)
    session = sessions[0]
    assert session.barge_ins == 1 and phone.clears >= 1
    first, second = session.results
    assert first.interrupted and not second.interrupted
    assert 0 < len(first.heard_text) < len(LONG_ANSWER)
    history = session.agent.conversation.history
    kept = history[1]["content"]
    assert LONG_ANSWER.startswith(kept) and len(kept) < len(LONG_ANSWER)
    assert llm.requests[1].body["messages"][2] == {"role": "assistant", "content": kept}
    assert any(m.flushed for m in phone.echoed_marks)  # Telnyx sent the queued marks back on the clear
    assert phone.errors == []
