"""A scriptable, real OpenAI-compatible HTTP/1.1 server on 127.0.0.1 for tests.

It speaks the wire format of Electron / OpenAI chat completions: SSE over chunked
transfer encoding, ``data: [DONE]`` at the end, the Electron error envelope and an ``X-Request-Id`` header on
every response. Tests script replies (``enqueue`` or ``responder``) and order events with ``anyio.Event``
gates instead of timing. One request per connection (``Connection: close``) keeps the server simple and lets
it notice a client that goes away mid-stream.
"""

from __future__ import annotations

import inspect
import json
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, overload

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from voiceagent.events import Usage
from voiceagent.logs import get_logger

logger = get_logger(__name__)

CHAT_COMPLETIONS_PATH = "/v1/chat/completions"
_MAX_HEADER_BYTES = 64 * 1024
_NO_REPLY_MESSAGE = "FakeOpenAIServer: no reply queued for this request (enqueue one or set responder)"
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    429: "rate_limit_error",
}


@dataclass(frozen=True)
class Chunk:
    """One SSE event. A dict is sent as ``data: <json>``; a str is sent verbatim (``\\n\\n`` appended if it
    does not end with a newline), for malformed-chunk tests; bytes are sent exactly as given (a provider's
    recorded body, a line cut anywhere, bad UTF-8). ``gate``: wait for it before sending.
    ``delay``: seconds after the previous event was due (the headers, or the end of a gate's wait): events
    keep to that schedule, as tokens from a model do, so timer overshoot does not add up over a stream."""

    data: dict[str, Any] | str | bytes
    delay: float = 0.0
    gate: anyio.Event | None = None


@dataclass(frozen=True)
class Drop:
    """Close the socket abruptly mid-stream: no terminating chunk, no ``[DONE]``."""

    delay: float = 0.0
    gate: anyio.Event | None = None


@dataclass(frozen=True)
class Reply:
    """One scripted response. ``status != 200`` sends ``body`` (an Electron error envelope) as JSON.
    ``hangup``: read the request, then close the connection without sending a byte (no status line).
    ``done``: end the stream with ``data: [DONE]`` (False: the events are the whole body, as some servers
    send it).
    """

    events: Sequence[Chunk | Drop] = ()
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    body: dict[str, Any] | None = None
    request_id: str | None = None
    hangup: bool = False
    done: bool = True


@dataclass(frozen=True)
class RecordedRequest:
    body: dict[str, Any]
    headers: dict[str, str]
    received_at: float  # time.perf_counter()


Responder = Callable[[dict[str, Any]], "Reply | Awaitable[Reply]"]


# ---- reply builders ----------------------------------------------------------------------------


def _error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "server_error")


def error_envelope(message: str, type: str, request_id: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": type}
    if request_id is not None:
        error["request_id"] = request_id
    return {"error": error}


def error_reply(
    status: int, message: str, type: str | None = None, *, headers: Mapping[str, str] | None = None
) -> Reply:
    """An error response; ``type`` defaults to the Electron type for the status."""
    return Reply(
        status=status,
        body=error_envelope(message, type or _error_type(status)),
        headers=dict(headers or {}),
    )


class _ChunkFactory:
    """Builds ChatCompletionChunk dicts sharing one id/created/model, as a real stream does."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model

    def chunk(
        self, delta: dict[str, Any] | None, finish_reason: str | None = None, *, omit_delta: bool = False
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0}
        if not omit_delta:
            choice["delta"] = delta or {}
        choice["finish_reason"] = finish_reason
        return self._wrap([choice], None)

    def usage(self, usage: Usage) -> dict[str, Any]:
        return self._wrap(
            [],
            {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
                "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
            },
        )

    def _wrap(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage,
        }


def _as_usage(usage: tuple[int, int, int] | Usage) -> Usage:
    return usage if isinstance(usage, Usage) else Usage(*usage)


def split_text(text: str, pieces: int | None) -> list[str]:
    """Word pieces (each word keeps its trailing space) or ``pieces`` nearly equal slices."""
    if not text:
        return []
    if pieces is None:
        words: list[str] = []
        current = ""
        for char in text:
            if char == " " and current.strip():
                words.append(current + " ")
                current = ""
            else:
                current += char
        if current:
            words.append(current)
        return words
    if pieces < 1:
        raise ValueError(f"pieces must be at least 1, got {pieces}")
    pieces = min(pieces, len(text))
    size, extra = divmod(len(text), pieces)
    out, start = [], 0
    for i in range(pieces):
        end = start + size + (1 if i < extra else 0)
        out.append(text[start:end])
        start = end
    return out


def text_reply(
    text: str,
    *,
    pieces: int | None = None,
    chunk_delay: float = 0.0,
    usage: tuple[int, int, int] | Usage = (10, 5, 0),
    finish_reason: str = "stop",
    model: str = "electron",
) -> Reply:
    """Content deltas (the first carries ``role``), the finish chunk, then the include_usage chunk."""
    factory = _ChunkFactory(model)
    chunks: list[dict[str, Any]] = []
    for i, piece in enumerate(split_text(text, pieces) or [""]):
        delta: dict[str, Any] = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
        chunks.append(factory.chunk(delta))
    chunks.append(factory.chunk({}, finish_reason))
    chunks.append(factory.usage(_as_usage(usage)))
    return Reply(events=tuple(Chunk(c, delay=chunk_delay) for c in chunks))


def tool_reply(
    calls: Sequence[tuple[str, dict[str, Any]]],
    *,
    filler: str | None = None,
    arg_pieces: int = 3,
    chunk_delay: float = 0.0,
    usage: tuple[int, int, int] | Usage = (10, 5, 0),
    omit_delta_on_finish: bool = True,
    model: str = "electron",
) -> Reply:
    """Filler content first (Electron's order), then each call's fragments, the finish chunk, usage."""
    factory = _ChunkFactory(model)
    chunks: list[dict[str, Any]] = []
    role_sent = False

    def delta(body: dict[str, Any]) -> dict[str, Any]:
        nonlocal role_sent
        if not role_sent:
            role_sent = True
            return {"role": "assistant", **body}
        return body

    for piece in split_text(filler or "", None):
        chunks.append(factory.chunk(delta({"content": piece})))
    for index, (name, arguments) in enumerate(calls):
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        function = {"name": name, "arguments": ""}
        first = {"index": index, "id": call_id, "type": "function", "function": function}
        chunks.append(factory.chunk(delta({"tool_calls": [first]})))
        for fragment in split_text(json.dumps(arguments), arg_pieces):
            fragment_delta = {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
            chunks.append(factory.chunk(delta(fragment_delta)))
    chunks.append(factory.chunk({}, "tool_calls", omit_delta=omit_delta_on_finish))
    chunks.append(factory.usage(_as_usage(usage)))
    return Reply(events=tuple(Chunk(c, delay=chunk_delay) for c in chunks))


# ---- hostile shapes: streams that never end ------------------------------------------------------


class EndlessEvents(Sequence[Chunk]):
    """Reply events that never run out (the server iterates them lazily): event ``i`` is ``make(i)``."""

    def __init__(self, make: Callable[[int], Chunk]) -> None:
        self._make = make

    def __len__(self) -> int:
        return sys.maxsize

    @overload
    def __getitem__(self, index: int) -> Chunk: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Chunk]: ...
    def __getitem__(self, index: int | slice) -> Chunk | Sequence[Chunk]:
        if isinstance(index, slice):
            raise TypeError("endless events cannot be sliced")
        return self._make(index)


def drip_reply(every: float, *, after: Sequence[Chunk] = ()) -> Reply:
    """A slow-drip attack: ``after``'s events, then one byte (a blank SSE line) every ``every`` seconds,
    forever. Each byte resets an HTTP read timeout, so only a deadline of the reader's own ends it."""
    head = list(after)

    def make(i: int) -> Chunk:
        return head[i] if i < len(head) else Chunk("\n", delay=every)

    return Reply(events=EndlessEvents(make))


def endless_text_reply(piece: str = "blah ", *, model: str = "electron") -> Reply:
    """An answer that never finishes: ``piece`` as a content delta, again and again, as fast as it is read."""
    factory = _ChunkFactory(model)
    return Reply(events=EndlessEvents(lambda i: Chunk(factory.chunk({"content": piece}))))


# ---- the server --------------------------------------------------------------------------------


class _BadRequest(Exception):
    pass


@dataclass
class _ResponseState:
    ended: bool = False  # every byte is out, or the socket was dropped on purpose
    disconnected: bool = False
    finished: bool = False  # counted out of in_flight


class FakeOpenAIServer:
    """``async with FakeOpenAIServer() as server:`` serves on ``server.base_url`` until the block exits."""

    def __init__(self, *, concurrency_limit: int | None = None) -> None:
        self.concurrency_limit = concurrency_limit
        self.responder: Responder | None = None
        self.requests: list[RecordedRequest] = []
        self.chunk_log: list[tuple[int, int, float]] = []
        # The same chunks stamped just before the write: a sender descheduled after writing (the woken
        # reader often takes the CPU) would stamp chunk_log late; this stamp never falls after arrival.
        self.send_started_log: list[tuple[int, int, float]] = []
        # Indices of requests whose client went away before the response was complete.
        self.disconnects: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self._queue: deque[Reply] = deque()
        self._disconnect_events: dict[int, anyio.Event] = {}
        self._request_events: list[tuple[int, anyio.Event]] = []
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None
        self._task_group: anyio.abc.TaskGroup | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def enqueue(self, *replies: Reply) -> None:
        self._queue.extend(replies)

    @property
    def pending_replies(self) -> int:
        return len(self._queue)

    async def wait_for_requests(self, count: int) -> None:
        """Return once at least ``count`` requests have been received."""
        if len(self.requests) >= count:
            return
        event = anyio.Event()
        self._request_events.append((count, event))
        await event.wait()

    async def wait_for_disconnect(self, request_index: int) -> None:
        """Return once the client of request ``request_index`` has gone away mid-response."""
        if request_index in self.disconnects:
            return
        await self._disconnect_events.setdefault(request_index, anyio.Event()).wait()

    async def __aenter__(self) -> FakeOpenAIServer:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self._listener = listener
        self.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(listener.serve, self._handle_connection)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._task_group is not None and self._listener is not None
        self._task_group.cancel_scope.cancel()
        try:
            return await self._task_group.__aexit__(exc_type, exc, tb)
        finally:
            await self._listener.aclose()

    # ---- one connection, one request ----

    async def _handle_connection(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                await self._serve_one(stream)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
                pass

    async def _serve_one(self, stream: anyio.abc.SocketStream) -> None:
        reader = BufferedByteReceiveStream(stream)
        try:
            head = await reader.receive_until(b"\r\n\r\n", _MAX_HEADER_BYTES)
        except (anyio.IncompleteRead, anyio.DelimiterNotFound):
            return
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        raw_body = await reader.receive_exactly(length) if length else b""
        if len(parts) != 3:
            await self._send_error(stream, 400, "Malformed request line")
            return
        method, path = parts[0], parts[1].split("?", 1)[0]
        if path != CHAT_COMPLETIONS_PATH:
            await self._send_error(stream, 404, f"No route {path}")
            return
        if method != "POST":
            await self._send_error(stream, 405, f"Use POST, not {method}")
            return
        try:
            body = json.loads(raw_body)
            if not isinstance(body, dict):
                raise _BadRequest("request body must be a JSON object")
        except (ValueError, _BadRequest) as exc:
            await self._send_error(stream, 400, f"Invalid JSON body: {exc}")
            return

        index = len(self.requests)
        self.requests.append(RecordedRequest(body=body, headers=headers, received_at=time.perf_counter()))
        for wanted, event in list(self._request_events):
            if len(self.requests) >= wanted:
                event.set()
                self._request_events.remove((wanted, event))

        if self.concurrency_limit is not None and self.in_flight >= self.concurrency_limit:
            await self._send_error(stream, 429, "Concurrency limit reached")
            return
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        state = _ResponseState()
        try:
            reply = await self._next_reply(body)
            await self._send_reply(stream, index, reply, state)
        finally:
            self._finish(state)

    def _finish(self, state: _ResponseState) -> None:
        # Called as soon as the last byte is written (not after cleanup), so a client that read the whole
        # response and starts its next request never finds this one still counted.
        if not state.finished:
            state.finished = True
            self.in_flight -= 1

    async def _next_reply(self, body: dict[str, Any]) -> Reply:
        if self._queue:
            return self._queue.popleft()
        if self.responder is not None:
            result = self.responder(body)
            if inspect.isawaitable(result):
                result = await result
            return result
        return error_reply(500, _NO_REPLY_MESSAGE)

    async def _send_reply(
        self, stream: anyio.abc.SocketStream, index: int, reply: Reply, state: _ResponseState
    ) -> None:
        request_id = reply.request_id or str(uuid.uuid4())
        if reply.hangup:
            state.ended = True
            await stream.aclose()
            self._finish(state)
            return
        if reply.status != 200:
            body = reply.body or error_envelope(f"HTTP {reply.status}", _error_type(reply.status))
            await self._send_json(stream, reply.status, body, request_id=request_id, extra=reply.headers)
            self._finish(state)
            return

        head = self._head(
            200,
            {
                "Content-Type": "text/event-stream",
                "Transfer-Encoding": "chunked",
                "Cache-Control": "no-cache",
                **reply.headers,
            },
            request_id,
        )
        await stream.send(head)
        # A close after the last byte (or after a scripted Drop) is no disconnect.
        async with anyio.create_task_group() as tg:

            async def watch_for_disconnect() -> None:
                # The client sends nothing more on this connection: any EOF or error means it went away.
                try:
                    while await stream.receive():
                        pass
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass
                # The sender may have seen the break first (and marked the reply ended): keep its verdict.
                state.disconnected = state.disconnected or not state.ended
                tg.cancel_scope.cancel()

            tg.start_soon(watch_for_disconnect)
            try:
                await self._stream_events(stream, index, reply.events, state, done=reply.done)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                state.disconnected = not state.ended
            state.ended = True
            tg.cancel_scope.cancel()
        if state.disconnected:
            self.disconnects.append(index)
            event = self._disconnect_events.get(index)
            if event is not None:
                event.set()

    async def _stream_events(
        self,
        stream: anyio.abc.SocketStream,
        index: int,
        events: Sequence[Chunk | Drop],
        state: _ResponseState,
        *,
        done: bool = True,
    ) -> None:
        due = anyio.current_time()
        for chunk_index, event in enumerate(events):
            if event.gate is not None:
                await event.gate.wait()
                due = max(due, anyio.current_time())
            if event.delay:
                due += event.delay
                await anyio.sleep_until(due)
            if isinstance(event, Drop):
                state.ended = True
                await stream.aclose()
                self._finish(state)
                return
            if isinstance(event.data, bytes):
                payload = event.data
            elif isinstance(event.data, str):
                text = event.data if event.data.endswith("\n") else event.data + "\n\n"
                payload = text.encode()
            else:
                payload = f"data: {json.dumps(event.data)}\n\n".encode()
            self.send_started_log.append((index, chunk_index, time.perf_counter()))
            if payload:  # an empty chunk would end the chunked body
                await self._send_chunk(stream, payload)
            self.chunk_log.append((index, chunk_index, time.perf_counter()))
        state.ended = True
        if done:
            await self._send_chunk(stream, b"data: [DONE]\n\n")
        await stream.send(b"0\r\n\r\n")
        self._finish(state)

    @staticmethod
    async def _send_chunk(stream: anyio.abc.SocketStream, data: bytes) -> None:
        await stream.send(b"%x\r\n%s\r\n" % (len(data), data))

    @staticmethod
    def _head(status: int, headers: Mapping[str, str], request_id: str) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        merged = {"X-Request-Id": request_id, "Connection": "close", **headers}
        lines += [f"{name}: {value}" for name, value in merged.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send_error(self, stream: anyio.abc.SocketStream, status: int, message: str) -> None:
        await self._send_json(stream, status, error_envelope(message, _error_type(status)))

    async def _send_json(
        self,
        stream: anyio.abc.SocketStream,
        status: int,
        body: dict[str, Any],
        *,
        request_id: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        request_id = request_id or str(uuid.uuid4())
        if isinstance(body.get("error"), dict) and "request_id" not in body["error"]:
            body = {**body, "error": {**body["error"], "request_id": request_id}}
        payload = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(payload)), **(extra or {})}
        await stream.send(self._head(status, headers, request_id) + payload)
