"""The scale section's server: ``FakeOpenAIServer``'s plain streamed replies from an asyncio ``Protocol``.

The bench server stands in for an LLM server that in production runs on other machines, yet here it
shares the client's two cores; its CPU per token is load the client would not have. ``FakeOpenAIServer``
(anyio streams, a task and a disconnect watcher per connection, a ``sleep_until`` per token) cost 1.6–1.8
ms CPU per session-second at 30 tokens/s, as much as the client it serves. This one sends the same bytes
(the same ``reply_for`` replies, the same ``json.dumps``, chunked framing, ``Connection: close``) from
timer callbacks, and ``loop.create_server`` accepts every pending connection on each wake-up (anyio's
``Listener.serve`` takes one per ~3 passes of the loop). Only what section 4 streams: 200 replies of
plain ``Chunk`` dicts with delays; anything else (gates, drops, raw bytes, error statuses) is answered
with a 500 naming the scenario, so a misuse is loud.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

from voiceagent.testing.openai_server import Chunk, Reply

_MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class LeanRequest:
    body: dict[str, Any]
    received_at: float  # time.perf_counter() once the body was read


class LeanServer:
    """``async with LeanServer(responder) as server:`` serves on 127.0.0.1:``server.port``; keeps
    ``requests`` and ``send_started_log`` ((request index, chunk index, perf_counter before the write))
    as ``FakeOpenAIServer`` does."""

    def __init__(self, responder: Any) -> None:
        self.responder = responder
        self.requests: list[LeanRequest] = []
        self.send_started_log: list[tuple[int, int, float]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> LeanServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self, loop), "127.0.0.1", 0, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


class _Connection(asyncio.Protocol):
    def __init__(self, server: LeanServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop
        self.buf = b""
        self.need = -1  # body bytes still expected once the head is in
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.index = -1
        self.events: list[bytes] = []
        self.delays: list[float] = []
        self.next = 0
        self.due = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.index >= 0:
            return  # nothing more is expected on this connection
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _MAX_HEAD:
                    self._close()
                return
            length = 0
            for line in self.buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            self.buf, self.need = self.buf[end + 4 :], length
        if len(self.buf) >= self.need:
            self._respond(json.loads(self.buf[: self.need] or b"{}"))

    def _respond(self, body: dict[str, Any]) -> None:
        assert self.transport is not None
        self.index = len(self.server.requests)
        self.server.requests.append(LeanRequest(body, time.perf_counter()))
        reply: Reply = self.server.responder(body)
        plain = reply.status == 200 and not reply.hangup and reply.done
        plain = plain and all(
            isinstance(e, Chunk) and isinstance(e.data, dict) and not e.gate for e in reply.events
        )
        if not plain:
            text = f"lean server: unsupported reply for {body.get('model')}"
            message = json.dumps({"error": {"message": text}}).encode()
            self.transport.write(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(message), message)
            )
            self._close()
            return
        for event in reply.events:
            chunk = cast(Chunk, event)
            payload = f"data: {json.dumps(chunk.data)}\n\n".encode()
            self.events.append(b"%x\r\n%s\r\n" % (len(payload), payload))
            self.delays.append(chunk.delay)
        done = b"data: [DONE]\n\n"
        self.events.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        self.delays.append(0.0)
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nX-Request-Id: %s\r\nConnection: close\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n\r\n" % str(uuid.uuid4()).encode()
        )
        self.due = self.loop.time()
        self._schedule()

    def _schedule(self) -> None:
        # Each event is due its delay after the previous one was due (FakeOpenAIServer's schedule): timer
        # overshoot does not add up over a stream.
        self.due += self.delays[self.next]
        self.timer = self.loop.call_at(self.due, self._send)

    def _send(self) -> None:
        assert self.transport is not None
        self.timer = None
        if self.transport.is_closing():
            return
        if self.next < len(self.events) - 1:  # the last is [DONE] and the end, not a logged chunk
            self.server.send_started_log.append((self.index, self.next, time.perf_counter()))
        self.transport.write(self.events[self.next])
        self.next += 1
        if self.next < len(self.events):
            self._schedule()
        else:
            self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
