"""voiceagent.h1, LLMClient's own HTTP/1.1 read path: body framing in any split, keep-alive reuse, a stale
idle connection, read timeouts, bad framing, interim responses, header injection.

The framing tests feed the protocol directly, byte splits chosen by hypothesis (TCP gives no control over
where reads split); the rest run LLMClient against raw TCP servers on 127.0.0.1 that write exact bytes.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import shutil
import ssl
import subprocess
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest
from anyio.abc import SocketStream
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import fast_retry
from voiceagent.errors import RateLimitError, StreamInterruptedError
from voiceagent.h1 import BodyError, H1Transport, _Connection
from voiceagent.llm import LLMClient

FAST_RETRY = fast_retry(max_attempts=2, jitter=False)  # a case that keeps failing gives up after two
MESSAGES = [{"role": "user", "content": "Hi"}]
TIMEOUT = 20


def _event(text: str, finish: str | None = None) -> bytes:
    chunk = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


SSE = _event("Hello") + _event(" there", "stop") + b"data: [DONE]\n\n"


def _chunked(body: bytes, pieces: int = 3) -> bytes:
    size = max(1, len(body) // pieces)
    out = b""
    for i in range(0, len(body), size):
        part = body[i : i + size]
        out += f"{len(part):x};ext=1\r\n".encode() + part + b"\r\n"
    return out + b"0\r\nX-Trailer: t\r\n\r\n"


def _head(framing: str, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Request-Id: req-h1\r\n{framing}{extra}\r\n"
    ).encode()


class _Transport:
    """Stands in for the socket under a directly fed protocol (flow control calls only)."""

    def __init__(self) -> None:
        self.closed = False
        self.paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True


def _feed(response: bytes, cuts: list[int], *, lose: bool = False) -> tuple[bytes, BaseException | None]:
    """Feed ``response`` split at ``cuts`` to a connection and read its body back."""

    async def run() -> tuple[bytes, BaseException | None]:
        loop = asyncio.get_running_loop()
        connection = _Connection(loop, timeout=5.0)
        connection.connection_made(_Transport())  # type: ignore[arg-type]
        connection.in_flight = True  # as after the request was written
        bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(response))), len(response)]
        for a, b in itertools.pairwise(bounds):
            connection.data_received(response[a:b])
        if lose:
            connection.connection_lost(None)
        await asyncio.wait_for(connection.head, 5)  # bounded: a parser bug fails, never hangs
        got = b""
        try:
            while data := await asyncio.wait_for(connection.read(), 5):
                got += data
        except BodyError as exc:
            return got, exc
        return got, None

    return asyncio.run(run())


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12), pieces=st.integers(1, 7))
def test_chunked_body_in_any_split(cuts: list[int], pieces: int) -> None:
    body, error = _feed(_head("Transfer-Encoding: chunked\r\n") + _chunked(SSE, pieces), cuts)
    assert (body, error) == (SSE, None)


def _feed_pushed(response: bytes, cuts: list[int], wake_every: int) -> bytes:
    """Feed ``response`` split at ``cuts`` to a connection whose reader waits in push mode, re-arming
    after each wake (``push`` asks for it every ``wake_every`` pieces; 0: never) and reading what was
    buffered meanwhile first, as ``LLMStream.feed_until`` does; the body as the reader saw it."""

    async def run() -> bytes:
        loop = asyncio.get_running_loop()
        connection = _Connection(loop, timeout=5.0)
        connection.connection_made(_Transport())  # type: ignore[arg-type]
        connection.in_flight = True
        got: list[bytes] = []

        def push(data: bytes) -> bool:
            got.append(data)
            return wake_every > 0 and len(got) % wake_every == 0

        waiter: asyncio.Future[None] | None = None
        bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(response))), len(response)]
        for a, b in itertools.pairwise(bounds):
            while waiter is None or waiter.done():
                waiter = connection.arm(push)
                if waiter is None:
                    got.append(await asyncio.wait_for(connection.read(), 5))
            connection.data_received(response[a:b])
        connection.disarm()
        while data := await asyncio.wait_for(connection.read(), 5):
            got.append(data)
        return b"".join(got)

    return asyncio.run(run())


@settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    pieces=st.integers(1, 7),
    wake_every=st.integers(0, 3),
    gzipped=st.booleans(),
)
def test_a_chunked_body_in_push_mode_in_any_split(
    cuts: list[int], pieces: int, wake_every: int, gzipped: bool
) -> None:
    """The one-whole-chunk shortcut and the general path hand over the same bytes, in order, whatever
    the split, however often the reader wakes, and with a compressed body (no shortcut)."""
    framing = "Transfer-Encoding: chunked\r\n" + ("Content-Encoding: gzip\r\n" if gzipped else "")
    body = gzip.compress(SSE) if gzipped else SSE
    assert _feed_pushed(_head(framing) + _chunked(body, pieces), cuts, wake_every) == SSE


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_reads_of_one_whole_chunk_each_reach_the_waiting_reader_decoded(gzipped: bool) -> None:
    """A read per chunk, as tokens arrive at a real pace (the shortcut's case; a compressed body must
    not take it): the reader in push mode gets the decoded body."""
    events = [_event("Hello"), _event(" there", "stop"), b"data: [DONE]\n\n"]
    framing = "Transfer-Encoding: chunked\r\n" + ("Content-Encoding: gzip\r\n" if gzipped else "")
    if gzipped:
        packer = zlib.compressobj(wbits=31)
        wire = [packer.compress(e) + packer.flush(zlib.Z_SYNC_FLUSH) for e in events]
        wire[-1] += packer.flush()
    else:
        wire = events
    reads = [_head(framing)] + [f"{len(w):x}\r\n".encode() + w + b"\r\n" for w in wire] + [b"0\r\n\r\n"]

    async def run() -> bytes:
        connection = _Connection(asyncio.get_running_loop(), timeout=5.0)
        connection.connection_made(_Transport())  # type: ignore[arg-type]
        connection.in_flight = True
        got: list[bytes] = []
        waiter = connection.arm(lambda data: bool(got.append(data)))
        assert waiter is not None
        for data in reads:
            connection.data_received(data)
        assert connection.complete
        return b"".join(got) + await asyncio.wait_for(connection.read(), 5)

    assert asyncio.run(run()) == b"".join(events)


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_length_close_and_gzip_bodies_in_any_split(cuts: list[int]) -> None:
    assert _feed(_head(f"Content-Length: {len(SSE)}\r\n") + SSE, cuts) == (SSE, None)
    assert _feed(_head("Connection: close\r\n") + SSE, cuts, lose=True) == (SSE, None)
    packed = gzip.compress(SSE)
    framing = f"Content-Length: {len(packed)}\r\nContent-Encoding: gzip\r\n"
    assert _feed(_head(framing) + packed, cuts) == (SSE, None)
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    assert _feed(interim + _head(f"Content-Length: {len(SSE)}\r\n") + SSE, cuts) == (SSE, None)


def test_bytes_no_request_asked_for_close_the_connection() -> None:
    async def run() -> tuple[bool, bool]:
        connection = _Connection(asyncio.get_running_loop(), timeout=5.0)
        transport = _Transport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        connection.data_received(_head(f"Content-Length: {len(SSE)}\r\n") + SSE)  # idle: none in flight
        return transport.closed, connection.head.done()

    assert asyncio.run(run()) == (True, False)


def test_a_body_cut_short_or_badly_framed_is_a_body_error() -> None:
    whole = _head("Transfer-Encoding: chunked\r\n") + _chunked(SSE)
    body, error = _feed(whole[:-30], [], lose=True)
    assert isinstance(error, BodyError) and SSE.startswith(body)
    _, error = _feed(_head("Transfer-Encoding: chunked\r\n") + b"zz\r\nhello\r\n", [])
    assert isinstance(error, BodyError) and "chunk size" in str(error)
    _, error = _feed(_head(f"Content-Length: {len(SSE) + 10}\r\n") + SSE, [], lose=True)
    assert isinstance(error, BodyError)


Handler = Callable[[SocketStream, int], Awaitable[None]]


@asynccontextmanager
async def _raw_server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server calling ``handler(stream, connection_number)``; yields its base URL and a one-item
    list counting connections."""
    count = [0]
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def serve(stream: SocketStream) -> None:
        count[0] += 1
        async with stream:
            try:
                await handler(stream, count[0])
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        try:
            yield f"http://127.0.0.1:{port}/v1", count
        finally:
            tg.cancel_scope.cancel()


async def _read_request(stream: SocketStream, buffer: bytearray) -> dict[str, Any]:
    """One request off the connection (its head and Content-Length body); leftover bytes stay in buffer."""
    while b"\r\n\r\n" not in buffer:
        buffer += await stream.receive()
    end = buffer.index(b"\r\n\r\n")
    head = bytes(buffer[:end]).decode("latin-1")
    del buffer[: end + 4]
    headers = dict(
        (k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:])
    )
    length = int(headers.get("content-length", "0"))
    while len(buffer) < length:
        buffer += await stream.receive()
    body = bytes(buffer[:length])
    del buffer[:length]
    return {"line": head.split("\r\n")[0], "headers": headers, "body": json.loads(body)}


async def _texts(client: LLMClient) -> tuple[str, str | None, str | None]:
    async with client.stream(MESSAGES) as stream:
        text = "".join(
            [c["choices"][0]["delta"].get("content") or "" async for c in stream if c.get("choices")]
        )
    return text, stream.request_id, stream.read_path


@pytest.mark.anyio
async def test_keep_alive_connection_is_reused_and_a_stale_one_replaced() -> None:
    requests: list[dict[str, Any]] = []

    async def handler(stream: SocketStream, number: int) -> None:
        buffer = bytearray()
        for _ in range(2):
            requests.append(await _read_request(stream, buffer))
            await stream.send(_head("Transfer-Encoding: chunked\r\n") + _chunked(SSE))
            if number == 1 and len(requests) == 2:
                return  # closes the connection while it sits idle in the client's pool

    with anyio.fail_after(TIMEOUT):
        async with _raw_server(handler) as (url, connections):
            async with LLMClient(base_url=url, api_key="sk_h1", retry=FAST_RETRY) as client:
                for _ in range(3):
                    assert await _texts(client) == ("Hello there", "req-h1", "h1")
                    await anyio.sleep(0.05)  # the server's close of connection 1 arrives meanwhile
    assert connections[0] == 2  # requests 1 and 2 on one connection; 3 on a new one, without an error
    assert requests[0]["line"] == "POST /v1/chat/completions HTTP/1.1"
    assert requests[0]["headers"]["authorization"] == "Bearer sk_h1"
    assert requests[0]["headers"]["host"] == url.split("/")[2]
    assert requests[0]["body"]["stream"] is True


@pytest.mark.anyio
async def test_a_stall_after_the_first_chunk_times_out_as_an_interrupted_stream() -> None:
    async def handler(stream: SocketStream, number: int) -> None:
        await _read_request(stream, bytearray())
        first = _event("Hello")
        await stream.send(
            _head("Transfer-Encoding: chunked\r\n") + f"{len(first):x}\r\n".encode() + first + b"\r\n"
        )
        await anyio.sleep(TIMEOUT)

    with anyio.fail_after(TIMEOUT):
        async with _raw_server(handler) as (url, connections):
            async with LLMClient(base_url=url, api_key="sk_h1", retry=FAST_RETRY, timeout=0.3) as client:
                with pytest.raises(StreamInterruptedError, match="read timeout"):
                    await _texts(client)
    assert connections[0] == 1  # after a chunk: never retried


@pytest.mark.anyio
async def test_bad_framing_before_the_first_chunk_is_retried() -> None:
    async def handler(stream: SocketStream, number: int) -> None:
        await _read_request(stream, bytearray())
        if number == 1:
            await stream.send(_head("Transfer-Encoding: chunked\r\n") + b"nothex\r\n")
        else:
            await stream.send(_head(f"Content-Length: {len(SSE)}\r\n") + SSE)

    with anyio.fail_after(TIMEOUT):
        async with _raw_server(handler) as (url, connections):
            async with LLMClient(base_url=url, api_key="sk_h1", retry=FAST_RETRY) as client:
                assert await _texts(client) == ("Hello there", "req-h1", "h1")
    assert connections[0] == 2


@pytest.mark.anyio
async def test_chunked_error_status_is_the_typed_error_with_its_request_id() -> None:
    error = json.dumps({"error": {"message": "slow down", "type": "rate_limit"}}).encode()

    async def handler(stream: SocketStream, number: int) -> None:
        await _read_request(stream, bytearray())
        head = (
            b"HTTP/1.1 429 Too Many Requests\r\nX-Request-Id: req-429\r\nContent-Type: application/json\r\n"
        )
        await stream.send(head + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(error, 2))

    with anyio.fail_after(TIMEOUT):
        async with _raw_server(handler) as (url, _):
            async with LLMClient(base_url=url, api_key="sk_h1", retry=FAST_RETRY) as client:
                with pytest.raises(RateLimitError) as caught:
                    await _texts(client)
    assert caught.value.request_id == "req-429" and "slow down" in str(caught.value)


@pytest.mark.anyio
async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    async def handler(stream: SocketStream, number: int) -> None:
        await _read_request(stream, bytearray())

    with anyio.fail_after(TIMEOUT):
        async with _raw_server(handler) as (url, connections):
            async with LLMClient(base_url=url, api_key="sk_h1", retry=FAST_RETRY) as client:
                with pytest.raises(ValueError, match="line break"):
                    async with client.stream(MESSAGES, extra_headers={"X-Evil": "a\r\nX-Injected: 1"}):
                        pass
    assert connections[0] == 0


@pytest.mark.anyio
async def test_a_reused_connection_closed_without_an_answer_is_replaced_once() -> None:
    async def handler(stream: SocketStream, number: int) -> None:
        buffer = bytearray()
        await _read_request(stream, buffer)
        await stream.send(_head(f"Content-Length: {len(SSE)}\r\n") + SSE)
        if number == 1:
            await _read_request(stream, buffer)  # the second request on the kept-alive connection...
            return  # ...is dropped unanswered, as a server's idle timeout racing the request does

    with anyio.fail_after(TIMEOUT):
        async with _raw_server(handler) as (url, connections):
            async with LLMClient(base_url=url, api_key="sk_h1", retry=FAST_RETRY) as client:
                assert await _texts(client) == ("Hello there", "req-h1", "h1")
                async with client.stream(MESSAGES) as second:
                    assert [c async for c in second]
    assert connections[0] == 2 and second.attempts == 1  # replaced inside the attempt, not retried


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_with_a_trusted_certificate_streams_and_an_untrusted_one_is_a_connection_error(
    tmp_path: Path,
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    new_cert = [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(cert),
    ]
    subprocess.run(
        [*new_cert, "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True,
        capture_output=True,
        timeout=60,
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        writer.write(_head("Transfer-Encoding: chunked\r\n") + _chunked(SSE))
        await writer.drain()
        writer.close()

    async def run() -> tuple[bytes, str | None, BaseException | None]:
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        sdk = openai.AsyncOpenAI(base_url=f"https://localhost:{port}/v1", api_key="sk_h1")
        try:
            trusted = H1Transport(sdk, timeout=5, ssl_context=ssl.create_default_context(cafile=str(cert)))
            async with trusted.post({"model": "m", "messages": []}, None) as response:
                body = b"".join([data async for data in response.iter_bytes()])
            untrusted = H1Transport(sdk, timeout=5, ssl_context=ssl.create_default_context())
            error: BaseException | None = None
            try:
                async with untrusted.post({"model": "m", "messages": []}, None):
                    pass
            except openai.APIConnectionError as exc:
                error = exc
            return body, response.request_id, error
        finally:
            server.close()
            await sdk.close()

    body, request_id, error = asyncio.run(asyncio.wait_for(run(), TIMEOUT))
    assert (body, request_id) == (SSE, "req-h1")
    assert error is not None and "CERTIFICATE_VERIFY_FAILED" in str(error)
