"""Agent facade: the event iterator. (The README example runs in tests/test_readme.py.)"""

from __future__ import annotations

import pytest

from voiceagent import Agent, LLMClient, TurnConfig, TurnResult
from voiceagent.events import RoundFinished, RoundStarted, SpeechQueued, TurnFinished
from voiceagent.testing.openai_server import FakeOpenAIServer, text_reply
from voiceagent.testing.sinks import RecordingSink


@pytest.mark.anyio
async def test_events_iterator_yields_the_turn_then_its_result() -> None:
    async with FakeOpenAIServer() as server:
        server.enqueue(text_reply("Hello there, how can I help?"))
        agent = Agent(
            llm=LLMClient(base_url=server.base_url, api_key="sk_test"),
            sink=RecordingSink(),
            system_prompt="Be brief.",
        )
        async with agent.events("Hi") as events:
            seen = [e async for e in events]
    assert isinstance(seen[0], RoundStarted)
    assert any(isinstance(e, SpeechQueued) for e in seen)
    assert isinstance(seen[-2], RoundFinished)
    assert isinstance(seen[-1], TurnFinished) and isinstance(seen[-1].result, TurnResult)
    assert seen[-1].result.heard_text == "Hello there, how can I help?"
    assert agent.results == [seen[-1].result]


def test_turn_config_rejects_zero_rounds() -> None:
    with pytest.raises(ValueError, match="max_rounds"):
        TurnConfig(max_rounds=0)
