"""Replaying cassettes through the real pipeline (LLMClient -> loopback SSE -> Turn -> tools -> sink), and
recording sessions against FakeOpenAIServer."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest

from tests.conftest import fast_retry
from voiceagent.agent import Agent
from voiceagent.audio_output import CollectingOutput
from voiceagent.examples import weather_bot
from voiceagent.llm import LLMClient
from voiceagent.replay import (
    ReplayMismatch,
    ReplayServer,
    ReplaySTTSource,
    assert_speech_matches,
    replay_session,
)
from voiceagent.replay.cassette import Cassette, CassetteWriter
from voiceagent.replay.recorder import Recorder, RecordingTTSSink, tool_record
from voiceagent.speaker import Speaker
from voiceagent.stt import SpeechStarted, Transcript
from voiceagent.testing.openai_server import (
    Chunk,
    Drop,
    FakeOpenAIServer,
    error_reply,
    text_reply,
    tool_reply,
)
from voiceagent.testing.pytest_plugin import ReplayFactory
from voiceagent.testing.tone_sink import ToneEngine, ToneSink, tone_pcm
from voiceagent.tools import tool
from voiceagent.tts import TTSSink
from voiceagent.turn import ChatStreamer, TurnConfig

ROOT = Path(__file__).resolve().parents[1]
build_agent = weather_bot.build_agent

CASSETTES = ROOT / "examples" / "cassettes"
WEATHER = CASSETTES / "weather.jsonl"
GATE_TIMEOUT = 10.0


def recorded_sink() -> RecordingTTSSink:
    return RecordingTTSSink(ToneSink())


# ---- the shipped cassettes replay through the real pipeline ---------------------------------------


@pytest.mark.anyio
async def test_weather_cassette_replays_filler_tool_and_answer(replay: ReplayFactory) -> None:
    server = await replay("examples/cassettes/weather.jsonl", speed=0)
    sink = recorded_sink()
    agent = build_agent(server.client(), sink)
    with anyio.fail_after(GATE_TIMEOUT):
        result = await agent.respond("What's the weather in Paris right now?")

    recorded = server.cassette.turns[0]
    assert result.spoken_text == recorded.spoken_text
    assert result.spoken_text.startswith("Let me check the weather for you.")
    assert "18 degrees" in result.spoken_text
    assert [(c.name, c.result) for c in result.tool_calls] == [("get_weather", "Paris: 18 degrees C, sunny.")]
    assert result.request_ids == recorded.request_ids
    assert result.rounds[1].usage.cached_tokens == recorded.rounds[1]["usage"]["cached_tokens"] > 0
    assert result.rounds[0].usage.cached_tokens == 0
    assert_speech_matches(server.cassette, sink)  # texts and audio digests
    server.assert_complete()


@pytest.mark.anyio
async def test_parallel_tools_cassette_runs_both_calls(replay: ReplayFactory) -> None:
    server = await replay(CASSETTES / "parallel_tools.jsonl", speed=0)
    sink = recorded_sink()
    agent = build_agent(server.client(), sink)
    result = await agent.respond("Is it warmer in Paris or in London right now?")
    assert [(c.round, c.name, c.arguments) for c in result.tool_calls] == [
        (1, "get_weather", '{"city": "Paris"}'),
        (1, "get_weather", '{"city": "London"}'),
    ]
    assert [c.result for c in result.tool_calls] == [
        "Paris: 18 degrees C, sunny.",
        "London: 12 degrees C, light rain.",
    ]
    assert "Paris wins today." in result.spoken_text
    history = agent.conversation.history
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool", "assistant"]
    assert_speech_matches(server.cassette, sink)
    server.assert_complete()


@pytest.mark.anyio
@pytest.mark.parametrize("version", [1, 2])
async def test_barge_in_cassette_cuts_at_the_same_point_and_the_next_turn_matches(
    replay: ReplayFactory, tmp_path: Path, version: int
) -> None:
    """As recorded (version 1), and written back by this version (2): the same session."""
    path = CASSETTES / "barge_in.jsonl"
    if version == 2:
        path = tmp_path / "barge_in_v2.jsonl"
        path.write_text(Cassette.load(CASSETTES / "barge_in.jsonl").dumps())
    server = await replay(path, speed=0)
    assert server.cassette.source_version == version
    recorded = server.cassette.turns
    with anyio.fail_after(GATE_TIMEOUT):
        run = await replay_session(server, build_agent)
    first, second = run.results
    assert first.interrupted and not second.interrupted
    assert first.heard_text == recorded[0].heard_text
    assert first.heard_text.endswith("It's 16 degrees and clear in Tokyo right now. ")
    assert "breeze" not in first.spoken_text  # never streamed: the caller cut in before it
    assert second.spoken_text == recorded[1].spoken_text
    # Turn 2's first request carried turn 1's answer cut to what was heard; the server checked it.
    truncated = server.requests[2]["messages"][4]
    assert truncated["role"] == "assistant"
    assert truncated["content"].startswith("It's 16 degrees and clear in Tokyo right now.")
    assert "breeze" not in truncated["content"]
    assert_speech_matches(server.cassette, run.sink)
    server.assert_complete()


@pytest.mark.anyio
async def test_replay_at_recorded_speed_gives_the_same_session(replay: ReplayFactory) -> None:
    server = await replay(WEATHER, speed=4.0)
    sink = recorded_sink()
    result = await build_agent(server.client(), sink).respond("What's the weather in Paris right now?")
    assert result.spoken_text == server.cassette.turns[0].spoken_text
    server.assert_complete()


# ---- mismatches ------------------------------------------------------------------------------------


def weather_agent_with_prompt(system_prompt: str) -> Any:
    def factory(llm: ChatStreamer, sink: TTSSink) -> Agent:
        return Agent(
            llm=llm,
            sink=sink,
            system_prompt=system_prompt,
            tools=[weather_bot.get_weather],
            config=TurnConfig(max_rounds=3, params=weather_bot.PARAMS),
        )

    return factory


@pytest.mark.anyio
@pytest.mark.parametrize("allow_changed_tail", [False, True])
async def test_a_changed_system_prompt_fails_with_a_diff(
    replay: ReplayFactory, allow_changed_tail: bool
) -> None:
    server = await replay(WEATHER, speed=0, allow_changed_tail=allow_changed_tail)
    changed = weather_bot.SYSTEM_PROMPT.replace("friendly", "cheerful")
    agent = weather_agent_with_prompt(changed)(server.client(), recorded_sink())
    result = await agent.respond("What's the weather in Paris right now?")

    assert result.fallback_spoken and result.error is not None and "400" in result.error
    [mismatch] = server.take_mismatches()
    assert mismatch.exchange == 1
    assert '-      "content": "You are Sunny, a friendly voice' in mismatch.diff
    assert '+      "content": "You are Sunny, a cheerful voice' in mismatch.diff
    assert "request 1 (turn 1, round 1) differs from the recording" in str(mismatch)


@pytest.mark.anyio
async def test_a_changed_tail_fails_unless_allowed(replay: ReplayFactory) -> None:
    strict = await replay(WEATHER, speed=0)
    result = await build_agent(strict.client(), recorded_sink()).respond("What's the weather in Paris today?")
    assert result.fallback_spoken
    [mismatch] = strict.take_mismatches()
    assert '-      "content": "What\'s the weather in Paris right now?"' in mismatch.diff
    assert '+      "content": "What\'s the weather in Paris today?"' in mismatch.diff

    lenient = await replay(WEATHER, speed=0, allow_changed_tail=True)
    sink = recorded_sink()
    result = await build_agent(lenient.client(), sink).respond("What's the weather in Paris today?")
    # Round 2 repeats the changed user message mid-history: it still matches, as the same change.
    assert result.spoken_text == lenient.cassette.turns[0].spoken_text
    assert lenient.tail_changes == 1
    lenient.assert_complete()


@pytest.mark.anyio
async def test_changed_params_fail_even_with_allow_changed_tail(replay: ReplayFactory) -> None:
    server = await replay(WEATHER, speed=0, allow_changed_tail=True)
    agent = build_agent(server.client(), recorded_sink())
    agent.config = dataclasses.replace(agent.config, params={**weather_bot.PARAMS, "temperature": 0.7})
    await agent.respond("What's the weather in Paris right now?")
    [mismatch] = server.take_mismatches()
    assert '-    "temperature": 0' in mismatch.diff and '+    "temperature": 0.7' in mismatch.diff


@pytest.mark.anyio
async def test_a_tool_with_a_different_result_is_caught_unless_substituted(replay: ReplayFactory) -> None:
    @tool
    def get_weather(city: str, unit: str = "celsius") -> str:
        """Current weather for a city."""
        return f"{city}: 30 degrees C, heatwave."

    def factory(llm: ChatStreamer, sink: TTSSink) -> Agent:
        agent = build_agent(llm, sink)
        agent.runner = type(agent.runner)([get_weather], default_timeout=agent.runner.default_timeout)
        return agent

    # The real (changed) tool runs by default: its result goes into round 2's request, which differs.
    # (The schema differs too: ``unit`` is a plain str here, so round 1 is already caught.)
    real = await replay(WEATHER, speed=0)
    await factory(real.client(), recorded_sink()).respond("What's the weather in Paris right now?")
    assert real.take_mismatches()

    # Same schema, different result: caught at round 2, unless the recorded result is substituted.
    @tool
    def other_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> str:
        """Current weather for a city."""
        return "Paris: 30 degrees C, heatwave."

    other = dataclasses.replace(other_weather, name="get_weather")

    def factory2(llm: ChatStreamer, sink: TTSSink) -> Agent:
        agent = build_agent(llm, sink)
        agent.runner = type(agent.runner)([other], default_timeout=agent.runner.default_timeout)
        return agent

    unsubstituted = await replay(WEATHER, speed=0)
    await factory2(unsubstituted.client(), recorded_sink()).respond("What's the weather in Paris right now?")
    [mismatch] = unsubstituted.take_mismatches()
    assert mismatch.exchange == 2 and "heatwave" in mismatch.diff

    for substitute in ({"get_weather"}, True):
        substituted = await replay(WEATHER, speed=0, substitute_tools=substitute)
        agent = substituted.attach(factory2(substituted.client(), recorded_sink()))
        result = await agent.respond("What's the weather in Paris right now?")
        assert result.tool_calls[0].result == "Paris: 18 degrees C, sunny."
        substituted.assert_complete()

    # Substituting another tool's results leaves get_weather real (and still caught).
    other_only = await replay(WEATHER, speed=0, substitute_tools={"get_time"})
    await other_only.attach(factory2(other_only.client(), recorded_sink())).respond(
        "What's the weather in Paris right now?"
    )
    assert other_only.take_mismatches()


@pytest.mark.anyio
async def test_a_strict_server_raises_the_mismatch_when_its_block_ends() -> None:
    with pytest.raises(ReplayMismatch, match="request 1 \\(turn 1, round 1\\) differs"):
        async with ReplayServer(WEATHER, speed=0) as server:
            await build_agent(server.client(), ToneSink()).respond("Something else")


def test_an_unreported_mismatch_fails_the_test_with_the_diff(tmp_path: Path) -> None:
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(
        textwrap.dedent(
            f"""
            import pytest
            from voiceagent.examples.weather_bot import build_agent
            from voiceagent.testing.tone_sink import ToneSink

            @pytest.mark.anyio
            async def test_inner(replay):
                server = await replay({str(WEATHER)!r}, speed=0)
                agent = build_agent(server.client(), ToneSink())
                await agent.respond("Weather in Oslo?")  # the agent speaks its fallback; no exception here
            """
        )
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", str(test_file)],  # the entry point loads the plugin
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "ReplayMismatch" in proc.stdout
    assert '+      "content": "Weather in Oslo?"' in proc.stdout
    assert "1 failed" in proc.stdout


@pytest.mark.anyio
async def test_extra_and_missing_requests_are_reported(replay: ReplayFactory) -> None:
    server = await replay(WEATHER, speed=0)
    agent = build_agent(server.client(), recorded_sink())
    await agent.respond("What's the weather in Paris right now?")
    await agent.respond("And tomorrow?")
    [mismatch] = server.take_mismatches()
    assert "the agent sent request 3, but the recording has only 2" in str(mismatch)

    short = await replay(WEATHER, speed=0)
    with pytest.raises(AssertionError, match="the agent made 0 request"):
        short.assert_complete()


# ---- recording -------------------------------------------------------------------------------------


def make_llm(server: FakeOpenAIServer) -> LLMClient:
    return LLMClient(
        base_url=server.base_url,
        api_key="sk_secret_never_recorded",
        retry=fast_retry(),
    )


@pytest.mark.anyio
async def test_recorder_writes_what_went_by_and_the_recording_replays(tmp_path: Path) -> None:
    path = tmp_path / "session.jsonl"
    replies = (
        dataclasses.replace(
            tool_reply([("get_weather", {"city": "London"})], filler="One second.", usage=(300, 20, 0)),
            request_id="req-a",
        ),
        dataclasses.replace(
            text_reply("Rainy, 12 degrees.", pieces=4, usage=(340, 8, 256)), request_id="req-b"
        ),
    )
    async with FakeOpenAIServer() as fake:
        fake.enqueue(*replies)
        writer = CassetteWriter(path, meta={"agent": "voiceagent.examples.weather_bot:build_agent"})
        recorder = Recorder(writer)
        agent = recorder.attach(build_agent(make_llm(fake), ToneSink()))
        stt = recorder.wrap_stt(ReplaySTTSource(Cassette.from_records([]), speed=0))
        stt.record(SpeechStarted())
        stt.record(Transcript("London?", True))
        result = await recorder.respond(agent, "London?")
        writer.close()

    text = path.read_text()
    assert "sk_secret" not in text and "authorization" not in text.lower()
    cassette = Cassette.load(path)
    first, second = cassette.exchanges
    assert first.request.source == "wire"
    assert first.request.body == fake.requests[0].body  # the exact JSON body sent
    assert (first.request.turn, first.request.round, second.request.round) == (1, 1, 2)
    assert [e.request_id for e in cassette.exchanges] == ["req-a", "req-b"]
    for exchange, reply in zip(cassette.exchanges, replies, strict=True):  # every chunk, unchanged
        assert [c.data for c in exchange.chunks] == [e.data for e in reply.events if isinstance(e, Chunk)]
    assert first.end is not None and first.end.how == "done" and first.end.chunks == len(first.chunks)
    assert all(a.t <= b.t for a, b in zip(first.chunks, first.chunks[1:], strict=False))
    assert [t.call.result for t in cassette.tools] == ["London: 12 degrees C, light rain."]
    # The tool line is the turn's own record of the call, tagged with its turn, written once.
    assert cassette.tools == [tool_record(call, 1) for call in result.tool_calls]
    assert [s.text for s in cassette.speech] == ["One second.", " Rainy, ", "12 degrees."]
    assert all(s.audio_sha256 and s.audio_seconds for s in cassette.speech)
    assert [(t.kind, t.text) for t in cassette.transcripts] == [
        ("speech_started", ""),
        ("transcript", "London?"),
    ]
    [turn] = cassette.turns
    assert turn.spoken_text == result.spoken_text and turn.rounds[1]["usage"]["cached_tokens"] == 256

    async with ReplayServer(cassette, speed=0) as server:
        run = await replay_session(server, build_agent)
    assert run.results[0].spoken_text == result.spoken_text
    assert run.results[0].request_ids == ("req-a", "req-b")
    assert_speech_matches(cassette, run.sink)
    server.assert_complete()


@pytest.mark.anyio
async def test_a_dropped_stream_and_an_error_status_are_recorded_and_replayed(tmp_path: Path) -> None:
    writer = CassetteWriter.memory()
    async with FakeOpenAIServer() as fake:
        reply = text_reply("The answer is forty two, and here is why.", pieces=8)
        fake.enqueue(
            dataclasses.replace(reply, events=(*reply.events[:3], Drop())), error_reply(429, "slow down")
        )
        recorder = Recorder(writer)
        agent = recorder.attach(Agent(llm=make_llm(fake), sink=ToneSink(), system_prompt="Be brief."))
        cut = await recorder.respond(agent, "Question?")
        refused = await recorder.respond(agent, "Again?")
    cassette = writer.cassette()
    dropped, limited = cassette.exchanges
    assert dropped.end is not None and dropped.end.how == "dropped" and len(dropped.chunks) == 3
    assert limited.response is not None and limited.response.status == 429
    assert limited.end is not None and limited.end.how == "error"

    async with ReplayServer(cassette, speed=0) as server:
        replayed = Agent(llm=server.client(), sink=ToneSink(), system_prompt="Be brief.")
        again_cut = await replayed.respond("Question?")
        again_refused = await replayed.respond("Again?")
    assert again_cut.rounds[0].usage.estimated and again_cut.spoken_text == cut.spoken_text
    assert again_cut.rounds[0].content == cut.rounds[0].content
    assert (
        again_refused.error is not None
        and "429" in again_refused.error
        and "slow down" in again_refused.error
    )
    assert again_refused.request_ids == refused.request_ids
    server.assert_complete()


@pytest.mark.anyio
async def test_replay_stt_source_yields_the_recorded_transcripts() -> None:
    cassette = Cassette.load(CASSETTES / "barge_in.jsonl")
    source = ReplaySTTSource(cassette, speed=0)
    events = [e async for e in source.events()]
    assert events == [
        Transcript("What's the weather like in Tokyo?", True),
        SpeechStarted(events[1].at),  # type: ignore[union-attr]
        Transcript("Actually, what about London?", True),
    ]
    await source.send_audio(b"\x00\x00" * 10)
    await source.aclose()
    assert source.audio_bytes == 20


def test_assert_speech_matches_shows_a_diff() -> None:
    cassette = Cassette.load(WEATHER)
    spoken = list(cassette.speech)
    spoken[-1] = dataclasses.replace(spoken[-1], text="It's raining.")
    with pytest.raises(AssertionError) as info:
        assert_speech_matches(cassette, spoken, audio=False)
    assert "-'a lovely day to be outside.'" in str(info.value)
    assert '+"It\'s raining."' in str(info.value)
    assert_speech_matches(cassette, cassette.speech)


class _NoWireBody:
    """A ChatStreamer that does not expose the JSON body it sends (not every client does)."""

    def __init__(self, inner: LLMClient) -> None:
        self.inner = inner

    def stream(self, messages: Any, *, tools: Any = None, **params: Any) -> Any:
        inner = self.inner.stream(messages, tools=tools, **params)

        class Opaque:
            async def __aenter__(self) -> Any:
                return await inner.__aenter__()

            async def __aexit__(self, *exc: Any) -> Any:
                return await inner.__aexit__(*exc)

        return Opaque()


@pytest.mark.anyio
async def test_requests_are_recorded_from_the_arguments_when_the_body_is_not_exposed() -> None:
    writer = CassetteWriter.memory()
    async with FakeOpenAIServer() as fake:
        fake.enqueue(text_reply("Hi there."))
        recorder = Recorder(writer)
        agent = Agent(llm=_NoWireBody(make_llm(fake)), sink=ToneSink(), system_prompt="Be brief.")
        recorder.attach(agent)
        await recorder.respond(agent, "Hello")
    [exchange] = writer.cassette().exchanges
    assert exchange.request.source == "arguments"
    assert exchange.request.body == {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    }
    # Replay compares what was recorded (messages, tools, the params given), not the client's own fields.
    async with ReplayServer(writer.cassette(), speed=0) as server:
        run = await replay_session(
            server, lambda llm, sink: Agent(llm=llm, sink=sink, system_prompt="Be brief.")
        )
    assert run.results[0].spoken_text == "Hi there."
    async with ReplayServer(writer.cassette(), speed=0, strict=False) as server:
        await replay_session(server, lambda llm, sink: Agent(llm=llm, sink=sink, system_prompt="Be long."))
    assert "Be long." in server.take_mismatches()[0].diff


# ---- the plugin's loading ----------------------------------------------------------------------------


def test_the_entry_point_loads_the_plugin_without_importing_voiceagent(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from importlib.metadata import entry_points\n"
        "[ep] = [e for e in entry_points(group='pytest11') if e.name == 'voiceagent']\n"
        "ep.load()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'voiceagent'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_pytest_cov_measures_what_coverage_run_does(tmp_path: Path) -> None:
    (tmp_path / "test_small.py").write_text(
        "import pytest\n\n\n@pytest.mark.anyio\nasync def test_it(replay):\n"
        "    server = await replay('weather', speed=0)\n    assert server.exchanges\n"
    )
    common = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_small.py"]
    report = ["-m", "coverage", "report", "--include=*/voiceagent/*"]

    def total(*args: str) -> str:
        for command in ([sys.executable, *args], [sys.executable, *report]):
            done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.splitlines()[-1]

    by_plugin = total(*common, "--cov=voiceagent", "--cov-report=")
    by_coverage = total("-m", "coverage", "run", "--source=voiceagent", *common)
    assert by_plugin == by_coverage
    assert by_plugin.startswith("TOTAL")


@pytest.mark.anyio
async def test_a_session_whose_prompt_holds_a_secret_replays_against_its_redacted_recording(
    tmp_path: Path,
) -> None:
    """The cassette holds [REDACTED] where the live prompt holds the secret: replay compares the live body
    redacted the same way, or every such session would be a mismatch."""
    from voiceagent.logs import register_secret

    secret = "acct-pin-7731-very-private"
    register_secret(secret)

    def build(llm: ChatStreamer, sink: TTSSink) -> Agent:
        return Agent(llm=llm, sink=sink, system_prompt=f"The caller's account pin is {secret}. Be brief.")

    path = tmp_path / "secret.jsonl"
    async with FakeOpenAIServer() as fake:
        fake.enqueue(text_reply("Hello, how can I help?"))
        writer = CassetteWriter(path)
        recorder = Recorder(writer)
        agent = recorder.attach(build(make_llm(fake), ToneSink()))
        stt = recorder.wrap_stt(ReplaySTTSource(Cassette.from_records([]), speed=0))
        stt.record(Transcript("Hi there", True))
        await recorder.respond(agent, "Hi there")
        writer.close()
    assert secret not in path.read_text()

    async with ReplayServer(Cassette.load(path), speed=0) as server:
        run = await replay_session(server, build)
    assert run.results[0].spoken_text == "Hello, how can I help?"
    server.assert_complete()


@pytest.mark.anyio
async def test_recording_a_speaker_taps_its_engine_and_leaves_its_output_alone() -> None:
    """The recorder hooks the Speaker (what its engine returned), not the sink's output."""
    out = CollectingOutput(8000)
    speaker = Speaker(ToneEngine(24000), out)
    sink = RecordingTTSSink(speaker)
    await sink.speak("Hello there.")
    [record] = sink.records
    engine_pcm = tone_pcm("Hello there.", 24000)
    assert speaker.output is out and sink.audio_captured
    assert record.audio_sha256 == hashlib.sha256(engine_pcm).hexdigest()
    assert record.sample_rate == 24000 and record.audio_seconds == len(engine_pcm) / 2 / 24000
    assert out.pcm16 and out.pcm16 != engine_pcm  # the output got it resampled to 8 kHz


@pytest.mark.anyio
async def test_a_sink_that_is_no_speaker_is_recorded_as_text_only() -> None:
    class TextOnly:  # an app's own TTSSink, with no engine to tap
        played_chars = 0

        async def speak(self, text: str) -> None:
            self.played_chars += len(text)

        async def flush(self) -> None:
            pass

        async def cancel(self) -> None:
            pass

    sink = RecordingTTSSink(TextOnly())
    await sink.speak("Hi.")
    assert not sink.audio_captured
    assert [(r.text, r.audio_sha256) for r in sink.records] == [("Hi.", None)]
