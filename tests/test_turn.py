"""The turn pipeline end to end: real openai SDK -> real loopback SSE server -> Turn -> sink, tools."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import anyio
import pytest

from tests.conftest import fast_retry
from voiceagent.agent import Agent
from voiceagent.events import SpeechQueued, ToolFinished, ToolStarted, TurnEvent, Usage
from voiceagent.llm import LLMClient
from voiceagent.testing.openai_server import (
    Chunk,
    Drop,
    FakeOpenAIServer,
    Reply,
    error_reply,
    text_reply,
    tool_reply,
)
from voiceagent.testing.sinks import FlakySink, RecordingSink
from voiceagent.tools import tool
from voiceagent.turn import INTERRUPTED_TOOL_RESULT, TurnConfig

GATE_TIMEOUT = 5.0  # a generous bound: only reached when the behaviour under test is broken


def make_agent(
    server: FakeOpenAIServer, sink: RecordingSink, tools: list[Any] | None = None, **config: Any
) -> Agent:
    llm = LLMClient(base_url=server.base_url, api_key="sk_test", retry=fast_retry())
    return Agent(
        llm=llm,
        sink=sink,
        system_prompt="You are a concise phone assistant.",
        tools=tools or [],
        config=TurnConfig(**config),
    )


def gate_last(reply: Reply, gate: anyio.Event, count: int = 1) -> Reply:
    """Hold the reply's last ``count`` chunks until ``gate`` is set."""
    events = list(reply.events)
    for i in range(len(events) - count, len(events)):
        events[i] = dataclasses.replace(events[i], gate=gate)
    return dataclasses.replace(reply, events=tuple(events))


def assert_valid_conversation(agent: Agent) -> None:
    assert agent.conversation.unanswered_tool_calls() == []
    for m in agent.conversation.history:
        if m["role"] == "assistant":
            assert m["content"] or m.get("tool_calls")


@pytest.mark.anyio
async def test_text_turn_streams_to_sink_and_records_usage_and_request_id(server: FakeOpenAIServer) -> None:
    server.enqueue(
        dataclasses.replace(
            text_reply("Sure, it is sunny in Paris today. Anything else?", pieces=12, usage=(200, 12, 160)),
            request_id="req-abc",
        )
    )
    sink = RecordingSink()
    agent = make_agent(server, sink)
    result = await agent.respond("Weather in Paris?")

    assert sink.text == "Sure, it is sunny in Paris today. Anything else?"
    assert len(sink.spoken) >= 2  # the first clause went out on its own
    assert sink.spoken[0] == "Sure, "
    body = server.requests[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"][-1] == {"role": "user", "content": "Weather in Paris?"}
    assert result.request_ids == ("req-abc",)
    assert result.usage == Usage(200, 12, 160)
    assert result.rounds[0].finish_reason == "stop"
    assert result.time_to_first_text is not None and result.time_to_first_text <= result.total
    assert [m["role"] for m in agent.conversation.history] == ["user", "assistant"]


@pytest.mark.anyio
async def test_last_words_are_spoken_at_finish_reason_not_after_the_usage_chunk(
    server: FakeOpenAIServer,
) -> None:
    sink = RecordingSink()
    # "now." ends the text but no word start after it decides that: only the finish chunk says the text
    # is final. The usage chunk is held until the last words are at the sink: waiting for it (or for
    # [DONE]) to flush would deadlock and time out.
    server.enqueue(gate_last(text_reply("It is 21 degrees and sunny right now."), sink.first_text))
    agent = make_agent(server, sink)
    with anyio.fail_after(GATE_TIMEOUT):
        result = await agent.respond("Weather?")
    assert sink.text == "It is 21 degrees and sunny right now."
    assert result.usage == Usage(10, 5, 0)  # the usage chunk still counts


@pytest.mark.anyio
async def test_tool_starts_before_last_chunk_and_filler_reaches_sink_before_tool_finishes(
    server: FakeOpenAIServer,
) -> None:
    tool_started = anyio.Event()
    sink = RecordingSink(seconds_per_char=0.001)

    @tool
    async def get_weather(city: str) -> str:
        """Current weather for a city."""
        tool_started.set()
        # The filler must be at the sink while we are still running: we wait for it to prove it.
        with anyio.fail_after(GATE_TIMEOUT):
            await sink.first_text.wait()
        return f"{city}: 18 C, sunny"

    # The finish chunk and the usage chunk are only sent once the tool has started: if the turn waited
    # for the end of the stream to start tools, this would deadlock and time out.
    server.enqueue(
        gate_last(
            tool_reply([("get_weather", {"city": "Paris"})], filler="Let me check the weather for you."),
            tool_started,
            count=2,
        ),
        text_reply("It's 18 degrees and sunny in Paris."),
    )
    agent = make_agent(server, sink, [get_weather])
    events: list[TurnEvent] = []
    with anyio.fail_after(GATE_TIMEOUT * 2):
        result = await agent.respond("What's the weather in Paris?", on_event=events.append)

    # The second round's words are spoken apart from the filler: a space keeps the text readable.
    assert sink.text == "Let me check the weather for you. It's 18 degrees and sunny in Paris."
    started = next(e for e in events if isinstance(e, ToolStarted))
    finished = next(e for e in events if isinstance(e, ToolFinished))
    first_speech = next(e for e in events if isinstance(e, SpeechQueued))
    assert first_speech.at <= started.at <= finished.at
    assert [c.name for c in result.tool_calls] == ["get_weather"]
    assert result.tool_calls[0].result == "Paris: 18 C, sunny"
    assert len(result.rounds) == 2
    history = agent.conversation.history
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    assert history[1]["content"] == "Let me check the weather for you."
    assert history[1]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert history[2] == {
        "role": "tool",
        "tool_call_id": history[1]["tool_calls"][0]["id"],
        "content": "Paris: 18 C, sunny",
    }
    # Round 2 sent exactly round 1's messages plus the new tail: the cached prefix survives.
    first, second = (r.body["messages"] for r in server.requests)
    assert second[: len(first)] == first
    assert second[len(first) :] == [dict(history[1]), dict(history[2])]
    assert server.requests[0].body["tools"][0]["function"]["name"] == "get_weather"
    assert all(r.cache_bust is None for r in result.rounds)


@pytest.mark.anyio
async def test_tool_call_without_content_speaks_the_configured_filler_at_once(
    server: FakeOpenAIServer,
) -> None:
    sink = RecordingSink()

    @tool
    async def lookup_order(order_id: str) -> str:
        """Look up an order."""
        with anyio.fail_after(GATE_TIMEOUT):
            await sink.first_text.wait()
        return "shipped"

    server.enqueue(tool_reply([("lookup_order", {"order_id": "A1"})]), text_reply("It has shipped."))
    agent = make_agent(server, sink, [lookup_order], filler="Hold on a second.")
    result = await agent.respond("Where is my order?")
    assert sink.spoken[0] == "Hold on a second."
    assert sink.text.endswith("It has shipped.")
    # The filler is ours, not the model's: the assistant message keeps the model's (null) content.
    assert agent.conversation.history[1]["content"] is None
    assert not result.fallback_spoken


@pytest.mark.anyio
async def test_parallel_tool_calls_run_concurrently_and_answer_in_call_order(
    server: FakeOpenAIServer,
) -> None:
    both_running = anyio.Event()
    running = 0

    async def rendezvous() -> None:
        nonlocal running
        running += 1
        if running == 2:
            both_running.set()
        with anyio.fail_after(GATE_TIMEOUT):
            await both_running.wait()  # only returns if the other call runs at the same time

    @tool
    async def get_weather(city: str) -> str:
        """Weather."""
        await rendezvous()
        return "sunny"

    @tool
    def get_time(city: str) -> str:  # sync: runs in a worker thread
        """Local time."""
        anyio.from_thread.run(rendezvous)
        return "10:00"

    server.enqueue(
        tool_reply([("get_weather", {"city": "Oslo"}), ("get_time", {"city": "Oslo"})], filler="Checking."),
        text_reply("Sunny, and it's ten."),
    )
    agent = make_agent(server, RecordingSink(), [get_weather, get_time])
    result = await agent.respond("Weather and time in Oslo?")
    history = agent.conversation.history
    call_ids = [c["id"] for c in history[1]["tool_calls"]]
    assert [m.get("tool_call_id") for m in history[2:4]] == call_ids
    assert [m["content"] for m in history[2:4]] == ["sunny", "10:00"]
    assert result.usage.prompt_tokens == 20


@pytest.mark.anyio
async def test_tool_chain_is_bounded_by_max_rounds_then_fallback(server: FakeOpenAIServer) -> None:
    @tool
    def step() -> str:
        """One more step."""
        return "done"

    server.responder = lambda body: tool_reply([("step", {})])
    sink = RecordingSink()
    agent = make_agent(server, sink, [step], max_rounds=3, fallback="Sorry, that took too long.")
    result = await agent.respond("Loop forever")
    assert len(server.requests) == 3
    assert result.fallback_spoken
    assert sink.spoken[-1] == " Sorry, that took too long."  # spoken apart from the last round: spaced
    assert result.error == "tool chain reached max_rounds=3"
    assert_valid_conversation(agent)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 401, 429])
async def test_llm_error_gives_a_spoken_fallback_not_an_exception(
    server: FakeOpenAIServer, status: int
) -> None:
    server.enqueue(error_reply(status, "nope"))
    sink = RecordingSink()
    agent = make_agent(server, sink, fallback="Sorry, try again.")
    result = await agent.respond("Hi")
    assert sink.spoken == ["Sorry, try again."]
    assert result.error is not None and str(status) in result.error
    assert len(server.requests) == 1
    assert [m["role"] for m in agent.conversation.history] == ["user"]
    assert result.rounds[0].attempts == 1


@pytest.mark.anyio
async def test_a_round_that_never_opened_reports_its_attempts(server: FakeOpenAIServer) -> None:
    server.responder = lambda body: error_reply(503, "overloaded")
    agent = make_agent(server, RecordingSink())
    result = await agent.respond("Hi")
    assert len(server.requests) == 5
    assert result.rounds[0].attempts == 5


@pytest.mark.anyio
async def test_tool_errors_become_tool_messages_and_the_turn_goes_on(server: FakeOpenAIServer) -> None:
    @tool
    def explode(x: int) -> str:
        """Fails."""
        raise RuntimeError("database down")

    server.enqueue(
        tool_reply([("explode", {"x": 1}), ("no_such_tool", {})], filler="One sec."),
        text_reply("Sorry, I can't reach the database."),
    )
    agent = make_agent(server, RecordingSink(), [explode])
    result = await agent.respond("Do it")
    assert [c.is_error for c in result.tool_calls] == [True, True]
    tool_messages = [m for m in agent.conversation.history if m["role"] == "tool"]
    assert "database down" in tool_messages[0]["content"]
    assert "no_such_tool" in tool_messages[1]["content"]
    assert result.rounds[-1].content == "Sorry, I can't reach the database."
    assert_valid_conversation(agent)


@pytest.mark.anyio
async def test_second_turn_extends_the_first_request_prefix(server: FakeOpenAIServer) -> None:
    server.enqueue(text_reply("Hello!"), text_reply("Bye!"))
    agent = make_agent(server, RecordingSink())
    await agent.respond("Hi")
    result = await agent.respond("Bye")
    first, second = (r.body["messages"] for r in server.requests)
    assert second[: len(first)] == first
    assert second[len(first) :] == [
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    assert agent.guard.busts == 0 and result.rounds[0].cache_bust is None


@pytest.mark.anyio
async def test_cache_guard_reports_a_changed_earlier_message(server: FakeOpenAIServer) -> None:
    server.enqueue(text_reply("Hello!"), text_reply("Bye!"))
    agent = make_agent(server, RecordingSink())
    await agent.respond("Hi")
    agent.conversation._history[0]["content"] = "Hi there"  # the kind of bug the guard exists for
    result = await agent.respond("Bye")
    assert result.rounds[0].cache_bust == "message 1 changed after it was sent"
    assert agent.guard.busts == 1


@pytest.mark.anyio
async def test_stream_cut_mid_answer_speaks_fallback_and_flags_usage_estimated(
    server: FakeOpenAIServer,
) -> None:
    reply = text_reply("The answer is forty two, and here is why that matters.", pieces=10)
    server.enqueue(dataclasses.replace(reply, events=(*reply.events[:4], Drop())))
    sink = RecordingSink()
    agent = make_agent(server, sink, fallback="Sorry, I lost the line.")
    result = await agent.respond("Question")
    assert sink.spoken[-1] == " Sorry, I lost the line."
    assert result.rounds[0].usage.estimated
    assert result.rounds[0].usage.completion_tokens > 0
    assert len(server.requests) == 1  # content was already out: never retried
    assert agent.conversation.history[1]["content"] == result.rounds[0].content


@pytest.mark.anyio
@pytest.mark.parametrize(
    "bad", ["data: {not json", "data: " + "[" * 100_000], ids=["not-json", "deep-nesting"]
)
async def test_undecodable_chunk_is_a_stream_error_then_the_fallback(
    server: FakeOpenAIServer, bad: str
) -> None:
    reply = text_reply("Hello there, friend. And more after that.", pieces=6)
    server.enqueue(dataclasses.replace(reply, events=(*reply.events[:3], Chunk(bad), *reply.events[3:])))
    sink = RecordingSink()
    result = await make_agent(server, sink, fallback="Sorry, try again.").respond("hi")
    assert "not valid JSON" in (result.error or "") and result.fallback_spoken
    assert sink.text.startswith("Hello there, friend.") and sink.spoken[-1].endswith("Sorry, try again.")


STOPPED_BY = ["barge-in", "outer scope"]  # Turn.cancel(), or a scope around the turn (hang-up, deadline)


@pytest.mark.parametrize("stopped_by", STOPPED_BY)
@pytest.mark.anyio
async def test_a_stopped_turn_keeps_only_what_was_heard(server: FakeOpenAIServer, stopped_by: str) -> None:
    text = "First sentence is short. " + "Then a much longer second sentence follows here, " * 4 + "the end."
    server.enqueue(text_reply(text, pieces=40))
    sink = RecordingSink(seconds_per_char=0.01)
    agent = make_agent(server, sink)
    turn = agent.new_turn()
    result_box: list[Any] = []

    async def run() -> None:
        result_box.append(await turn.run("Tell me something long"))

    with anyio.CancelScope() as outer:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            with anyio.fail_after(GATE_TIMEOUT):
                while not sink.spoken:  # noqa: ASYNC110  # the first sentence has played in full
                    await anyio.sleep(0.005)
            turn.cancel() if stopped_by == "barge-in" else outer.cancel()
    if stopped_by == "barge-in":
        result = result_box[0]
        assert result.interrupted
        assert 0 < len(result.heard_text) < len(text)
    else:  # the cancellation went on past the turn, which returned nothing
        assert outer.cancelled_caught and result_box == []
    assistant = agent.conversation.history[-1]
    assert assistant["role"] == "assistant"
    assert assistant["content"].startswith("First sentence is short.")
    assert text.startswith(assistant["content"])
    assert len(assistant["content"]) < len(text)
    assert any(c.kind == "cancel" for c in sink.calls)


@pytest.mark.parametrize("stopped_by", STOPPED_BY)
@pytest.mark.anyio
async def test_a_turn_stopped_during_a_tool_answers_every_call(
    server: FakeOpenAIServer, stopped_by: str
) -> None:
    entered = anyio.Event()

    @tool
    async def slow_search(q: str) -> str:
        """Search slowly."""
        entered.set()
        await anyio.sleep_forever()
        return "never"

    server.enqueue(tool_reply([("slow_search", {"q": "x"})], filler="Searching now."))
    sink = RecordingSink()
    agent = make_agent(server, sink, [slow_search])
    turn = agent.new_turn()
    with anyio.CancelScope() as outer:
        async with anyio.create_task_group() as tg:
            tg.start_soon(turn.run, "search x")
            with anyio.fail_after(GATE_TIMEOUT):
                await entered.wait()
            turn.cancel() if stopped_by == "barge-in" else outer.cancel()
    history = agent.conversation.history
    assert [m["role"] for m in history] == ["user", "assistant", "tool"]
    assert history[2]["content"] == INTERRUPTED_TOOL_RESULT
    assert_valid_conversation(agent)


@pytest.mark.anyio
async def test_every_log_record_carries_session_turn_round_and_request_id(
    server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    @tool
    def explode() -> str:
        """Fails."""
        raise ValueError("boom")

    server.enqueue(
        dataclasses.replace(tool_reply([("explode", {})], filler="Ok."), request_id="req-1"),
        dataclasses.replace(text_reply("Done."), request_id="req-2"),
    )
    agent = make_agent(server, RecordingSink(), [explode])
    with caplog.at_level(logging.DEBUG, logger="voiceagent"):
        await agent.respond("go")
    records = [r for r in caplog.records if r.name.startswith("voiceagent")]
    assert records
    for r in records:
        assert r.session == agent.session_id  # type: ignore[attr-defined]
        assert r.turn == 1  # type: ignore[attr-defined]
    by_round = {(r.round, r.request_id) for r in records if r.round != "-"}  # type: ignore[attr-defined]
    # Each round's records carry that round's request id once it is known ("-" before the response).
    assert {rid for rnd, rid in by_round if rid != "-"} == {"req-1", "req-2"}
    assert {(rnd, rid) for rnd, rid in by_round if rid != "-"} == {(1, "req-1"), (2, "req-2")}, by_round


@pytest.mark.anyio
async def test_malformed_chunk_is_skipped_and_counted(server: FakeOpenAIServer) -> None:
    reply = text_reply("Hello there, friend.", pieces=3)
    server.enqueue(
        dataclasses.replace(reply, events=(reply.events[0], Chunk("data: [1, 2]"), *reply.events[1:]))
    )
    sink = RecordingSink()
    result = await make_agent(server, sink).respond("hi")
    assert sink.text == "Hello there, friend."
    assert result.rounds[0].malformed_chunks == 1


@pytest.mark.anyio
async def test_tts_sink_failing_mid_utterance_ends_the_turn_keeps_what_was_heard_and_speaks_fallback(
    server: FakeOpenAIServer,
) -> None:
    text = "First part is here. Second sentence is longer than that. Third one ends it all."
    server.enqueue(text_reply(text, pieces=20))
    # The second chunk breaks after 6 characters played; the sink works again for the fallback.
    sink = FlakySink(fail_at=2, played_before_failure=6)
    agent = make_agent(server, sink, fallback="Sorry, the line broke up.")
    result = await agent.respond("Talk")
    assert not result.interrupted
    assert result.error is not None and "TTS sink failed" in result.error
    assert "ConnectionResetError" in result.error
    assert result.fallback_spoken
    assert sink.spoken == ["First part is here. ", "Sorry, the line broke up."]
    assert result.heard_text == "First part is here. Second" + "Sorry, the line broke up."
    assert agent.conversation.history[-1] == {"role": "assistant", "content": "First part is here. Second"}
    assert_valid_conversation(agent)


@pytest.mark.anyio
async def test_tts_sink_broken_for_good_during_a_tool_ends_the_turn_with_every_call_answered(
    server: FakeOpenAIServer,
) -> None:
    entered = anyio.Event()

    @tool
    async def slow_search(q: str) -> str:
        """Search slowly."""
        entered.set()
        await anyio.sleep_forever()
        return "never"

    server.enqueue(tool_reply([("slow_search", {"q": "x"})], filler="Searching now."))
    sink = FlakySink(fail_at=1, failures=-1, gate=entered)
    agent = make_agent(server, sink, [slow_search])
    with anyio.fail_after(GATE_TIMEOUT):
        result = await agent.respond("search x")
    assert result.error is not None and "TTS sink failed" in result.error
    assert not result.fallback_spoken and not result.interrupted
    assert sink.spoken == []
    assert [c.kind for c in sink.calls].count("speak_failed") == 2  # the filler, then the fallback
    history = agent.conversation.history
    assert [m["role"] for m in history] == ["user", "assistant", "tool"]
    assert history[1]["content"] is None  # "Searching now." was never heard
    assert history[2]["content"] == INTERRUPTED_TOOL_RESULT
    assert_valid_conversation(agent)


@pytest.mark.anyio
async def test_barge_in_drops_streamed_words_that_were_never_spoken(server: FakeOpenAIServer) -> None:
    """Every queued chunk played in full, but the round had streamed more the chunker still held."""
    hold = anyio.Event()
    reply = text_reply("It's 16 degrees in Tokyo. The evening should stay clear", pieces=12)
    # Everything up to "The evening should" arrives; the rest is held back until the test ends.
    server.enqueue(gate_last(reply, hold, count=len(reply.events) - 9))
    sink = RecordingSink()
    agent = make_agent(server, sink)
    turn = agent.new_turn()
    async with anyio.create_task_group() as tg:
        tg.start_soon(turn.run, "Weather in Tokyo?")
        with anyio.fail_after(GATE_TIMEOUT):
            while sink.text != "It's 16 degrees in Tokyo. ":  # noqa: ASYNC110 (the sink has no event per chunk)
                await anyio.sleep(0.01)
            await server.wait_for_requests(1)
        turn.cancel()
        hold.set()
    assistant = agent.conversation.history[-1]
    assert assistant == {"role": "assistant", "content": "It's 16 degrees in Tokyo."}


@pytest.mark.anyio
async def test_tool_calls_past_the_per_round_cap_get_an_error_and_never_run(server: FakeOpenAIServer) -> None:
    ran: list[int] = []

    @tool
    def count(n: int) -> str:
        """Count."""
        ran.append(n)
        return "ok"

    server.enqueue(tool_reply([("count", {"n": n}) for n in range(6)], arg_pieces=1), text_reply("Done."))
    sink = RecordingSink()
    agent = make_agent(server, sink, [count], max_tool_calls_per_round=4)
    result = await agent.respond("count")
    assert sorted(ran) == [0, 1, 2, 3]
    errors = [c for c in result.tool_calls if c.is_error]
    assert [json.loads(c.arguments)["n"] for c in errors] == [4, 5]
    assert all("too many tool calls" in c.result for c in errors)
    sent = server.requests[1].body["messages"]
    assert [m["content"] for m in sent if m["role"] == "tool"][4:] == [c.result for c in errors]
    assert_valid_conversation(agent)


@pytest.mark.anyio
async def test_hostile_nesting_in_tool_arguments_is_a_tool_error_not_a_crash(
    server: FakeOpenAIServer,
) -> None:
    @tool
    def f(a: int) -> str:
        """F."""
        return "ok"

    deep = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"  # RecursionError inside json.loads
    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": deep}}
    server.enqueue(
        Reply(
            events=(
                Chunk({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}),
                Chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            )
        ),
        text_reply("Done."),
    )
    sink = RecordingSink()
    agent = make_agent(server, sink, [f])
    result = await agent.respond("go")
    assert [c.is_error for c in result.tool_calls] == [True]
    assert "not valid JSON" in result.tool_calls[0].result and sink.text.endswith("Done.")
    assert_valid_conversation(agent)
