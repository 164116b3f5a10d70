"""A small user project, written as a user would: their own bot module, a cassette recorded from it, and
a test suite for each pytest set-up (pytest-asyncio strict, pytest-asyncio auto, anyio's plugin), run
with warnings as errors.

``write_user_project(folder, python)`` writes it and records the cassette with ``python`` (the
interpreter of the venv under test), through voiceagent's real recorder and its loopback server.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

BOT = '''
    from voiceagent import Agent, tool
    from voiceagent.turn import TurnConfig


    @tool
    def opening_hours(day: str) -> str:
        """Opening hours of the shop on a day."""
        return f"{day}: 9 to 17"


    def build_agent(llm, sink):
        return Agent(
            llm=llm,
            sink=sink,
            system_prompt="You are the shop's phone assistant. Be brief.",
            tools=[opening_hours],
            config=TurnConfig(params={"temperature": 0}),
        )
'''

RECORD = """
    import anyio
    from shopbot import build_agent
    from voiceagent.replay.cassette import CassetteWriter
    from voiceagent.llm import LLMClient
    from voiceagent.replay.recorder import Recorder
    from voiceagent.testing.openai_server import FakeOpenAIServer, text_reply, tool_reply
    from voiceagent.testing.tone_sink import ToneSink

    async def main():
        async with FakeOpenAIServer() as server:
            server.enqueue(
                tool_reply([("opening_hours", {"day": "Monday"})], filler="Let me look."),
                text_reply("On Monday we are open from nine to five."),
            )
            writer = CassetteWriter("tests/shop.jsonl", meta={"agent": "shopbot:build_agent"})
            recorder = Recorder(writer)
            llm = LLMClient(base_url=server.base_url, api_key="not-needed")
            agent = recorder.attach(build_agent(llm, ToneSink()))
            await recorder.respond(agent, "When are you open on Monday?")
            writer.close()

    anyio.run(main)
"""

# One body, three spellings of "this is an async test". {mark} is the set-up's marker line.
TESTS = """
    import pytest
    from shopbot import build_agent
    from voiceagent.examples.weather_bot import build_agent as build_weather_agent
    from voiceagent.replay.recorder import RecordingTTSSink
    from voiceagent.replay import assert_speech_matches, replay_session
    from voiceagent.testing.tone_sink import ToneSink

    {mark}
    async def test_the_shop_answers_as_recorded(replay):
        server = await replay("tests/shop.jsonl", speed=0)
        sink = RecordingTTSSink(ToneSink())
        result = await build_agent(server.client(), sink).respond("When are you open on Monday?")
        assert result.spoken_text == "Let me look. On Monday we are open from nine to five."
        assert [c.result for c in result.tool_calls] == ["Monday: 9 to 17"]
        assert_speech_matches(server.cassette, sink)
        server.assert_complete()

    {mark}
    async def test_a_changed_prompt_is_caught(replay):
        server = await replay("tests/shop.jsonl", speed=0)
        result = await build_agent(server.client(), ToneSink()).respond("When are you open on Sunday?")
        assert result.fallback_spoken
        [mismatch] = server.take_mismatches()
        assert '+      "content": "When are you open on Sunday?"' in mismatch.diff

    {mark}
    async def test_a_barge_in_is_cut_where_it_was(replay):
        server = await replay("tests/barge_in.jsonl", speed=0)
        run = await replay_session(server, build_weather_agent)
        assert run.results[0].interrupted and not run.results[1].interrupted
        server.assert_complete()
"""

SETUPS: dict[str, str] = {
    "strict": "@pytest.mark.asyncio",  # pytest-asyncio, strict mode (its default)
    "auto": "",  # pytest-asyncio, asyncio_mode = auto: no marker at all
    "anyio": "@pytest.mark.anyio",  # anyio's pytest plugin
}


PYPROJECT = """
    [project]
    name = "shopbot"
    version = "0.1"
    dependencies = ["voiceagent"]

    [tool.pytest.ini_options]
    filterwarnings = ["error"]
"""


def write_user_project(folder: Path, python: str, barge_in_cassette: Path) -> None:
    (folder / "tests").mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (folder / "shopbot.py").write_text(textwrap.dedent(BOT))
    (folder / "tests" / "barge_in.jsonl").write_bytes(barge_in_cassette.read_bytes())
    for setup, mark in SETUPS.items():
        (folder / "tests" / f"test_{setup}.py").write_text(textwrap.dedent(TESTS).format(mark=mark))
    done = subprocess.run(
        [python, "-c", textwrap.dedent(RECORD)],
        cwd=folder, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def pytest_runs(python: str) -> dict[str, list[str]]:
    """Each set-up's pytest command line, over the test files written for it (and the anyio-marked ones
    where that set-up also runs them: auto mode must not break an anyio test)."""
    base = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    asyncio = [*base, "-o", "asyncio_default_fixture_loop_scope=function"]  # or pytest-asyncio warns
    return {
        "strict": [*asyncio, "-o", "asyncio_mode=strict", "tests/test_strict.py", "tests/test_anyio.py"],
        "auto": [*asyncio, "-o", "asyncio_mode=auto", "tests/"],  # all three spellings
        "anyio": [*base, "-p", "no:asyncio", "tests/test_anyio.py"],  # pytest-asyncio not loaded at all
    }
