"""The per-token fast paths give exactly what the general code gives: the accumulator's content-only
chunk, the JSON decode of a ``data:`` line, h1's one-whole-chunk read. Each is checked against the path
it shortcuts, on the provider corpus and on generated inputs (the timings are in bench/, not here)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voiceagent import h1
from voiceagent.accumulator import DeltaAccumulator
from voiceagent.events import TextDelta
from voiceagent.llm import _decode_json

CORPUS = Path(__file__).parent / "provider_corpus"


def _corpus_chunks() -> list[list[dict[str, Any]]]:
    streams = []
    for path in sorted(CORPUS.glob("*.sse")):
        chunks = []
        for line in path.read_bytes().replace(b"\r\n", b"\n").split(b"\n"):
            if line.startswith(b"data:") and line[5:].strip().startswith(b"{"):
                try:
                    value = json.loads(line[5:])
                except ValueError:
                    continue
                if isinstance(value, dict):
                    chunks.append(value)
        streams.append(chunks)
    return streams


def _events(feed: Any, chunks: list[dict[str, Any]]) -> list[Any]:
    return [event for chunk in chunks for event in feed(chunk)]


def _general_feed(acc: DeltaAccumulator) -> Callable[[dict[str, Any]], list[Any]]:
    """``acc.feed`` without its fast path: the general path the fast one is held to."""

    def feed(chunk: dict[str, Any]) -> list[Any]:
        acc.chunks_seen += 1
        return acc._feed(chunk)

    return feed


def _state(acc: DeltaAccumulator) -> tuple[Any, ...]:
    return (acc.content, acc.reasoning, acc.finish_reason, acc.usage, acc.ready_calls, acc.chunks_seen)


def test_the_accumulators_fast_path_matches_the_general_path_on_the_corpus() -> None:
    streams = _corpus_chunks()
    assert len(streams) > 10
    for chunks in streams:
        fast, general = DeltaAccumulator(), DeltaAccumulator()

        assert _events(fast.feed, chunks) == _events(_general_feed(general), chunks)
        assert fast.end() == general.end() and _state(fast) == _state(general)


_values = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.booleans(), st.just({}), st.just([]))
_deltas = st.dictionaries(
    st.sampled_from(["content", "role", "reasoning", "tool_calls", "x"]), _values, max_size=3
)
_choices = st.lists(
    st.fixed_dictionaries(
        {"delta": st.one_of(_deltas, _values)},
        optional={
            "index": st.sampled_from([0, 1, None]),
            "finish_reason": st.sampled_from([None, "", "stop"]),
        },
    ),
    max_size=2,
)
_chunks = st.fixed_dictionaries(
    {"id": st.just("c1"), "model": st.just("m")},
    optional={
        "choices": st.one_of(_choices, _values),
        "usage": st.sampled_from([None, {"prompt_tokens": 1, "completion_tokens": 2}]),
        "x_groq": st.just({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}),
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_chunks, max_size=6))
def test_the_accumulators_fast_path_matches_the_general_path_on_any_chunks(
    chunks: list[dict[str, Any]],
) -> None:
    fast, general = DeltaAccumulator(), DeltaAccumulator()

    assert _events(fast.feed, chunks) == _events(_general_feed(general), chunks)
    assert _state(fast) == _state(general)


@pytest.mark.parametrize(
    "choices",
    [
        {"delta": {"content": "x"}},  # an object of one key: it unpacks to its key
        {"0": {"delta": {"content": "x"}}},
        "x",  # a one-character string unpacks to itself
        [["delta"]],
        [{"delta": "x"}],
        [{"delta": ["content"]}],
        [{"delta": {"content": ["x"]}}],
        [{"delta": {"content": "x"}}, {"delta": {"content": "y"}}],
        [{"delta": {"content": "x"}, "index": False}],
        [],
        None,
    ],
)
def test_the_fast_paths_shape_test_rejects_what_the_general_path_rejects(choices: Any) -> None:
    """feed_text proves the shape by indexing and unpacking: every near-miss gives what _feed gives."""
    first = {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
    chunks = [first, {"id": "c1", "model": "m", "choices": choices}]
    fast, general = DeltaAccumulator(), DeltaAccumulator()

    assert _events(fast.feed, chunks) == _events(_general_feed(general), chunks)
    assert _state(fast) == _state(general)


@pytest.mark.parametrize(
    "extra",
    [
        {"usage": {"prompt_tokens": 1, "completion_tokens": 2}},
        {"x_groq": {"usage": {"prompt_tokens": 3, "completion_tokens": 4}}},
        {"choices": [{"index": 1, "delta": {"content": "other"}}]},
        {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]},
        {"choices": [{"index": 0, "delta": {"content": "x", "reasoning": "r"}}]},
    ],
)
def test_a_content_chunk_with_anything_more_takes_the_general_path(extra: dict[str, Any]) -> None:
    chunks = [
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": "Hi"}}]},
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": " there"}}], **extra},
    ]
    fast, general = DeltaAccumulator(), DeltaAccumulator()

    assert _events(fast.feed, chunks) == _events(_general_feed(general), chunks)
    assert _state(fast) == _state(general)


def _loads(payload: bytes) -> tuple[str, Any]:
    try:
        return "ok", json.loads(payload)
    except (ValueError, RecursionError) as exc:
        return type(exc).__name__, str(exc)


def _fast(payload: bytes) -> tuple[str, Any]:
    try:
        return "ok", _decode_json(payload)
    except (ValueError, RecursionError) as exc:
        return type(exc).__name__, str(exc)


EDGES = [
    b'{"a": 1}',
    b'{"a": 1} ',
    b' {"a": 1}',
    b'{"a": 1}x',
    b'{"a": NaN, "b": -Infinity}',
    b'{"a": "\\ud800"}',
    '{"é": "ü"}'.encode(),
    '{"a": 1}'.encode("utf-16-le"),
    b'\xef\xbb\xbf{"a": 1}',
    b'{"a": "\xff"}',
    b"{" * 100_000 + b"}" * 100_000,
    b"{",
    b"{}",
]


@pytest.mark.parametrize("payload", EDGES, ids=range(len(EDGES)))
def test_the_json_fast_path_returns_and_raises_what_json_loads_does(payload: bytes) -> None:
    kind, value = _loads(payload)
    fast_kind, fast_value = _fast(payload)
    assert fast_kind == kind
    if kind == "ok":
        assert json.dumps(fast_value) == json.dumps(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=12).map(lambda b: b"{" + b))
def test_the_json_fast_path_matches_json_loads_on_any_bytes(payload: bytes) -> None:
    assert _fast(payload)[0] == _loads(payload)[0]


class _Transport(asyncio.Transport):
    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _body(reads: list[bytes]) -> bytes:
    """The decoded body of a chunked response arriving in ``reads``."""
    loop = asyncio.new_event_loop()
    try:
        conn = h1._Connection(loop, 5.0)
        conn.connection_made(_Transport())
        conn.in_flight = True
        conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for data in reads:
            conn.data_received(data)
        assert conn._error is None, conn._error
        return b"".join(conn._pieces)
    finally:
        loop.close()


@pytest.mark.parametrize(
    "reads",
    [
        [b"5\r\nhello\r\n", b"6\r\n world\r\n", b"0\r\n\r\n"],  # a whole chunk a read: the fast path
        [b"5;ext=1\r\nhello\r\n", b"0\r\n\r\n"],  # an extension: the state machine
        [b" 5 \r\nhello\r\n", b"0\r\n\r\n"],  # padded size
        [b"5\r\nhel", b"lo\r\n", b"5\r\nworld\r\n0\r\n\r\n"],  # split and joined reads
        [b"5\r\nhello\r\n5\r\nworld\r\n", b"0\r\n\r\n"],  # two chunks in one read
    ],
)
def test_h1s_one_chunk_read_decodes_as_the_state_machine_does(reads: list[bytes]) -> None:
    whole = b"".join(reads)
    byte_by_byte = [whole[i : i + 1] for i in range(len(whole))]  # never one whole chunk a read
    assert _body(reads) == _body(byte_by_byte) == _body([whole])


def test_h1s_cached_request_head_follows_the_api_key_and_extra_headers() -> None:
    import openai

    client = openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-first", max_retries=0)
    transport = h1.H1Transport(client, timeout=5.0, ssl_context=None)
    first = transport._head_bytes(12, None)
    assert first == transport._head_bytes(12, None)  # built once, the same bytes
    assert first.startswith(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:9\r\nContent-Length: 12\r\n"
    )
    assert b"Authorization: Bearer sk-first\r\n" in first and first.endswith(b"\r\n\r\n")
    assert b"Content-Length: 345\r\n" in transport._head_bytes(345, None)
    client.api_key = "sk-second"  # a refreshed key is used from the next request on
    assert b"Authorization: Bearer sk-second\r\n" in transport._head_bytes(12, None)
    extra = transport._head_bytes(12, {"X-Trace": "t1"})
    assert b"X-Trace: t1\r\n" in extra and b"X-Trace" not in transport._head_bytes(12, None)


@settings(max_examples=300, deadline=None)
@given(st.lists(_chunks, max_size=6))
def test_feed_text_is_feed_for_the_usual_token_and_touches_nothing_else(chunks: list[dict[str, Any]]) -> None:
    """The turn's callback calls ``feed_text`` first and ``feed`` when it returns None."""
    split, whole = DeltaAccumulator(), DeltaAccumulator()
    for chunk in chunks:
        before = _state(split)
        text = split.feed_text(chunk)
        if text is None:
            assert _state(split) == before
            events = split.feed(chunk)
        else:
            events = [TextDelta(text)]
        assert events == _general_feed(whole)(chunk)  # (feed itself tries feed_text first)
        assert _state(split) == _state(whole)
