"""Session end to end, every part real: a fake Twilio caller over a WebSocket -> TwilioServer ->
Session -> Pulse STT adapter -> fake Pulse server; the agent's turns stream from the fake Electron
server; espeak-ng speaks into the call's own output (TransportOutput); marks tell what the caller heard."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import pytest

from tests.test_vad import speech
from voiceagent import Agent, LLMClient
from voiceagent.adapters.pulse import PulseOptions, PulseSTT
from voiceagent.adapters.pulse.fake import (
    Emit,
    FakePulseServer,
    Speech,
    speech_ended,
    speech_started,
    transcript,
)
from voiceagent.adapters.twilio import TwilioMediaStream, TwilioServer
from voiceagent.adapters.twilio.fake_call import FakeTwilioCall
from voiceagent.endpointing import EndpointingDetector
from voiceagent.session import BargeInPolicy, Session, is_backchannel
from voiceagent.stt import SpeechEnded, SpeechStarted
from voiceagent.testing.openai_server import FakeOpenAIServer, text_reply, tool_reply
from voiceagent.testing.sinks import RecordingSink
from voiceagent.tools import Tool, tool
from voiceagent.vad import VoiceActivityDetector, WebRtcVad

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


async def hold_mid_answer(phone: FakeTwilioCall) -> None:
    """With playback started paused: play the bot's first chunk up to its mark, then hold. The bot is
    mid-answer from here until ``resume_playback()``, however slow the machine (no race with playback)."""
    with anyio.fail_after(20):
        await phone.wait_until(lambda: any(m.get("event") == "mark" for m in phone.received))
        first = next(m["mark"]["name"] for m in phone.received if m.get("event") == "mark")
        phone.play_until_mark(first)
        await phone.wait_until(lambda: len(phone.echoed_marks) == 1)


def heard_a_second(sessions: list[Session]) -> bool:
    """The caller has heard a second of the bot, proven by echoed marks (so some whole words): a mark
    count says nothing, as espeak-ng's first pieces may be 70 ms or 1.5 s long."""
    output = sessions[0].output if sessions else None
    return output is not None and output.played_seconds >= 1.0


async def talk_over_the_bot(phone: FakeTwilioCall, sessions: list[Session]) -> None:
    """Ask (one batch), let the caller hear a second of the answer, talk over it (a second batch), and
    wait for both turns' results."""
    await phone.send_pcm(AUDIO_128MS, 8000)
    await eventually(lambda: heard_a_second(sessions))
    await phone.send_pcm(AUDIO_128MS, 8000)
    await eventually(lambda: bool(sessions) and len(sessions[0].results) == 2)


async def run_call(
    llm: FakeOpenAIServer,
    pulse: FakePulseServer,
    script: Callable[[FakeTwilioCall, list[Session]], Any],
    *,
    playback_speed: float,
    policy: BargeInPolicy | None = None,
    wrap: Callable[[TwilioMediaStream], Any] = lambda stream: stream,
    endpointing: Callable[[], EndpointingDetector] | None = None,
    tools: Sequence[Tool] = (),
    options: PulseOptions | None = None,
    vad: Callable[[], Any] | None = None,
    start_paused: bool = False,
) -> list[Session]:
    from voiceagent.adapters.espeak import EspeakSink

    sessions: list[Session] = []

    async def call(stream: TwilioMediaStream) -> None:
        async with PulseSTT("sk_test", options or PulseOptions.for_twilio("en"), url=pulse.url) as stt:
            agent = Agent(
                llm=LLMClient(base_url=llm.base_url, api_key="sk_test"),
                sink=EspeakSink(stream.output, words_per_minute=220),  # the call owns its output
                system_prompt="You are a phone storyteller.",
                tools=tools,
            )
            transport = wrap(stream)
            session = Session(
                agent=agent,
                transport=transport,
                stt=stt,
                # The stream owns its output and Session takes it from there; a wrapper hides it.
                output=None if transport is stream else stream.output,
                policy=policy,
                endpointing=endpointing() if endpointing else None,
                **({"vad": vad()} if vad else {}),
            )
            sessions.append(session)
            await session.run()

    async with pulse, TwilioServer(call, auth_token="test-auth-token") as server:
        async with FakeTwilioCall(
            server.url, auth_token="test-auth-token", playback_speed=playback_speed, start_paused=start_paused
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


def captioning(
    displays: list[Captioned], *, broken: bool = False
) -> Callable[[TwilioMediaStream], Captioned]:
    def wrap(stream: TwilioMediaStream) -> Captioned:
        displays.append(Captioned(stream, broken=broken))
        return displays[-1]

    return wrap


@pytest.mark.parametrize("broken", [False, True])
@pytest.mark.anyio
async def test_a_transport_that_shows_text_gets_transcripts_and_the_agents_words(
    broken: bool, caplog: pytest.LogCaptureFixture
) -> None:
    displays: list[Captioned] = []
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

        sessions = await run_call(
            llm, pulse, script, playback_speed=20, wrap=captioning(displays, broken=broken)
        )
    assert sessions[0].results[0].heard_text == "It is sunny in Paris, eighteen degrees. Anything else?"
    callers = [(text, final) for who, text, final in displays[0].shown if who == "caller"]
    # One line for the caller's turn: what was heard so far, then the turn's text as final.
    assert callers == [("What's the", False), ("What's the weather?", False), ("What's the weather?", True)]
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
        # The bot is talking and the caller has heard some of it (marks echoed in real time), then talks.
        sessions = await run_call(llm, pulse, talk_over_the_bot, playback_speed=1)
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


@pytest.mark.parametrize(
    ("heard", "shown"),
    [
        pytest.param(
            [Emit(2 * BATCH, transcript("mhm")), Emit(2 * BATCH, transcript("mhm, okay", is_final=True))],
            "mhm, okay",  # the session has taken "mhm, okay" while the bot still speaks
            id="backchannel",
        ),
        pytest.param(
            [
                Emit(2 * BATCH, speech_started(0.3)),  # VAD speech, and no words: a cough
                Emit(2 * BATCH, speech_ended(0.4)),
                Emit(2 * BATCH, transcript("mhm", is_final=True)),  # shown once the cough is taken
            ],
            "mhm",  # STT events arrive in order: once it is shown, the cough before it was taken
            id="cough",
        ),
    ],
)
@pytest.mark.anyio
async def test_a_backchannel_or_a_cough_while_the_bot_speaks_does_not_interrupt_it(
    heard: list[Emit], shown: str
) -> None:
    async with FakeOpenAIServer() as llm:
        llm.enqueue(text_reply("Sure. The lighthouse stood on a rock. Ships passed it every night."))
        pulse = FakePulseServer(
            [Emit(BATCH, transcript("Tell me about the lighthouse.", is_final=True)), *heard]
        )

        async def script(phone: FakeTwilioCall, sessions: list[Session]) -> None:
            await phone.send_pcm(AUDIO_128MS, 8000)
            await hold_mid_answer(phone)
            await phone.send_pcm(AUDIO_128MS, 8000)
            # Shown as a caller line mid-answer: the session took it while the bot still speaks.
            await eventually(lambda: ("caller", shown, True) in displays[0].shown)
            assert sessions[0].bot_speaking
            phone.resume_playback()
            await eventually(lambda: bool(sessions) and len(sessions[0].results) == 1)

        displays: list[Captioned] = []
        sessions = await run_call(
            llm,
            pulse,
            script,
            playback_speed=2,
            start_paused=True,
            wrap=captioning(displays),
        )
    assert sessions[0].barge_ins == 0
    assert len(llm.requests) == 1  # what the caller said during the bot's speech is no turn of its own
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


# ---- turn-taking on real-behaving Pulse: segment finals, VAD events, finalize ------------------------

SENTENCE = "I would like to book a table for two people at eight tonight please"  # 14 words


def silence(seconds: float) -> bytes:
    return b"\x00\x00" * int(seconds * 8000)


@pytest.mark.anyio
async def test_a_three_segment_utterance_is_one_user_turn_with_the_whole_text_and_one_reply() -> None:
    async with FakeOpenAIServer() as llm:
        llm.enqueue(text_reply("Booked: a table for two at eight."))
        pulse = FakePulseServer([Speech(SENTENCE, 0.2, 3.0)], max_words=5)

        displays: list[Captioned] = []

        async def script(phone: FakeTwilioCall, sessions: list[Session]) -> None:
            await phone.send_pcm(silence(3.5), 8000)  # past speech_ended (0.3 s after the words)
            await eventually(lambda: bool(sessions) and len(sessions[0].results) == 1)

        sessions = await run_call(llm, pulse, script, playback_speed=20, wrap=captioning(displays))
    session = sessions[0]
    # A page shows one caller line, growing, final once with the whole sentence.
    callers = [(text, final) for who, text, final in displays[0].shown if who == "caller"]
    assert [text for text, final in callers if final] == [SENTENCE]
    assert all(SENTENCE.startswith(text) for text, _ in callers)
    finals = [m["transcript"] for m in pulse.sessions[0].sent if m.get("is_final") and m["transcript"]]
    assert len(finals) == 3  # Pulse cut the sentence in three segments...
    (result,) = session.results  # ...and it is still one turn, one reply
    assert result.user_text == SENTENCE
    assert len(llm.requests) == 1 and llm.requests[0].body["messages"][-1] == {
        "role": "user",
        "content": SENTENCE,
    }
    assert [m["role"] for m in session.agent.conversation.history] == ["user", "assistant"]
    assert result.heard_text == "Booked: a table for two at eight." and not result.interrupted
    assert "finalize" in pulse.sessions[0].controls  # the open segment was asked for at speech_ended


@pytest.mark.anyio
async def test_a_pause_within_the_endpointing_delay_is_one_turn_and_the_early_reply_leaves_no_trace() -> None:
    first, rest = "I would like to book a table", "for two people at eight tonight please"
    async with FakeOpenAIServer() as llm:
        llm.enqueue(text_reply("A table, certainly."), text_reply("Booked: a table for two at eight."))
        # A 0.7 s breath between the two halves: Pulse's VAD says speech_ended (after 0.3 s) and
        # speech_started again; the caller has not finished.
        pulse = FakePulseServer([Speech(first, 0.2, 1.3), Speech(rest, 2.0, 3.5)], max_words=4)

        async def script(phone: FakeTwilioCall, sessions: list[Session]) -> None:
            # Up to the pause (Pulse gets 128 ms batches: 1.79 s of these 1.9): speech_ended, early reply.
            await phone.send_pcm(silence(1.9), 8000)
            with anyio.fail_after(20):
                await llm.wait_for_requests(1)
            await phone.send_pcm(silence(2.5), 8000)  # the caller goes on
            await eventually(lambda: bool(sessions) and len(sessions[0].results) == 1)

        sessions = await run_call(
            llm, pulse, script, playback_speed=20, endpointing=lambda: EndpointingDetector(delay=3.0)
        )
    session = sessions[0]
    (result,) = session.results
    assert result.user_text == f"{first} {rest}"
    # The early reply was generated for the first half, then dropped: never spoken, never committed.
    assert len(llm.requests) == 2
    early, final = (r.body["messages"] for r in llm.requests)
    assert early[-1] == {"role": "user", "content": first}
    assert early[:-1] == final[:-1]  # the cached prefix is the same across the restart
    assert session.agent.guard.busts == 0
    assert [m["content"] for m in session.agent.conversation.history] == [
        f"{first} {rest}",
        "Booked: a table for two at eight.",
    ]
    assert result.spoken_text == "Booked: a table for two at eight."
    assert len(session.discarded) == 1 and session.discarded[0].spoken_text == ""
    assert [r.speculative for r in result.speculative_rounds] == [True]
    assert [r.speculative for r in result.rounds] == [False]
    assert session.barge_ins == 0


@pytest.mark.parametrize(
    ("policy", "talk", "said", "reason"),
    [
        pytest.param(
            BargeInPolicy(min_words=3),
            [
                Emit(2 * BATCH, transcript("hold")),
                Emit(2 * BATCH, transcript("hold on")),
                Emit(2 * BATCH, transcript("hold on a second", is_final=True)),
            ],
            "hold on a second",
            "barge-in: caller said 4 word(s)",  # not at "hold", nor at "hold on"
            id="waits for the minimum number of words",
        ),
        pytest.param(
            BargeInPolicy(min_speech_seconds=60.0),  # never long enough on its own
            [Emit(2 * BATCH, transcript("stop")), Emit(2 * BATCH, transcript("stop", is_final=True))],
            "stop",
            "barge-in: the caller's turn ended",
            id="a short utterance below the minimum still interrupts when its turn ends",
        ),
    ],
)
@pytest.mark.anyio
async def test_barge_in_follows_the_policy(
    policy: BargeInPolicy, talk: list[Emit], said: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeOpenAIServer() as llm:
        llm.enqueue(text_reply(LONG_ANSWER), text_reply("Of course."))
        pulse = FakePulseServer([Emit(BATCH, transcript("Tell me a story.", is_final=True)), *talk])
        with caplog.at_level(logging.INFO, logger="voiceagent.session"):
            sessions = await run_call(llm, pulse, talk_over_the_bot, playback_speed=1, policy=policy)
    barge_ins = [r.getMessage() for r in caplog.records if r.getMessage().startswith("barge-in")]
    assert barge_ins == [reason]
    assert sessions[0].results[0].interrupted
    assert sessions[0].agent.conversation.history[2] == {"role": "user", "content": said}


@pytest.mark.anyio
async def test_caller_speaking_during_the_filler_keeps_the_running_tools_result() -> None:
    gate = anyio.Event()
    started = anyio.Event()

    @tool
    async def find_table(city: str) -> str:
        """Find a free table."""
        started.set()
        await gate.wait()
        return f"a table at eight in {city}"

    async with FakeOpenAIServer() as llm:
        llm.enqueue(
            tool_reply([("find_table", {"city": "Paris"})]), text_reply("Found one at eight in Paris.")
        )
        pulse = FakePulseServer(
            [
                Emit(BATCH, transcript("Find me a table in Paris.", is_final=True)),
                Emit(2 * BATCH, transcript("and for two people", is_final=True)),
            ]
        )

        async def script(phone: FakeTwilioCall, sessions: list[Session]) -> None:
            await phone.send_pcm(AUDIO_128MS, 8000)
            with anyio.fail_after(20):
                await started.wait()  # the filler is playing, the tool runs
            await phone.send_pcm(AUDIO_128MS, 8000)  # the caller talks over the filler
            await eventually(lambda: sessions[0].barge_ins == 1)
            gate.set()  # only now does the tool finish
            await eventually(lambda: len(sessions[0].results) == 2)

        sessions = await run_call(llm, pulse, script, playback_speed=20, tools=[find_table])
    first = sessions[0].results[0]
    assert first.interrupted
    assert [c.result for c in first.tool_calls] == ["a table at eight in Paris"]
    history = sessions[0].agent.conversation.history
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "user", "assistant"]
    assert history[1]["tool_calls"][0]["id"] == history[2]["tool_call_id"]
    assert history[2]["content"] == "a table at eight in Paris"  # the real result, not "Cancelled"
    assert history[3] == {"role": "user", "content": "and for two people"}


class RecordedVad:
    """A real webrtcvad whose events the test can read afterwards."""

    def __init__(self) -> None:
        self.vad = WebRtcVad()
        self.events: list[Any] = []

    def process(self, pcm: bytes, sample_rate: int) -> list[Any]:
        events = self.vad.process(pcm, sample_rate)
        self.events += events
        return events


@pytest.mark.anyio
async def test_an_stt_without_vad_events_gets_a_local_vad_on_the_callers_audio() -> None:
    pytest.importorskip("webrtcvad")
    words = speech("what is the weather in Paris")
    vads: list[RecordedVad] = []

    def make_vad() -> RecordedVad:
        vads.append(RecordedVad())
        return vads[-1]

    async with FakeOpenAIServer() as llm:
        llm.enqueue(text_reply("Sunny."))
        seconds = len(words) / 2 / 8000
        pulse = FakePulseServer(
            [Speech("what is the weather in Paris", 0.5, 0.5 + seconds)], vad_events=False
        )

        async def script(phone: FakeTwilioCall, sessions: list[Session]) -> None:
            await phone.send_pcm(silence(0.5) + words + silence(1.5), 8000)
            await eventually(lambda: bool(sessions) and len(sessions[0].results) == 1)

        options = PulseOptions(language="en", encoding="mulaw", sample_rate=8000, vad_events=False)
        sessions = await run_call(llm, pulse, script, playback_speed=20, options=options, vad=make_vad)
    assert not any(m.get("type") == "speech_started" for m in pulse.sessions[0].sent)  # Pulse sent none
    assert [type(e) for e in vads[0].events] == [SpeechStarted, SpeechEnded]  # the local VAD heard it
    (result,) = sessions[0].results
    assert result.user_text == "what is the weather in Paris" and result.heard_text == "Sunny."


def test_the_session_runs_a_local_vad_only_for_an_stt_without_speech_events() -> None:
    llm = LLMClient(base_url="http://127.0.0.1:9/v1", api_key="sk_test")  # never called
    agent = Agent(llm=llm, sink=RecordingSink(), system_prompt="")
    with_vad = PulseSTT("sk_test", PulseOptions(vad_events=True))
    without = PulseSTT("sk_test", PulseOptions(vad_events=False))
    assert Session(agent=agent, transport=None, stt=with_vad).vad is None  # type: ignore[arg-type]
    local = Session(agent=agent, transport=None, stt=without).vad  # type: ignore[arg-type]
    assert isinstance(local, VoiceActivityDetector)
    assert Session(agent=agent, transport=None, stt=without, vad=None).vad is None  # type: ignore[arg-type]
