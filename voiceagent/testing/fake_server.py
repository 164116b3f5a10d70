"""The part every vendor fake shares: a real WebSocket server on 127.0.0.1, so a fake writes only its wire.

``FakeWebSocketServer`` listens on a free loopback port (``async with``), checks each upgrade with the
fake's ``_process_upgrade`` (answer a ``Response`` to refuse it; the TTS fakes refuse every upgrade
with ``reject_status`` when it is set),
runs ``_handle`` once per connection (a client's close ends it quietly), counts connections, keeps the
open sockets (``close_all()``), and offers the one-shot ``drop_next`` fault and ``wait_until`` (a test
waits for a recorded state without sleeping). ``query_of``, ``headers_of`` and ``json_response`` are the
upgrade helpers the fakes share.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Sequence
from ssl import SSLContext
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, urlsplit

import anyio
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

__all__ = ["FakeWebSocketServer", "headers_of", "json_response", "query_of"]


def query_of(target: str) -> dict[str, str]:
    """A request target's query, one value per name (the last, as most servers read it)."""
    return {k: v[-1] for k, v in parse_qs(urlsplit(target).query, keep_blank_values=True).items()}


def headers_of(request: Request) -> dict[str, str]:
    """The request's headers, names in lower case."""
    return {k.lower(): v for k, v in request.headers.raw_items()}


def json_response(status: int, payload: Any, reason: str = "Error", **headers: str) -> Response:
    """An HTTP answer to an upgrade with a JSON body (a refusal, or a plain GET on the WebSocket port)."""
    body = json.dumps(payload).encode()
    fields = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers.items()]
    return Response(status, reason, Headers(fields), body)


class FakeWebSocketServer:
    """Subclasses implement ``_handle`` (one connection) and may override ``_process_upgrade`` and
    ``_select_subprotocol``. ``max_message_size``: the largest frame accepted (None: any)."""

    max_message_size: ClassVar[int | None] = None

    def __init__(self, *, ssl: SSLContext | None = None) -> None:
        self.ssl = ssl  # TLS, for clients that insist on wss://
        self.reject_status: int | None = None
        self.connections_opened = 0
        self.connections_closed = 0
        self._drop_next: deque[int] = deque()
        self._sockets: set[ServerConnection] = set()
        self._changed = anyio.Event()
        self._server: Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await serve(
            self._connection,
            "127.0.0.1",
            0,
            process_request=self._process_upgrade,
            select_subprotocol=self._select_subprotocol,
            max_size=self.max_message_size,
            ssl=self.ssl,
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None, "use 'async with' first"
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def base_url(self) -> str:
        """``ws://127.0.0.1:PORT`` (``wss://`` with ``ssl``)."""
        return f"{'ws' if self.ssl is None else 'wss'}://127.0.0.1:{self.port}"

    # ---- the fake's parts -----------------------------------------------------------------------

    def _process_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        return None

    def _select_subprotocol(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    # ---- commands and waiting -------------------------------------------------------------------

    def drop_next(self, after_chunks: int) -> None:
        """Abort the connection (no close frame) after that many chunks of the next request."""
        self._drop_next.append(after_chunks)

    def _take_drop(self) -> int | None:
        return self._drop_next.popleft() if self._drop_next else None

    async def close_all(self) -> int:
        """Close every open connection now (as a service closes idle ones); how many there were."""
        sockets = list(self._sockets)
        for ws in sockets:
            await ws.close()
        return len(sockets)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _connection(self, ws: ServerConnection) -> None:
        self.connections_opened += 1
        self._sockets.add(ws)
        self._notify()
        try:
            await self._handle(ws)
        except ConnectionClosed:
            pass  # the client went away: nothing more to answer
        finally:
            self._sockets.discard(ws)
            self.connections_closed += 1
            self._notify()
