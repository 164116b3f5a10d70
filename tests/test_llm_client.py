"""LLMClient against the real loopback FakeOpenAIServer with the real openai SDK."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import fast_retry
from voiceagent.errors import (
    LLMConnectionError,
    LLMStatusError,
    RateLimitError,
    StreamInterruptedError,
    StreamProtocolError,
)
from voiceagent.limiter import ConcurrencyLimiter
from voiceagent.llm import ELECTRON_BASE_URL, LLMClient, LLMStream, ReadPath
from voiceagent.logs import current
from voiceagent.testing.openai_server import (
    Chunk,
    Drop,
    FakeOpenAIServer,
    Reply,
    error_reply,
    text_reply,
    tool_reply,
)

FAST_RETRY = fast_retry(jitter=False)
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


_READ_PATH: list[ReadPath] = ["auto"]


@pytest.fixture(autouse=True, params=["auto", "aiohttp", "sdk"])
def read_path(request: pytest.FixtureRequest) -> Iterator[ReadPath]:
    """Every test runs on every read path: ours (voiceagent.h1, the default), aiohttp's and the SDK's,
    which must agree."""
    _READ_PATH[0] = request.param
    yield request.param
    _READ_PATH[0] = "auto"


def _client(server: FakeOpenAIServer, **kwargs: Any) -> LLMClient:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("read_path", _READ_PATH[0])
    return LLMClient(base_url=server.base_url, api_key="sk_test", **kwargs)


async def _collect(stream: LLMStream) -> list[dict[str, Any]]:
    return [chunk async for chunk in stream]


def _with_gate(reply: Reply, position: int, gate: anyio.Event) -> Reply:
    """The same reply, with the event at ``position`` held until ``gate`` is set."""
    events = list(reply.events)
    held = events[position]
    assert isinstance(held, Chunk)
    events[position] = Chunk(held.data, gate=gate)
    return Reply(events=events)


@pytest.mark.anyio
async def test_request_always_streams_with_usage_and_merges_params() -> None:
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    async with FakeOpenAIServer() as server:
        server.enqueue(text_reply("ok"))
        client = _client(server, default_params={"temperature": 0.2, "max_tokens": 50})
        stream = client.stream(
            MESSAGES, tools=tools, temperature=0.7, stream_options={"include_usage": False}, top_k=5
        )
        async with stream:
            await _collect(stream)
    body = server.requests[0].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "electron"
    assert body["messages"] == MESSAGES
    assert body["tools"] == tools
    assert body["temperature"] == 0.7 and body["max_tokens"] == 50
    assert body["top_k"] == 5  # unknown to the SDK: forwarded through extra_body
    assert stream.request == {**body}
    assert server.requests[0].headers["authorization"] == "Bearer sk_test"


@pytest.mark.anyio
async def test_request_options_are_options_and_the_body_is_sent_as_built() -> None:
    async with FakeOpenAIServer() as server:
        server.enqueue(text_reply("ok"))
        client = _client(server)
        stream = client.stream(
            MESSAGES, extra_headers={"X-Trace": "t-1"}, extra_body={"top_k": 3}, timeout=30.0, seed=7
        )
        async with stream:
            await _collect(stream)
    request = server.requests[0]
    assert request.headers["x-trace"] == "t-1"
    assert request.body == {
        "model": "electron",
        "messages": MESSAGES,
        "seed": 7,
        "top_k": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@pytest.mark.anyio
async def test_chunks_come_back_as_dicts_in_order_with_request_id(caplog: pytest.LogCaptureFixture) -> None:
    reply = text_reply("one two three", usage=(20, 3, 16))
    async with FakeOpenAIServer() as server:
        server.enqueue(Reply(events=reply.events, request_id="req-123"))
        client = _client(server)
        with caplog.at_level(logging.DEBUG, logger="voiceagent.llm"):
            async with client.stream(MESSAGES) as stream:
                assert current().request_id == "req-123"
                chunks = await _collect(stream)
        assert current().request_id == "-"  # restored when the stream closed
    assert chunks == [event.data for event in reply.events]  # type: ignore[union-attr]
    assert [c["choices"][0]["delta"].get("content") for c in chunks[:3]] == ["one ", "two ", "three"]
    assert chunks[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 16
    assert stream.request_id == "req-123"
    assert stream.attempts == 1 and stream.retried_statuses == []
    assert stream.done and stream.malformed_chunks == 0
    assert stream.started_at is not None and stream.headers_at is not None
    assert stream.first_chunk_at is not None
    assert stream.started_at <= stream.headers_at <= stream.first_chunk_at
    records = [r for r in caplog.records if r.name == "voiceagent.llm"]
    assert records and all(getattr(r, "request_id", None) == "req-123" for r in records)


@pytest.mark.anyio
async def test_tool_call_chunks_pass_through_untouched() -> None:
    reply = tool_reply([("get_weather", {"city": "Paris"})], filler="Let me check.")
    async with FakeOpenAIServer() as server:
        server.enqueue(reply)
        async with _client(server).stream(MESSAGES) as stream:
            chunks = await _collect(stream)
    assert chunks == [event.data for event in reply.events]  # type: ignore[union-attr]
    assert chunks[-2]["choices"][0] == {"index": 0, "finish_reason": "tool_calls"}


@pytest.mark.anyio
async def test_502_502_200_succeeds_after_two_retries() -> None:
    async with FakeOpenAIServer() as server:
        server.enqueue(error_reply(502, "upstream"), error_reply(502, "upstream"), text_reply("ok"))
        stream = _client(server).stream(MESSAGES)
        async with stream:
            chunks = await _collect(stream)
    assert stream.attempts == 3
    assert stream.retried_statuses == [502, 502]
    assert len(server.requests) == 3
    assert chunks[0]["choices"][0]["delta"]["content"] == "ok"


@pytest.mark.anyio
async def test_503_five_times_fails_after_exactly_five_attempts() -> None:
    async with FakeOpenAIServer() as server:
        server.enqueue(*[error_reply(503, "overloaded") for _ in range(6)])
        stream = _client(server).stream(MESSAGES)
        with pytest.raises(LLMStatusError) as caught:
            async with stream:
                pytest.fail("the stream must not open")
    assert caught.value.status_code == 503
    assert caught.value.message == "overloaded"
    assert caught.value.request_id
    assert stream.attempts == 5
    assert len(server.requests) == 5
    assert server.pending_replies == 1


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 401, 403, 429, 500, 504])
async def test_statuses_other_than_502_and_503_are_attempted_once(status: int) -> None:
    # Only 502/503 are retried (Electron's guide): a 500 or 504 is not, nor any client error.
    async with FakeOpenAIServer() as server:
        server.enqueue(error_reply(status, "nope"), text_reply("never"))
        stream = _client(server).stream(MESSAGES)
        with pytest.raises(LLMStatusError) as caught:
            async with stream:
                pass
    assert caught.value.status_code == status
    assert isinstance(caught.value, RateLimitError) == (status == 429)
    assert caught.value.request_id
    assert stream.attempts == 1
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_429_concurrency_limit_is_typed() -> None:
    async with FakeOpenAIServer() as server:
        server.enqueue(Reply(status=429, body=None, request_id="req-429"))
        server.enqueue(error_reply(429, "Concurrency limit reached"))
        client = _client(server)
        with pytest.raises(RateLimitError) as rpm:
            async with client.stream(MESSAGES):
                pass
        with pytest.raises(RateLimitError) as concurrency:
            async with client.stream(MESSAGES):
                pass
    assert rpm.value.request_id == "req-429" and not rpm.value.is_concurrency_limit
    assert concurrency.value.is_concurrency_limit
    assert concurrency.value.error_type == "rate_limit_error"
    assert concurrency.value.message == "Concurrency limit reached"


@pytest.mark.anyio
async def test_drop_after_chunks_raises_interrupted_and_is_not_retried() -> None:
    reply = text_reply("one two three")
    async with FakeOpenAIServer() as server:
        server.enqueue(Reply(events=[*reply.events[:2], Drop()], request_id="req-drop"), text_reply("never"))
        received: list[dict[str, Any]] = []
        stream = _client(server).stream(MESSAGES)
        with pytest.raises(StreamInterruptedError) as caught:
            async with stream:
                async for chunk in stream:
                    received.append(chunk)
    assert caught.value.request_id == "req-drop"
    assert len(received) == 2
    assert stream.attempts == 1
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_drop_before_first_chunk_is_retried() -> None:
    async with FakeOpenAIServer() as server:
        server.enqueue(Reply(events=[Chunk(": keepalive"), Drop()]), text_reply("fine", usage=(1, 1, 0)))
        stream = _client(server).stream(MESSAGES)
        async with stream:
            chunks = await _collect(stream)
    assert stream.attempts == 2
    assert len(server.requests) == 2
    assert chunks[0]["choices"][0]["delta"]["content"] == "fine"


@pytest.mark.anyio
async def test_drop_before_first_chunk_on_every_attempt_gives_up() -> None:
    async with FakeOpenAIServer() as server:
        server.enqueue(*[Reply(events=[Drop()]) for _ in range(3)])
        stream = _client(server, retry=fast_retry(max_attempts=3)).stream(MESSAGES)
        with pytest.raises(StreamInterruptedError, match="all 3 attempts"):
            async with stream:
                await _collect(stream)
    assert len(server.requests) == 3


@pytest.mark.anyio
async def test_non_object_and_empty_data_are_skipped_and_counted() -> None:
    reply = text_reply("a b")
    junk = [Chunk("data: [1, 2]"), Chunk("data:"), Chunk("event: ping"), Chunk('data: {"error": null}')]
    events = [reply.events[0], *junk, *reply.events[1:]]
    async with FakeOpenAIServer() as server:
        server.enqueue(Reply(events=events))
        async with _client(server).stream(MESSAGES) as stream:
            chunks = await _collect(stream)
    # {"error": null} is no error (the SDK raises only on a truthy one): it is a chunk like any other.
    assert stream.malformed_chunks == 2
    assert chunks == [reply.events[0].data, {"error": None}, *[e.data for e in reply.events[1:]]]  # type: ignore[union-attr]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "bad",
    [
        b"data: {not json\n\n",
        b"data: " + b"[" * 100_000 + b"]" * 100_000 + b"\n\n",  # RecursionError inside json.loads
        b'data: {"choices": [], "x": "\xff\xfe"}\n\n',  # not UTF-8
    ],
    ids=["not-json", "deep-nesting", "bad-utf8"],
)
async def test_undecodable_event_is_a_stream_protocol_error(bad: bytes) -> None:
    reply = text_reply("a b")
    async with FakeOpenAIServer() as server:
        server.enqueue(Reply(events=[reply.events[0], Chunk(bad), *reply.events[1:]]))
        with pytest.raises(StreamProtocolError, match="not valid JSON") as caught:
            async with _client(server).stream(MESSAGES) as stream:
                await _collect(stream)
    assert caught.value.request_id is not None
    assert stream.chunks_yielded == 1  # the chunk before it was delivered


@pytest.mark.anyio
async def test_line_over_max_line_bytes_is_a_stream_error_without_buffering_it_all() -> None:
    reply = text_reply("a b")
    # 64 KiB pieces of one never-ending line: the client stops at the cap, not at the end of 16 MiB.
    huge = [Chunk(b"data: " + b"x" * 65536) for _ in range(256)]
    async with FakeOpenAIServer() as server:
        server.enqueue(Reply(events=[reply.events[0], *huge]))
        with anyio.fail_after(30):
            with pytest.raises(StreamProtocolError, match="over 100000 bytes"):
                async with _client(server, max_line_bytes=100_000).stream(MESSAGES) as stream:
                    await _collect(stream)
        # The client stopped reading at the cap and closed: the server could only fill socket buffers.
        assert len(server.chunk_log) < len(huge)


@pytest.mark.anyio
async def test_many_data_lines_of_one_event_are_capped_together() -> None:
    lines = b"".join(b"data: " + b"1" * 1000 + b"\n" for _ in range(200))
    async with FakeOpenAIServer() as server:
        server.enqueue(Reply(events=[Chunk(lines)]))
        with pytest.raises(StreamProtocolError, match="event's data of over 100000"):
            async with _client(server, max_line_bytes=100_000).stream(MESSAGES) as stream:
                await _collect(stream)


def test_max_line_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_line_bytes"):
        LLMClient(base_url="http://127.0.0.1:9/v1", api_key="sk_test", max_line_bytes=0)


@pytest.mark.anyio
async def test_multi_line_data_fields_are_joined_and_any_line_ending_works() -> None:
    first = b'data: {"id": "c1", "choices": [{"index": 0,\ndata:  "delta": {"content": "Hi"}}]}\n\n'
    crlf = b'data: {"choices": [{"index": 0, "delta": {"content": " there"}}]}\r\n\r\n'
    cr = b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\r\r'
    # A \r\n split across two writes is one line end; so is a line cut anywhere.
    split = [crlf[:-3], crlf[-3:-1], crlf[-1:]]
    async with FakeOpenAIServer() as server:
        server.enqueue(Reply(events=[Chunk(first[:20]), Chunk(first[20:]), *map(Chunk, split), Chunk(cr)]))
        async with _client(server).stream(MESSAGES) as stream:
            chunks = await _collect(stream)
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["Hi", " there", None]
    assert stream.done and stream.malformed_chunks == 0


@pytest.mark.anyio
async def test_events_without_blank_lines_between_them_are_read_as_they_come() -> None:
    # Non-conforming servers write "data: {...}\n" with no blank line: each chunk still arrives at once.
    reply = text_reply("one two three")
    gate = anyio.Event()
    lines = [Chunk(f"data: {json.dumps(e.data)}\n".encode()) for e in reply.events]  # type: ignore[union-attr]
    events = [*lines[:-1], Chunk(lines[-1].data, gate=gate), Chunk(b"data: [DONE]\n")]
    async with FakeOpenAIServer() as server:
        server.enqueue(Reply(events=events, done=False))
        with anyio.fail_after(10):
            async with _client(server).stream(MESSAGES) as stream:
                first = [await stream.__anext__() for _ in range(len(lines) - 1)]  # before the gate opens
                gate.set()
                rest = await _collect(stream)
    assert first + rest == [e.data for e in reply.events]  # type: ignore[union-attr]
    assert stream.done


@pytest.mark.anyio
async def test_a_last_event_without_its_blank_line_still_counts(caplog: pytest.LogCaptureFixture) -> None:
    body = b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\ndata: {"choices": []}'
    async with FakeOpenAIServer() as server:
        server.enqueue(Reply(events=[Chunk(body)], done=False))
        async with _client(server).stream(MESSAGES) as stream:
            chunks = await _collect(stream)
    assert chunks == [{"choices": [{"index": 0, "delta": {"content": "Hi"}}]}, {"choices": []}]
    assert "without data: [DONE]" in caplog.text  # logged, not an error


@pytest.mark.anyio
@pytest.mark.parametrize("keep", [1, 2], ids=["cut-before-usage", "cut-after-usage"])
async def test_stream_cut_after_its_finish_is_complete(keep: int) -> None:
    reply = text_reply("Paris is sunny.")  # content chunks, the finish chunk, the usage chunk
    finish_at = len(reply.events) - 2
    async with FakeOpenAIServer() as server:
        server.enqueue(Reply(events=[*reply.events[: finish_at + keep], Drop()]))
        async with _client(server).stream(MESSAGES) as stream:
            chunks = await _collect(stream)
    assert stream.finished and stream.done and len(chunks) == finish_at + keep
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_retry_log_lines_carry_the_failed_attempts_request_id(caplog: pytest.LogCaptureFixture) -> None:
    async with FakeOpenAIServer() as server:
        failed = Reply(status=503, request_id="req-failed-1")
        server.enqueue(failed, Reply(status=502, request_id="req-failed-2"), text_reply("ok"))
        with caplog.at_level(logging.WARNING, logger="voiceagent.llm"):
            async with _client(server).stream(MESSAGES) as stream:
                await _collect(stream)
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert [r.request_id for r in retries] == ["req-failed-1", "req-failed-2"]  # type: ignore[attr-defined]
    assert "req-failed-1" in retries[0].getMessage()
    assert stream.request_id not in ("req-failed-1", "req-failed-2")


@pytest.mark.anyio
async def test_error_event_in_stream_raises() -> None:
    reply = text_reply("a b")
    error = Chunk({"error": {"message": "model overloaded", "type": "server_error"}})
    async with FakeOpenAIServer() as server:
        server.enqueue(Reply(events=[reply.events[0], error, *reply.events[1:]], request_id="req-err"))
        received: list[dict[str, Any]] = []
        with pytest.raises(StreamProtocolError, match="model overloaded") as caught:
            async with _client(server).stream(MESSAGES) as stream:
                async for chunk in stream:
                    received.append(chunk)
    assert caught.value.request_id == "req-err"
    assert len(received) == 1
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_plan_limiter_keeps_four_streams_under_a_server_cap_of_three() -> None:
    limiter = ConcurrencyLimiter.for_plan("standard")
    gates = [anyio.Event() for _ in range(4)]
    order: list[str] = []
    replies = [_with_gate(text_reply(f"stream {i}"), 1, gates[i]) for i in range(4)]

    def responder(body: dict[str, Any]) -> Reply:
        order.append("request")
        return replies[order.count("request") - 1]

    async with FakeOpenAIServer(concurrency_limit=3) as server:
        server.responder = responder
        client = _client(server, limiter=limiter)
        results: list[list[dict[str, Any]]] = []

        async def run() -> None:
            async with client.stream(MESSAGES) as stream:
                results.append(await _collect(stream))
            order.append("finished")

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(run)
            await server.wait_for_requests(3)
            await anyio.wait_all_tasks_blocked()
            assert len(server.requests) == 3
            assert limiter.in_flight == 3 and limiter.waiting == 1
            gates[0].set()  # the first stream may finish; only then may the fourth request go out
            await server.wait_for_requests(4)
            for gate in gates[1:]:
                gate.set()
    assert order[:5] == ["request", "request", "request", "finished", "request"]
    assert server.max_in_flight == 3
    assert len(results) == 4
    assert all(chunks[-1]["usage"] is not None for chunks in results)
    assert limiter.in_flight == 0


@pytest.mark.anyio
async def test_consumer_breaking_early_closes_the_connection() -> None:
    never = anyio.Event()
    limiter = ConcurrencyLimiter(1)
    async with FakeOpenAIServer() as server:
        server.enqueue(_with_gate(text_reply("one two three"), 1, never))
        async with _client(server, limiter=limiter).stream(MESSAGES) as stream:
            async for _chunk in stream:
                break
        assert limiter.in_flight == 0
        with anyio.fail_after(10):  # a hang guard, not a timing assertion
            await server.wait_for_disconnect(0)
    assert server.disconnects == [0]


@pytest.mark.anyio
async def test_cancelled_consumer_closes_the_connection_and_frees_the_slot() -> None:
    never = anyio.Event()
    limiter = ConcurrencyLimiter(1)
    async with FakeOpenAIServer() as server:
        server.enqueue(_with_gate(text_reply("one two three"), 1, never))
        got_first = anyio.Event()

        async def consume() -> None:
            async with _client(server, limiter=limiter).stream(MESSAGES) as stream:
                async for _chunk in stream:
                    got_first.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await got_first.wait()
            tg.cancel_scope.cancel()
        assert limiter.in_flight == 0
        with anyio.fail_after(10):
            await server.wait_for_disconnect(0)


@pytest.mark.anyio
async def test_unreachable_server_raises_connection_error_after_all_attempts() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now
    retry = fast_retry(max_attempts=2)
    client = LLMClient(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk_test", retry=retry)
    stream = client.stream(MESSAGES)
    with pytest.raises(LLMConnectionError, match="after 2 attempts"):
        async with stream:
            pass
    assert stream.attempts == 2


def test_missing_api_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMALLEST_API_KEY", raising=False)
    with pytest.raises(ValueError, match="SMALLEST_API_KEY"):
        LLMClient()
    monkeypatch.setenv("SMALLEST_API_KEY", "sk_env")
    client = LLMClient()
    assert client.base_url == ELECTRON_BASE_URL == "https://api.smallest.ai/waves/v1"
    assert client.openai_client.api_key == "sk_env"
    assert client.openai_client.max_retries == 0


def test_electron_clients_share_one_limiter_per_account() -> None:
    a = LLMClient.electron(api_key="sk_shared_a", base_url="http://127.0.0.1:1/v1")
    b = LLMClient.electron(api_key="sk_shared_a", base_url="http://127.0.0.1:1/v1")
    c = LLMClient.electron(api_key="sk_shared_c", base_url="http://127.0.0.1:1/v1")
    assert isinstance(a.limiter, ConcurrencyLimiter) and a.limiter.limit == 3
    assert a.limiter is b.limiter
    assert c.limiter is not a.limiter
    assert LLMClient.electron("enterprise", api_key="sk_shared_e").limiter.limit == 20  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="already has a limiter of 3"):
        LLMClient.electron("enterprise", api_key="sk_shared_a", base_url="http://127.0.0.1:1/v1")


@pytest.mark.anyio
async def test_backoff_sleep_does_not_hold_a_limiter_slot() -> None:
    limiter = ConcurrencyLimiter(1)
    answer_first = anyio.Event()
    seen: list[str] = []

    async def responder(body: dict[str, Any]) -> Reply:
        who = body["messages"][-1]["content"]
        seen.append(who)
        if len(seen) == 1:
            await answer_first.wait()
            return error_reply(503, "overloaded")
        return text_reply(f"hello {who}")

    async with FakeOpenAIServer() as server:
        server.responder = responder
        client = _client(server, limiter=limiter)

        async def ask(who: str) -> None:
            async with client.stream([{"role": "user", "content": who}]) as stream:
                await _collect(stream)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "A")
            await server.wait_for_requests(1)
            tg.start_soon(ask, "B")
            await anyio.wait_all_tasks_blocked()
            assert limiter.waiting == 1  # B waits for A's slot
            answer_first.set()
    # A's failed attempt freed its slot before the backoff, so B went first and A's retry came after it.
    assert seen == ["A", "B", "A"]


@pytest.mark.anyio
async def test_timeout_before_headers_is_a_connection_error_and_retried() -> None:
    never = anyio.Event()

    async def responder(body: dict[str, Any]) -> Reply:
        await never.wait()
        raise AssertionError("unreachable")

    async with FakeOpenAIServer() as server:
        server.responder = responder
        retry = fast_retry(max_attempts=2)
        async with _client(server, retry=retry, timeout=0.2) as client:
            stream = client.stream(MESSAGES)
            with pytest.raises(LLMConnectionError, match="after 2 attempts"):
                async with stream:
                    pass
        assert stream.attempts == 2
        assert len(server.requests) == 2


def _ssl_context(client: LLMClient) -> object:
    # Read (not patched) from the HTTP client the SDK was given: its connection pool's context.
    return client.openai_client._client._transport._pool._ssl_context  # type: ignore[attr-defined]


def test_clients_share_one_ssl_context_per_process() -> None:
    # Building one per client cost 20-34 ms of CPU (bench/client_setup.py), even for http://.
    plain = LLMClient(base_url="http://127.0.0.1:9/v1", api_key="sk_test")
    tls = LLMClient(base_url="https://api.example.com/v1", api_key="sk_other")
    assert _ssl_context(plain) is _ssl_context(tls)
    assert _ssl_context(plain).verify_mode.name == "CERT_REQUIRED"  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_client_per_call_still_streams_and_closes() -> None:
    async with FakeOpenAIServer() as server:
        server.enqueue(text_reply("one"), text_reply("two"))
        for _ in range(2):
            async with _client(server) as client, client.stream(MESSAGES) as stream:
                assert await _collect(stream)
    assert len(server.requests) == 2


# ---- the SSE reader on any split of a body into reads --------------------------------------------

_text = st.text(max_size=6)  # any code point but surrogates: multi-byte UTF-8 cut anywhere by the reads


@settings(max_examples=150, deadline=None)
@given(
    contents=st.lists(_text, min_size=1, max_size=5),
    data=st.data(),
)
def test_any_split_and_line_ending_of_a_body_gives_the_same_chunks(contents: list[str], data: Any) -> None:
    events = [{"choices": [{"index": 0, "delta": {"content": c}}]} for c in contents]
    lines: list[str] = []
    for event in events:
        if data.draw(st.booleans()):
            lines.append(": comment")
        # indent=1 puts the JSON on several lines: several data fields, joined by \n, make one event.
        dumped = json.dumps(event, indent=1) if data.draw(st.booleans()) else json.dumps(event)
        lines += [f"data: {part}" for part in dumped.split("\n")] + [""]
    lines += ["data: [DONE]", ""]
    ending = data.draw(st.sampled_from(["\n", "\r\n", "\r"]))
    body = "".join(line + ending for line in lines).encode()
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(body) - 1), max_size=12))))
    reads = [body[a:b] for a, b in itertools.pairwise([0, *cuts, len(body)])]

    async def collect() -> list[dict[str, Any]]:
        async def source() -> AsyncIterator[bytes]:
            for piece in reads:
                yield piece

        stream = LLMStream(LLMClient(base_url="http://127.0.0.1:9/v1", api_key="sk_test"), {})
        stream._start_body(source())
        return [chunk async for chunk in stream]

    assert anyio.run(collect) == events


@pytest.mark.anyio
async def test_read_path_choice_and_the_request_both_paths_send(
    read_path: ReadPath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lean path is the default; a caller's own openai client, a per-request timeout or a proxy in the
    environment keep the SDK's. Both send the SDK's headers (auth included) and the same body."""
    async with FakeOpenAIServer() as server:
        for _ in range(5):
            server.enqueue(text_reply("Hi there."))
        async with _client(server) as client:
            async with client.stream(MESSAGES, extra_headers={"X-Trace": "t1"}) as stream:
                assert [c async for c in stream]
            assert stream.read_path == {"auto": "h1"}.get(read_path, read_path)
            async with client.stream(MESSAGES, timeout=5.0) as timed:
                assert [c async for c in timed]
            assert timed.read_path == "sdk"
            monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
            async with client.stream(MESSAGES) as proxied:  # the server is not behind it: NO_PROXY unset
                pass
            assert proxied.read_path == "sdk"
            monkeypatch.delenv("HTTPS_PROXY")
        sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk_own", max_retries=0)
        async with LLMClient(openai_client=sdk, retry=FAST_RETRY) as own:
            async with own.stream(MESSAGES) as owned:
                assert [c async for c in owned]
        assert owned.read_path == "sdk"
    first = server.requests[0]
    assert first.headers["authorization"] == "Bearer sk_test"
    assert first.headers["user-agent"].startswith("AsyncOpenAI/Python")
    assert first.headers["x-trace"] == "t1"
    assert first.body == server.requests[1].body
    assert first.body["stream"] is True and first.body["stream_options"] == {"include_usage": True}
    assert server.requests[-1].headers["authorization"] == "Bearer sk_own"


def test_read_path_is_checked() -> None:
    with pytest.raises(ValueError, match="read_path"):
        LLMClient(base_url="http://127.0.0.1:9/v1", api_key="sk_test", read_path="fast")  # type: ignore[arg-type]
