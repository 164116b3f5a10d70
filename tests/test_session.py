"""Session end to end, every part real: a fake Twilio caller over a WebSocket -> TwilioServer ->
Session -> Pulse STT adapter -> fake Pulse server; the agent's turns stream from the fake Electron
server; espeak-ng speaks into the call through TransportOutput; marks tell what the caller heard."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from voiceagent import Agent, LLMClient
from voiceagent.adapters.pulse import PulseOptions, PulseSTT
from voiceagent.adapters.twilio import TwilioMediaStream, TwilioServer
from voiceagent.session import BargeInPolicy, Session, is_backchannel
from voiceagent.testing.openai_server import FakeOpenAIServer, text_reply
from voiceagent.testing.pulse_server import Emit, FakePulseServer, transcript
from voiceagent.testing.twilio_client import FakeTwilioCall
from voiceagent.transport_output import TransportOutput

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

LONG_ANSWER = (
    "Once upon a time there was a lighthouse keeper who counted ships. "
    "Every night she wrote their names in a blue book. "
    "One winter a ship came that had no name at all, and she waited for it until morning. "
    "The end."
)
# 128 ms of caller audio (PCM16 at 8 kHz): exactly one Pulse batch (1024 mu-law bytes), so each send
# reaches the fake Pulse server at once and its scripted transcripts fire at known byte counts.
AUDIO_128MS = b"\x00\x00" * 1024
BATCH = 1024


async def eventually(predicate: Callable[[], bool], limit: float = 20.0) -> None:
    """Poll ``predicate``: the state it reads lives in several objects with no single event to wait on."""
    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.02)


async def run_call(
    llm: FakeOpenAIServer,
    pulse: FakePulseServer,
    script: Callable[[FakeTwilioCall, list[Session]], Any],
    *,
    playback_speed: float,
    policy: BargeInPolicy | None = None,
    wrap: Callable[[TwilioMediaStream], Any] = lambda stream: stream,
) -> list[Session]:
    from voiceagent.adapters.espeak import EspeakSink

    sessions: list[Session] = []

    async def call(stream: TwilioMediaStream) -> None:
        async with PulseSTT("sk_test", PulseOptions.for_twilio("en"), url=pulse.url) as stt:
            output = TransportOutput(stream, 8000)
            agent = Agent(
                llm=LLMClient(base_url=llm.base_url, api_key="sk_test"),
                sink=EspeakSink(output, words_per_minute=220),
                system_prompt="You are a phone storyteller.",
            )
            session = Session(agent=agent, transport=wrap(stream), stt=stt, output=output, policy=policy)
            sessions.append(session)
            await session.run()

    async with pulse, TwilioServer(call, auth_token="test-auth-token") as server:
        async with FakeTwilioCall(
            server.url, auth_token="test-auth-token", playback_speed=playback_speed
        ) as phone:
            await script(phone, sessions)
            await phone.stop()
        await eventually(lambda: bool(sessions) and not sessions[0].bot_speaking)
    return sessions


@pytest.mark.anyio
async def test_a_call_turn_speaks_into_the_phone_and_marks_confirm_it_was_heard() -> None:
    async with FakeOpenAIServer() as llm:
        llm.enqueue(text_reply("It is sunny in Paris, eighteen degrees."))
        pulse = FakePulseServer([Emit(BATCH, transcript("What's the weather in Paris?", is_final=True))])

        async def script(phone: FakeTwilioCall, sessions: list[Session]) -> None:
            await phone.send_pcm(AUDIO_128MS, 8000)
            await eventually(lambda: bool(sessions) and len(sessions[0].results) == 1)

        sessions = await run_call(llm, pulse, script, playback_speed=20)
        result = sessions[0].results[0]
        assert result.heard_text == "It is sunny in Paris, eighteen degrees."
        assert not result.interrupted
        question = {"role": "user", "content": "What's the weather in Paris?"}
        assert llm.requests[0].body["messages"][-1] == question
        assert [m["role"] for m in sessions[0].agent.conversation.history] == ["user", "assistant"]
        assert sessions[0].output is not None and sessions[0].output.played_seconds > 1.0


class Captioned:
    """A phone stream with a text display bolted on, as a web page has one; it records what it shows."""

    def __init__(self, stream: TwilioMediaStream, *, broken: bool = False) -> None:
        self.stream = stream
        self.broken = broken
        self.shown: list[tuple[str, str, bool]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    async def send_transcript(self, text: str, *, is_final: bool) -> None:
        self.shown.append(("caller", text, is_final))

    async def send_agent_text(self, text: str, *, final: bool = True) -> None:
        if self.broken:
            raise ConnectionResetError("the page went away")
        self.shown.append(("agent", text, final))


@pytest.mark.parametrize("broken", [False, True])
@pytest.mark.anyio
async def test_a_transport_that_shows_text_gets_transcripts_and_the_agents_words(
    broken: bool, caplog: pytest.LogCaptureFixture
) -> None:
    displays: list[Captioned] = []

    def wrap(stream: TwilioMediaStream) -> Captioned:
        displays.append(Captioned(stream, broken=broken))
        return displays[-1]

    async with FakeOpenAIServer() as llm:
        llm.enqueue(text_reply("It is sunny in Paris, eighteen degrees. Anything else?"))
        pulse = FakePulseServer(
            [
                Emit(BATCH, transcript("What's the", is_final=False)),
                Emit(BATCH, transcript("What's the weather?", is_final=True)),
            ]
        )

        async def script(phone: FakeTwilioCall, sessions: list[Session]) -> None:
            await phone.send_pcm(AUDIO_128MS, 8000)
            await eventually(lambda: bool(sessions) and len(sessions[0].results) == 1)
            if not broken:
                await eventually(lambda: displays[0].shown[-1] == ("agent", "", True))

        sessions = await run_call(llm, pulse, script, playback_speed=20, wrap=wrap)
    assert sessions[0].results[0].heard_text == "It is sunny in Paris, eighteen degrees. Anything else?"
    callers = [(text, final) for who, text, final in displays[0].shown if who == "caller"]
    assert callers == [("What's the", False), ("What's the weather?", True)]
    agent = [(text, final) for who, text, final in displays[0].shown if who == "agent"]
    if broken:  # the call went on; the failure was said once and no more text was tried
        assert agent == []
        assert sum("could not show text" in r.getMessage() for r in caplog.records) == 1
    else:
        assert (
            " ".join(text for text, _ in agent).split()
            == "It is sunny in Paris, eighteen degrees. Anything else?".split()
        )
        assert [final for _, final in agent] == [False] * (len(agent) - 1) + [True]


@pytest.mark.anyio
async def test_barge_in_clears_playback_and_keeps_only_what_the_caller_heard() -> None:
    async with FakeOpenAIServer() as llm:
        llm.enqueue(text_reply(LONG_ANSWER), text_reply("Sure, I'll stop."))
        pulse = FakePulseServer(
            [
                Emit(BATCH, transcript("Tell me a story.", is_final=True)),
                Emit(2 * BATCH, transcript("wait, stop")),
                Emit(2 * BATCH, transcript("wait, stop please", is_final=True)),
            ]
        )
        played_before_clear: list[int] = []

        async def script(phone: FakeTwilioCall, sessions: list[Session]) -> None:
            await phone.send_pcm(AUDIO_128MS, 8000)
            # The bot is talking and the caller has heard some of it (marks echoed in real time)...
            await eventually(lambda: len(phone.echoed_marks) >= 2)
            played_before_clear.append(len(phone.played_mulaw))
            # ...then talks over it.
            await phone.send_pcm(AUDIO_128MS, 8000)
            await eventually(lambda: bool(sessions) and len(sessions[0].results) == 2)

        sessions = await run_call(llm, pulse, script, playback_speed=1)
        session = sessions[0]
        assert session.barge_ins == 1
        first, second = session.results
        assert first.interrupted and not second.interrupted
        assert 0 < len(first.heard_text) < len(LONG_ANSWER)
        history = session.agent.conversation.history
        assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
        kept = history[1]["content"]
        assert LONG_ANSWER.startswith(kept) and len(kept) < len(LONG_ANSWER)
        # The second request carried the truncated answer: the model knows what was actually heard.
        assert llm.requests[1].body["messages"][2] == {"role": "assistant", "content": kept}
        assert history[2] == {"role": "user", "content": "wait, stop please"}


@pytest.mark.anyio
async def test_backchannels_do_not_interrupt_the_bot() -> None:
    async with FakeOpenAIServer() as llm:
        llm.enqueue(text_reply("Sure. The lighthouse stood on a rock. Ships passed it every night."))
        pulse = FakePulseServer(
            [
                Emit(BATCH, transcript("Tell me about the lighthouse.", is_final=True)),
                Emit(2 * BATCH, transcript("mhm")),
                Emit(2 * BATCH, transcript("mhm, okay", is_final=True)),
            ]
        )

        async def script(phone: FakeTwilioCall, sessions: list[Session]) -> None:
            await phone.send_pcm(AUDIO_128MS, 8000)
            await eventually(lambda: len(phone.echoed_marks) >= 1)
            await phone.send_pcm(AUDIO_128MS, 8000)
            await eventually(lambda: bool(sessions) and len(sessions[0].results) == 1)

        sessions = await run_call(llm, pulse, script, playback_speed=2)
        assert sessions[0].barge_ins == 0
        assert len(llm.requests) == 1  # "mhm, okay" during the bot's speech is no turn of its own
        assert not sessions[0].results[0].interrupted


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mhm", True),
        ("Okay.", True),
        ("yeah, right", True),
        ("uh huh", True),
        ("ok wait", False),
        ("stop", False),
        ("", False),
        ("yes please book it", False),
    ],
)
def test_is_backchannel(text: str, expected: bool) -> None:
    assert is_backchannel(text) is expected
