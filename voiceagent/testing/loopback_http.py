"""A minimal real HTTP/1.1 server on 127.0.0.1 for fake vendor endpoints (one request per connection).

Handlers get the parsed request and a ``Responder`` that sends a whole body or streams one with chunked
transfer encoding (SSE, streamed audio). Enough HTTP for httpx/openai clients; not for production.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
from anyio.abc import SocketStream, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from voiceagent.logs import get_logger

__all__ = ["HTTPRequest", "Handler", "LoopbackHTTPServer", "Responder"]

logger = get_logger(__name__)

_MAX_HEADER = 64 * 1024


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    method: str
    target: str
    headers: Mapping[str, str]  # lowercased names
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class Responder:
    stream: SocketStream
    started: bool = False
    chunked: bool = False
    status: int | None = None
    _extra: dict[str, str] = field(default_factory=dict)

    async def _head(self, status: int, headers: Mapping[str, str]) -> None:
        if self.started:
            raise RuntimeError("response already started")
        self.started, self.status = True, status
        reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Status"
        lines = [f"HTTP/1.1 {status} {reason}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        await self.stream.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
        await self._head(status, {**(headers or {}), "Content-Length": str(len(body))})
        if body:
            await self.stream.send(body)

    async def send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        await self.send(status, body, {"Content-Type": "application/json", **(headers or {})})

    async def start(self, status: int, headers: Mapping[str, str] | None = None) -> None:
        """Begin a streamed (chunked) response; then ``write`` pieces and ``end``."""
        self.chunked = True
        await self._head(status, {**(headers or {}), "Transfer-Encoding": "chunked"})

    async def write(self, data: bytes) -> None:
        if data:
            await self.stream.send(b"%x\r\n%s\r\n" % (len(data), data))

    async def end(self) -> None:
        await self.stream.send(b"0\r\n\r\n")

    async def abort(self) -> None:
        """Drop the connection mid-response (a crash, from the client's point of view)."""
        await self.stream.aclose()


Handler = Callable[[HTTPRequest, Responder], Awaitable[None]]


class LoopbackHTTPServer:
    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._tg: TaskGroup | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> LoopbackHTTPServer:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(listener.serve, self._serve_one)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(exc_type, exc, tb)

    async def _serve_one(self, stream: SocketStream) -> None:
        async with stream:
            try:
                request = await _read_request(stream)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, ValueError):
                return
            responder = Responder(stream)
            try:
                await self._handler(request, responder)
                if responder.chunked:
                    await responder.end()
                elif not responder.started:
                    await responder.send(404, b"no handler answered")
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the client went away (a cancelled request): nothing to answer
            except Exception:
                logger.exception("fake HTTP handler failed")
                if not responder.started:
                    await responder.send(500, b"fake server error")


async def _read_request(stream: SocketStream) -> HTTPRequest:
    buffered = BufferedByteReceiveStream(stream)
    head = await buffered.receive_until(b"\r\n\r\n", _MAX_HEADER)
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _version = request_line.split(" ", 2)
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await buffered.receive_exactly(length) if length else b""
    return HTTPRequest(method, target, headers, body)
