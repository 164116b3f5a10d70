"""The fake server speaks real HTTP/SSE: checked here with the real openai SDK's raw streaming response."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import anyio.lowlevel
import openai
import pytest

from voiceagent.testing.openai_server import (
    Chunk,
    Drop,
    FakeOpenAIServer,
    Reply,
    error_reply,
    split_text,
    text_reply,
    tool_reply,
)


def _client(server: FakeOpenAIServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="sk_test", max_retries=0)


async def _lines(server: FakeOpenAIServer, **body: Any) -> tuple[list[str], str | None]:
    client = _client(server)
    create = client.chat.completions.with_streaming_response.create
    async with create(model="electron", messages=[], stream=True, **body) as response:
        return [line async for line in response.iter_lines() if line], response.headers.get("x-request-id")


def _payloads(lines: list[str]) -> list[Any]:
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def test_split_text() -> None:
    assert split_text("Hello there world", None) == ["Hello ", "there ", "world"]
    assert "".join(split_text("abcdefg", 3)) == "abcdefg"
    assert split_text("abcdefg", 3) == ["abc", "de", "fg"]
    assert split_text("", 3) == []


@pytest.mark.anyio
async def test_text_reply_chunk_shapes() -> None:
    async with FakeOpenAIServer() as server:
        server.enqueue(text_reply("Hi there", usage=(12, 3, 8)))
        lines, request_id = await _lines(server)
    chunks = _payloads(lines)
    assert request_id
    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * 4
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hi "}
    assert chunks[1]["choices"][0]["delta"] == {"content": "there"}
    assert chunks[2]["choices"][0]["finish_reason"] == "stop"
    assert [c["usage"] for c in chunks[:3]] == [None, None, None]
    assert chunks[3]["choices"] == []
    assert chunks[3]["usage"]["prompt_tokens_details"] == {"cached_tokens": 8}
    assert chunks[3]["usage"]["total_tokens"] == 15
    assert server.requests[0].body["stream"] is True
    assert server.requests[0].headers["authorization"] == "Bearer sk_test"
    assert [(r, c) for r, c, _ in server.chunk_log] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    # Each chunk is also stamped before its write began, never after the write finished.
    assert [(r, c) for r, c, _ in server.send_started_log] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    for (_, _, began), (_, _, done) in zip(server.send_started_log, server.chunk_log, strict=True):
        assert began <= done


@pytest.mark.anyio
async def test_tool_reply_streams_filler_then_fragments() -> None:
    async with FakeOpenAIServer() as server:
        server.enqueue(tool_reply([("get_weather", {"city": "Paris"}), ("get_time", {})], filler="One sec."))
        lines, _ = await _lines(server)
    chunks = _payloads(lines)
    deltas = [c["choices"][0].get("delta") for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": "One "}
    assert deltas[1] == {"content": "sec."}
    first = deltas[2]["tool_calls"][0]
    assert first["index"] == 0 and first["type"] == "function" and first["id"].startswith("call_")
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    fragments = [d["tool_calls"][0] for d in deltas[3:6]]
    assert all(set(f) == {"index", "function"} for f in fragments)
    assert json.loads("".join(f["function"]["arguments"] for f in fragments)) == {"city": "Paris"}
    assert deltas[6]["tool_calls"][0]["index"] == 1
    finish = chunks[-2]["choices"][0]
    assert finish == {"index": 0, "finish_reason": "tool_calls"}  # no delta key, as Electron's docs show
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5


@pytest.mark.anyio
async def test_error_reply_uses_electron_envelope_with_request_id() -> None:
    async with FakeOpenAIServer() as server:
        server.enqueue(error_reply(400, "n > 1 is not supported"))
        with pytest.raises(openai.BadRequestError) as caught:
            await _lines(server)
    error = caught.value
    assert isinstance(error.body, dict)
    assert error.body["type"] == "invalid_request_error"
    assert error.body["message"] == "n > 1 is not supported"
    assert error.body["request_id"] == error.request_id


@pytest.mark.anyio
async def test_no_reply_queued_is_a_clear_500() -> None:
    async with FakeOpenAIServer() as server:
        with pytest.raises(openai.InternalServerError, match="no reply queued"):
            await _lines(server)


@pytest.mark.anyio
async def test_invalid_json_body_is_400() -> None:
    async with FakeOpenAIServer() as server:
        stream = await anyio.connect_tcp("127.0.0.1", server.port)
        async with stream:
            body = b"{not json"
            head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
            await stream.send(head + body)
            answer = b""
            try:
                while True:
                    answer += await stream.receive()
            except anyio.EndOfStream:
                pass
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"x-request-id: " in head.lower()
    assert json.loads(payload)["error"]["type"] == "invalid_request_error"
    assert server.requests == []


@pytest.mark.anyio
async def test_responder_and_request_id_and_raw_lines() -> None:
    seen: list[dict[str, Any]] = []

    def responder(body: dict[str, Any]) -> Reply:
        seen.append(body)
        return Reply(events=[Chunk(": comment"), Chunk("data: {broken")], request_id="req-fixed")

    async with FakeOpenAIServer() as server:
        server.responder = responder
        lines, request_id = await _lines(server, temperature=0.5)
    assert request_id == "req-fixed"
    assert lines == [": comment", "data: {broken", "data: [DONE]"]
    assert seen[0]["temperature"] == 0.5


@pytest.mark.anyio
async def test_drop_cuts_the_stream_without_done() -> None:
    async with FakeOpenAIServer() as server:
        reply = text_reply("a b c")
        server.enqueue(Reply(events=[*reply.events[:2], Drop()]))
        client = _client(server)
        received: list[str] = []
        create = client.chat.completions.with_streaming_response.create
        # The SDK's HTTP stack reports a chunked body cut short: the cut came before the last chunk.
        with pytest.raises(Exception, match=r"incomplete chunked read") as caught:
            async with create(model="electron", messages=[], stream=True) as response:
                async for line in response.iter_lines():
                    received.append(line)
    assert "data: [DONE]" not in received
    assert sum(1 for line in received if line.startswith("data: ")) == 2
    assert server.disconnects == []  # the server dropped it on purpose: no client disconnect
    assert type(caught.value).__name__ == "RemoteProtocolError"


@pytest.mark.anyio
async def test_gates_order_chunks_and_concurrency_limit_answers_429() -> None:
    gate = anyio.Event()
    async with FakeOpenAIServer(concurrency_limit=1) as server:
        held = text_reply("slow")
        gated = Chunk(held.events[1].data, gate=gate)  # type: ignore[union-attr]
        server.enqueue(Reply(events=[held.events[0], gated, *held.events[2:]]))
        async with anyio.create_task_group() as tg:
            tg.start_soon(_lines, server)
            await server.wait_for_requests(1)
            # The first chunk is out before the gate: the second request now finds the limit reached.
            while not server.chunk_log:
                await anyio.lowlevel.checkpoint()
            with pytest.raises(openai.RateLimitError, match="Concurrency limit reached") as caught:
                await _lines(server)
            assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "rate_limit_error"
            assert server.in_flight == 1
            assert len(server.chunk_log) == 1
            gate.set()
    assert server.max_in_flight == 1
    assert server.in_flight == 0
    assert len(server.chunk_log) == 3


@pytest.mark.anyio
async def test_hangup_closes_the_connection_before_any_header() -> None:
    async with FakeOpenAIServer() as server:
        server.enqueue(Reply(hangup=True))
        stream = await anyio.connect_tcp("127.0.0.1", server.port)
        body = b'{"model": "m", "messages": []}'
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
        request = head + body
        async with stream:
            await stream.send(request)
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await stream.receive()
        assert len(server.requests) == 1 and server.in_flight == 0


@pytest.mark.anyio
async def test_chunk_delays_keep_a_schedule_that_restarts_after_a_gate() -> None:
    delay, slack = 0.02, 0.002
    gate = anyio.Event()
    chunks = [e for e in text_reply("a b c d", chunk_delay=delay).events if isinstance(e, Chunk)]
    chunks[2] = Chunk(chunks[2].data, delay=delay, gate=gate)
    async with FakeOpenAIServer() as server:
        server.enqueue(Reply(events=chunks))
        async with anyio.create_task_group() as tg:
            tg.start_soon(_lines, server)
            while len(server.send_started_log) < 2:
                await anyio.lowlevel.checkpoint()
            await anyio.sleep(3 * delay)  # the gate opens well after chunk 2 was due
            opened = time.perf_counter()
            gate.set()
    sent = [at for _, _, at in server.send_started_log]
    # Chunk k is due k delays after the headers (later, never earlier): measured from the request, not
    # from chunk 0's send, which a late timer wake-up may have pushed towards chunk 1 on a loaded machine.
    assert sent[0] - server.requests[0].received_at >= delay - slack
    assert sent[1] - server.requests[0].received_at >= 2 * delay - slack
    # After the gate, the next chunk still waits its delay (no burst to catch up), and the ones after
    # it keep to the schedule from there.
    assert sent[2] - opened >= delay - slack
    assert sent[3] - opened >= 2 * delay - slack


@pytest.mark.anyio
async def test_bytes_events_are_sent_exactly_and_done_can_be_left_out() -> None:
    body = [b'data: {"a":', b" 1}\r\n\r\n", b"\xff\xfe raw\n\n"]
    async with FakeOpenAIServer() as server:
        server.enqueue(Reply(events=[Chunk(piece) for piece in [*body, b""]], done=False))
        client = _client(server)
        create = client.chat.completions.with_streaming_response.create
        async with create(model="electron", messages=[], stream=True) as response:
            received = b"".join([piece async for piece in response.iter_bytes()])
    assert received == b"".join(body)  # no [DONE], no \n\n added, the empty piece ends nothing early
