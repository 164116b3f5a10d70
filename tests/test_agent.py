"""Agent facade: the event iterator. (The README example runs in tests/test_readme.py.)"""

from __future__ import annotations

import anyio
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


@pytest.mark.anyio
async def test_a_second_respond_while_a_turn_runs_is_refused_and_the_first_goes_on() -> None:
    from voiceagent.errors import TurnInProgressError
    from voiceagent.testing.checks import assert_valid_conversation
    from voiceagent.testing.openai_server import Chunk, Reply

    gate = anyio.Event()
    reply = text_reply("The first answer.", pieces=3)
    events = list(reply.events)
    events[1] = Chunk(events[1].data, gate=gate)  # type: ignore[union-attr]
    async with FakeOpenAIServer() as server:
        server.enqueue(Reply(events=tuple(events)), text_reply("The second answer."))
        llm = LLMClient(base_url=server.base_url, api_key="sk_test")
        agent = Agent(llm=llm, sink=RecordingSink(), system_prompt="Be brief.")
        results: list[TurnResult] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def first() -> None:
                    results.append(await agent.respond("First question"))

                tg.start_soon(first)
                await server.wait_for_requests(1)
                assert agent.responding
                with pytest.raises(TurnInProgressError, match="already running a turn"):
                    await agent.respond("Second question")
                with pytest.raises(TurnInProgressError):
                    async with agent.events("Third question"):
                        pass
                gate.set()
            assert not agent.responding
            second = await agent.respond("Second question")  # once the first is over: fine
        await llm.aclose()
    assert results[0].heard_text == "The first answer." and second.heard_text == "The second answer."
    assert [m["content"] for m in agent.conversation.history] == [
        "First question",
        "The first answer.",
        "Second question",
        "The second answer.",
    ]
    assert_valid_conversation(agent.conversation.history)
    assert len(server.requests) == 2
