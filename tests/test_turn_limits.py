"""Deadlines and caps of a turn, against hostile LLM servers on 127.0.0.1: headers then silence, a slow
drip of bytes before or after the first token, an answer that never ends into a sink that never plays.

Each one must end in the fallback line within its deadline (the SDK's read timeout never fires: a drip
resets it), close the stream, and say why in ``TurnResult.error`` and the round record.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tests.conftest import fast_retry
from voiceagent.agent import Agent
from voiceagent.events import SpeechQueued, TurnEvent
from voiceagent.llm import LLMClient
from voiceagent.testing.checks import assert_valid_conversation
from voiceagent.testing.openai_server import (
    Chunk,
    FakeOpenAIServer,
    Reply,
    drip_reply,
    endless_text_reply,
    text_reply,
)
from voiceagent.testing.sinks import RecordingSink
from voiceagent.turn import TurnConfig

GATE_TIMEOUT = 10.0  # a generous bound: only reached when the behaviour under test is broken
FALLBACK = "Sorry, I couldn't manage that just now. Could you try again?"


def make_agent(server: FakeOpenAIServer, sink: RecordingSink | None = None, **config: Any) -> Agent:
    # The SDK's read timeout stays at its default (30 s): only the turn's deadlines can end these streams.
    llm = LLMClient(base_url=server.base_url, api_key="sk_test", retry=fast_retry())
    return Agent(
        llm=llm,
        sink=sink or RecordingSink(),
        system_prompt="You are a concise phone assistant.",
        config=TurnConfig(fallback=FALLBACK, **config),
    )


@pytest.mark.anyio
async def test_headers_then_silence_ends_in_the_fallback_at_the_first_token_deadline(
    server: FakeOpenAIServer,
) -> None:
    never = anyio.Event()
    server.enqueue(Reply(events=(Chunk({"choices": []}, gate=never),)))
    agent = make_agent(server, first_token_timeout=0.3)
    with anyio.fail_after(GATE_TIMEOUT):
        result = await agent.respond("Hello?")
        await server.wait_for_disconnect(0)  # the stream was closed, not left hanging
    assert result.fallback_spoken and agent.sink.text == FALLBACK  # type: ignore[attr-defined]
    assert "first_token_timeout=0.3" in (result.error or "")
    assert result.rounds[0].error == result.error and result.rounds[0].first_chunk_at is None
    assert len(server.requests) == 1 and server.in_flight == 0
    assert [m["role"] for m in agent.conversation.history] == [
        "user"
    ]  # the fallback is ours, not the model's
    await agent.llm.aclose()  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_slow_drip_before_the_first_token_ends_at_the_first_token_deadline(
    server: FakeOpenAIServer,
) -> None:
    server.enqueue(drip_reply(0.05))
    agent = make_agent(server, first_token_timeout=0.5)
    with anyio.fail_after(GATE_TIMEOUT):
        result = await agent.respond("Hello?")
        await server.wait_for_disconnect(0)
    assert result.fallback_spoken and "first_token_timeout" in (result.error or "")
    await agent.llm.aclose()  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_slow_drip_after_the_first_words_ends_at_the_round_deadline(
    server: FakeOpenAIServer,
) -> None:
    words = [e for e in text_reply("It is sunny. And then", pieces=3).events[:3] if isinstance(e, Chunk)]
    server.enqueue(drip_reply(0.05, after=words))
    agent = make_agent(server, round_timeout=1.5)
    with anyio.fail_after(GATE_TIMEOUT):
        result = await agent.respond("Weather?")
        await server.wait_for_disconnect(0)
    assert "round_timeout=1.5" in (result.error or "")
    assert result.spoken_text == f"It is sunny. And then {FALLBACK}"
    assert agent.sink.text == result.spoken_text  # type: ignore[attr-defined]
    assert result.rounds[0].usage.estimated
    history = agent.conversation.history
    assert history[1] == {"role": "assistant", "content": "It is sunny. And then"}
    assert_valid_conversation(history)
    await agent.llm.aclose()  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_the_first_chunk_lifts_the_first_token_deadline(server: FakeOpenAIServer) -> None:
    # The second chunk comes well after the first-token deadline: the turn must still answer.
    reply = text_reply("Fine, thanks.", pieces=2)
    events = list(reply.events)
    events[1] = Chunk(events[1].data, delay=2.0)  # type: ignore[union-attr]
    server.enqueue(Reply(events=tuple(events)))
    agent = make_agent(server, first_token_timeout=1.0, round_timeout=None)
    with anyio.fail_after(GATE_TIMEOUT):
        result = await agent.respond("How are you?")
    assert result.error is None and result.spoken_text == "Fine, thanks."
    await agent.llm.aclose()  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_an_endless_answer_into_a_stuck_sink_stops_at_max_round_chars(server: FakeOpenAIServer) -> None:
    class StuckSink(RecordingSink):
        """Plays nothing until released: everything the turn produces waits in its speech queue."""

        release = anyio.Event()

        async def speak(self, text: str) -> None:
            await self.release.wait()
            await super().speak(text)

    server.enqueue(endless_text_reply())
    sink = StuckSink()
    agent = make_agent(server, sink, max_round_chars=500)
    queued: list[SpeechQueued] = []

    def on_event(event: TurnEvent) -> None:
        if isinstance(event, SpeechQueued):
            queued.append(event)

    async def release_once_closed() -> None:
        await server.wait_for_disconnect(0)  # the turn closed the endless stream by itself
        sink.release.set()

    with anyio.fail_after(GATE_TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(release_once_closed)
            result = await agent.respond("Talk to me.", on_event=on_event)
    model_chars = sum(len(e.text) for e in queued if not e.filler)
    assert model_chars <= 500 + len(queued)  # a space may join chunks of different rounds; no more
    assert result.rounds[0].content == "blah " * 100
    assert "max_round_chars=500" in (result.error or "") and result.rounds[0].error == result.error
    assert result.fallback_spoken and sink.text == result.spoken_text
    assert sink.text.startswith("blah " * 99 + "blah") and sink.text.endswith(FALLBACK)
    assert agent.conversation.history[1] == {"role": "assistant", "content": "blah " * 100}
    assert_valid_conversation(agent.conversation.history)
    await agent.llm.aclose()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "bad",
    [{"first_token_timeout": 0}, {"round_timeout": -1.0}, {"max_round_chars": 0}],
)
def test_bad_limits_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        TurnConfig(**bad)


@pytest.mark.anyio
async def test_the_chunk_that_reaches_max_round_chars_still_dispatches_the_tool_call_it_completes(
    server: FakeOpenAIServer,
) -> None:
    from voiceagent.testing.openai_server import _ChunkFactory
    from voiceagent.tools import tool

    ran: list[str] = []

    @tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        ran.append(city)
        return f"{city}: sunny"

    factory = _ChunkFactory("electron")
    call = {"index": 0, "id": "call_1", "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    both = factory.chunk({"role": "assistant", "content": "Let me check the weather. ", "tool_calls": [call]})
    server.enqueue(Reply(events=(Chunk(both), Chunk(factory.chunk({}, "tool_calls")))))
    llm = LLMClient(base_url=server.base_url, api_key="sk_test")
    agent = Agent(
        llm=llm,
        sink=RecordingSink(),
        system_prompt="Be brief.",
        tools=[get_weather],
        config=TurnConfig(fallback=FALLBACK, max_round_chars=10),
    )
    with anyio.fail_after(GATE_TIMEOUT):
        result = await agent.respond("Weather?")
    await llm.aclose()
    assert ran == ["Oslo"] and result.tool_calls[0].result == "Oslo: sunny"
    assert "max_round_chars=10" in (result.error or "") and result.fallback_spoken
    history = agent.conversation.history
    assert history[1]["content"] == "Let me che" and history[1]["tool_calls"][0]["id"] == "call_1"
    assert history[2] == {"role": "tool", "tool_call_id": "call_1", "content": "Oslo: sunny"}
    assert_valid_conversation(history)
