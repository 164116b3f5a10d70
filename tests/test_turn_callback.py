"""The turn's per-token work in h1's read callback (``LLMStream.feed_until``, h1's push mode): the same
result as the task-based loop, the task woken only when a chunk needs it, and whatever breaks in the
callback raised in the task as the same typed error, never into the event loop."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import anyio
import pytest

from tests.conftest import fast_retry
from voiceagent.accumulator import DeltaAccumulator
from voiceagent.agent import Agent
from voiceagent.errors import StreamInterruptedError
from voiceagent.events import SpeechQueued
from voiceagent.llm import LLMClient
from voiceagent.testing.openai_server import Chunk, Drop, FakeOpenAIServer, Reply, text_reply
from voiceagent.testing.sinks import RecordingSink
from voiceagent.turn import TurnConfig

GATE_TIMEOUT = 5.0
TEXT = "Sure, it is sunny in Paris today. Anything else?"


def _agent(server: FakeOpenAIServer, sink: RecordingSink, **client: Any) -> Agent:
    client.setdefault("read_callback", True)
    llm = LLMClient(base_url=server.base_url, api_key="sk_test", retry=fast_retry(), **client)
    return Agent(llm=llm, sink=sink, system_prompt="Be brief.", tools=[], config=TurnConfig())


def _gated(reply: Reply, start: int, gate: anyio.Event, extra: tuple[Chunk, ...] = ()) -> Reply:
    """Events from ``start`` on wait for ``gate`` (``extra`` goes in front of them)."""
    events = list(reply.events)
    rest = [dataclasses.replace(e, gate=gate) for e in (*extra, *events[start:])]
    return dataclasses.replace(reply, events=(*events[:start], *rest))


async def _respond_after_first_text(agent: Agent, sink: RecordingSink, gate: anyio.Event) -> Any:
    """The gated events are sent once the first chunk was spoken: by then the turn's task waits for
    the stream (the speaker runs only once it yields), so they arrive in the read callback."""
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
    box: list[Any] = []
    with anyio.fail_after(GATE_TIMEOUT):
        async with anyio.create_task_group() as tg:

            async def respond() -> None:
                box.append(await agent.respond("Weather?"))

            tg.start_soon(respond)
            await sink.first_text.wait()
            gate.set()
    assert errors == []  # nothing escaped into the event loop
    return box[0]


@pytest.mark.anyio
async def test_tokens_that_only_add_words_are_handled_in_the_read_callback(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_callback: list[bool] = []
    feed_text = DeltaAccumulator.feed_text

    def recording(self: DeltaAccumulator, chunk: dict[str, Any]) -> str | None:
        in_callback.append(asyncio.current_task() is None)  # no task: the protocol's callback
        return feed_text(self, chunk)

    monkeypatch.setattr(DeltaAccumulator, "feed_text", recording)
    gate = anyio.Event()
    server.enqueue(_gated(text_reply(TEXT, pieces=12), 3, gate))
    sink = RecordingSink()
    result = await _respond_after_first_text(_agent(server, sink), sink, gate)

    assert sink.text == TEXT and result.spoken_text == TEXT and result.error is None
    assert sink.spoken[0] == "Sure, "
    assert any(in_callback)  # the gated tokens were fed where they were read
    assert result.rounds[0].content == TEXT


@pytest.mark.anyio
async def test_an_undecodable_event_in_the_callback_is_the_same_stream_error(
    server: FakeOpenAIServer,
) -> None:
    gate = anyio.Event()
    server.enqueue(_gated(text_reply(TEXT, pieces=12), 3, gate, extra=(Chunk("data: {not json"),)))
    sink = RecordingSink()
    agent = _agent(server, sink)
    result = await _respond_after_first_text(agent, sink, gate)

    assert "not valid JSON" in (result.error or "") and result.fallback_spoken
    assert sink.text.startswith("Sure, ")


@pytest.mark.anyio
async def test_an_error_event_in_the_callback_is_the_same_stream_error(server: FakeOpenAIServer) -> None:
    gate = anyio.Event()
    error = Chunk({"error": {"message": "model overloaded", "type": "server_error"}})
    server.enqueue(_gated(text_reply(TEXT, pieces=12), 3, gate, extra=(error,)))
    sink = RecordingSink()
    result = await _respond_after_first_text(_agent(server, sink), sink, gate)

    assert "model overloaded" in (result.error or "") and result.fallback_spoken


@pytest.mark.anyio
async def test_a_line_over_max_line_bytes_in_the_callback_is_refused(server: FakeOpenAIServer) -> None:
    gate = anyio.Event()
    long_line = Chunk({"choices": [{"index": 0, "delta": {"content": "x" * 5000}}], "id": "c", "model": "m"})
    server.enqueue(_gated(text_reply(TEXT, pieces=12), 3, gate, extra=(long_line,)))
    sink = RecordingSink()
    result = await _respond_after_first_text(_agent(server, sink, max_line_bytes=4096), sink, gate)

    assert "max_line_bytes" in (result.error or "") and result.fallback_spoken
    assert "x" * 100 not in sink.text


@pytest.mark.anyio
async def test_a_drop_while_the_callback_reads_keeps_what_arrived(server: FakeOpenAIServer) -> None:
    gate = anyio.Event()
    reply = text_reply(TEXT, pieces=12)
    cut = dataclasses.replace(reply, events=(*reply.events[:6], Drop()))
    server.enqueue(_gated(cut, 3, gate))
    sink = RecordingSink()
    result = await _respond_after_first_text(_agent(server, sink), sink, gate)

    assert result.error is not None and "broke after" in result.error
    assert result.rounds[0].content and TEXT.startswith(result.rounds[0].content)


_CONTENT = {
    "id": "c1",
    "model": "m",
    "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}],
}


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["read-callback", "iterate"])
@pytest.mark.parametrize(
    ("last", "finished"),
    [
        ({"choices": [{"index": 0, "finish_reason": "stop"}]}, True),  # Electron's: no delta
        ({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}, True),
        ({"choices": [{"index": 0, "finish_reason": ""}]}, False),
        ({"choices": []}, False),
        ({"choices": {"0": {"finish_reason": "stop"}}}, False),  # not a list: not a finish
        ({"choices": [["finish_reason"]]}, False),
        ({"choices": "stop"}, False),
        ({"choices": None}, False),
    ],
)
async def test_a_cut_after_the_finish_is_decided_alike_in_the_read_callback(
    how: str, last: dict[str, Any], finished: bool
) -> None:
    """Each chunk in a read of its own (the next is sent once the last was taken): the callback's
    inline path decides ``finished`` as ``_take`` does, so a socket cut after it is a complete answer
    (or, without a finish, an interrupted one) either way of reading."""
    gates = [anyio.Event() for _ in range(3)]
    events = [Chunk(_CONTENT), Chunk(_CONTENT, gate=gates[0]), Chunk(last, gate=gates[1])]
    seen: list[dict[str, Any]] = []

    def feed(chunk: dict[str, Any]) -> bool:
        seen.append(chunk)
        gates[len(seen) - 1].set()
        return False

    async def read(stream: Any) -> None:
        if how == "read-callback":
            assert await stream.feed_until(feed) is False
        else:
            async for chunk in stream:
                feed(chunk)

    async with FakeOpenAIServer() as server:
        server.enqueue(Reply(events=(*events, Drop(gate=gates[2])), done=False))
        llm = LLMClient(base_url=server.base_url, api_key="sk_test", retry=fast_retry(), read_callback=True)
        with anyio.fail_after(GATE_TIMEOUT):
            async with llm.stream([{"role": "user", "content": "Hi"}]) as stream:
                if finished:
                    await read(stream)
                else:
                    with pytest.raises(StreamInterruptedError):
                        await read(stream)
        await llm.aclose()
    assert seen == [_CONTENT, _CONTENT, last]
    assert stream.finished is finished and stream.done is finished


async def _respond_gated(
    server: FakeOpenAIServer, read_callback: bool, on_event: Any
) -> tuple[RecordingSink, Any, BaseException | None]:
    """TEXT in 12 pieces, the later ones sent once the first chunk was spoken (so, on the default path,
    they arrive while the turn's task waits: in the read callback). The turn's result or what it raised."""
    gate = anyio.Event()
    server.enqueue(_gated(text_reply(TEXT, pieces=12), 3, gate))
    sink = RecordingSink()
    agent = _agent(server, sink, read_callback=read_callback)
    box: list[Any] = []
    raised: list[BaseException] = []
    with anyio.fail_after(GATE_TIMEOUT):
        async with anyio.create_task_group() as tg:

            async def respond() -> None:
                try:
                    box.append(await agent.respond("Weather?", on_event=on_event))
                except Exception as exc:
                    raised.append(exc)

            tg.start_soon(respond)
            await sink.first_text.wait()
            gate.set()
    return sink, (box[0] if box else None), (raised[0] if raised else None)


@pytest.mark.anyio
async def test_a_chunk_completed_in_the_read_callback_is_queued_there_and_spoken_as_on_the_task_loop(
    server: FakeOpenAIServer,
) -> None:
    queued_in_callback: list[bool] = []

    def on_event(event: Any) -> None:
        if isinstance(event, SpeechQueued):
            queued_in_callback.append(asyncio.current_task() is None)

    sink, result, raised = await _respond_gated(server, True, on_event)
    assert raised is None and result.error is None
    assert any(queued_in_callback)  # chunks completed by the gated tokens: queued in the callback
    task_sink, task_result, _ = await _respond_gated(server, False, None)
    assert sink.spoken == task_sink.spoken and result.spoken_text == task_result.spoken_text == TEXT


@pytest.mark.anyio
async def test_a_listener_failing_in_the_read_callback_fails_the_turn_as_on_the_task_loop(
    server: FakeOpenAIServer,
) -> None:
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
    outcomes = []
    for read_callback in (True, False):
        seen: list[SpeechQueued] = []

        def on_event(event: Any, seen: list[SpeechQueued] = seen) -> None:
            if isinstance(event, SpeechQueued):
                seen.append(event)
                if len(seen) == 2:
                    raise RuntimeError("listener broke")

        sink, result, raised = await _respond_gated(server, read_callback, on_event)
        outcome = (repr(raised), result.error if result is not None else None, sink.spoken)
        outcomes.append(outcome)
    assert outcomes[0] == outcomes[1] and "listener broke" in str(outcomes[0])
    assert errors == []  # nothing escaped into the event loop
