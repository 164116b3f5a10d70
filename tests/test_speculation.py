"""A held (speculative) turn on its own: it streams, speaks nothing and runs no tool until released;
discarded, it leaves no trace in the conversation or the prompt-cache guard."""

from __future__ import annotations

import anyio
import pytest

from voiceagent.agent import Agent
from voiceagent.events import RoundFinished, SpeechQueued, ToolStarted, TurnEvent
from voiceagent.llm import LLMClient
from voiceagent.results import TurnResult
from voiceagent.testing.openai_server import FakeOpenAIServer, text_reply, tool_reply
from voiceagent.testing.sinks import RecordingSink
from voiceagent.tools import Tool, tool


def agent_on(server: FakeOpenAIServer, sink: RecordingSink, tools: list[Tool] | None = None) -> Agent:
    llm = LLMClient(base_url=server.base_url, api_key="sk_test")
    return Agent(llm=llm, sink=sink, system_prompt="You take bookings.", tools=tools or [])


@pytest.mark.anyio
async def test_a_held_turn_speaks_only_once_released() -> None:
    async with FakeOpenAIServer() as server:
        server.enqueue(text_reply("A table for two, done."))
        sink = RecordingSink()
        agent = agent_on(server, sink)
        streamed = anyio.Event()
        turn = agent.new_turn(lambda e: streamed.set() if isinstance(e, RoundFinished) else None, held=True)
        results: list[TurnResult] = []

        async def run() -> None:
            results.append(await turn.run("a table for two"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            with anyio.fail_after(10):
                await streamed.wait()  # the whole reply has streamed...
            assert sink.calls == []  # ...and nothing was said
            turn.release()
    assert sink.text == "A table for two, done."
    assert [m["role"] for m in agent.conversation.history] == ["user", "assistant"]
    assert [r.speculative for r in results[0].rounds] == [False]
    with pytest.raises(RuntimeError):
        turn.discard()  # once heard, a turn can only be cancelled


@pytest.mark.anyio
async def test_a_discarded_turn_leaves_no_trace_and_the_restart_keeps_the_cache_prefix() -> None:
    ran: list[int] = []

    @tool
    async def book(people: int) -> str:
        """Book a table."""
        ran.append(people)
        return "booked"

    async with FakeOpenAIServer() as server:
        server.enqueue(tool_reply([("book", {"people": 2})]), text_reply("Booked for three."))
        sink = RecordingSink()
        agent = agent_on(server, sink, [book])
        events: list[TurnEvent] = []
        filler = anyio.Event()

        def on_event(event: TurnEvent) -> None:
            events.append(event)
            if isinstance(event, SpeechQueued):
                filler.set()

        early = agent.new_turn(on_event, held=True)
        results: list[TurnResult] = []

        async def run() -> None:
            results.append(await early.run("a table for two"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            with anyio.fail_after(10):
                await filler.wait()  # the tool call is streaming; its filler is queued, unsaid
            early.discard()  # "...no, for three"
        (discarded,) = results
        assert ran == [] and not any(isinstance(e, ToolStarted) for e in events)  # the tool never ran
        assert sink.calls == []  # nothing said, nothing to silence
        assert agent.conversation.history == ()
        assert [r.speculative for r in discarded.rounds] == [True]
        result = await agent.respond("a table for two, no, for three")
    early_messages, final_messages = (r.body["messages"] for r in server.requests)
    assert early_messages[:-1] == final_messages[:-1]
    assert agent.guard.busts == 0  # the discarded request does not count as the previous one
    assert result.spoken_text == "Booked for three."
    assert [m["content"] for m in agent.conversation.history] == [
        "a table for two, no, for three",
        "Booked for three.",
    ]
