"""``WebServer``: serves the browser page and its WebSocket on one port, one task per session.

Plain HTTP GETs are answered from websockets' ``process_request`` hook (no web framework): ``/``
returns the page with a fresh signed token, ``/client.js`` and ``/capture-worklet.js`` its scripts.
``/ws?token=...`` upgrades to the session socket: 401 without a token, 403 with a bad or expired one.
Each accepted connection runs in its own task of the server's task group; whatever one session does
(garbage, oversized frames, a crash in the app's handler, a dropped connection) ends only that session.
"""

from __future__ import annotations

import html
import secrets
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
from anyio.abc import TaskGroup
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voiceagent.logs import get_logger, log_context

from .messages import Hello, ProtocolViolationError, parse_browser_message, ready_message
from .session import CloseReason, SessionClosedError, WebSession, describe_close
from .tokens import InvalidTokenError, TokenSigner

log = get_logger(__name__)

SessionHandler = Callable[[WebSession], Awaitable[None]]

PAGE_DIR = Path(__file__).parent  # the page and scripts ship as package data
_SCRIPTS = {"/client.js": "client.js", "/capture-worklet.js": "capture-worklet.js"}
_TOKEN_PLACEHOLDER = "{{TOKEN}}"
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
}


class WebServer:
    """Serve the voice page and hand every authenticated browser session to ``handler``.

    Use as ``async with WebServer(handler) as server:``; ``server.url`` is the page's address.
    ``handler(session)`` runs in its own task; when it returns the session is closed (1000), when it
    raises the session is closed with 1011, and when the browser leaves or breaks the protocol the
    handler is cancelled. ``secret`` signs page tokens (random per process when omitted).
    """

    def __init__(
        self,
        handler: SessionHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        secret: bytes | None = None,
        token_ttl: float = 600.0,
        hello_timeout: float = 10.0,
        max_message_bytes: int = 64 * 1024,
        audio_buffer_frames: int = 500,
        ssl: ssl_module.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
        ws_path: str = "/ws",
    ) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self.tokens = TokenSigner(secret or secrets.token_bytes(32), ttl=token_ttl, clock=clock)
        self._hello_timeout = hello_timeout
        self._max_message_bytes = max_message_bytes
        self._audio_buffer_frames = audio_buffer_frames
        self._ssl = ssl
        self.ws_path = ws_path
        self._page = (PAGE_DIR / "index.html").read_text(encoding="utf-8")
        self._scripts = {
            path: (PAGE_DIR / name).read_text(encoding="utf-8") for path, name in _SCRIPTS.items()
        }
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._server: Server | None = None
        self._session_counter = 0
        self._session_scopes: set[anyio.CancelScope] = set()
        self.active_sessions = 0
        self.rejected_upgrades = 0

    # ---- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> WebServer:
        async with AsyncExitStack() as stack:
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._server = await stack.enter_async_context(
                serve(
                    self._on_connection,
                    self._host,
                    self._port,
                    process_request=self._process_request,
                    max_size=self._max_message_bytes,
                    ssl=self._ssl,
                )
            )
            self._stack = stack.pop_all()
        log.info("web transport listening on %s", self.url)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        # Sessions are cancelled first (each closes its socket with 1001), so shutdown never waits
        # on an app handler or a browser.
        assert self._stack is not None
        for scope in list(self._session_scopes):
            scope.cancel()
        stack, self._stack = self._stack, None
        return await stack.__aexit__(exc_type, exc, tb)

    async def serve_forever(self) -> None:
        await anyio.sleep_forever()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not running")
        sockname: tuple[Any, ...] = next(iter(self._server.sockets)).getsockname()
        return int(sockname[1])

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://{self._host}:{self.port}/"

    def ws_url(self, token: str) -> str:
        scheme = "wss" if self._ssl else "ws"
        return f"{scheme}://{self._host}:{self.port}{self.ws_path}?token={token}"

    # ---- HTTP ------------------------------------------------------------------------------

    def _respond(self, connection: ServerConnection, status: int, body: str, content_type: str) -> Response:
        response = connection.respond(status, body)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = content_type
        for name, value in _SECURITY_HEADERS.items():
            response.headers[name] = value
        return response

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == self.ws_path:
            return self._authorize_upgrade(connection, url.query)
        if url.path in ("/", "/index.html"):
            page = self._page.replace(_TOKEN_PLACEHOLDER, html.escape(self.tokens.issue()))
            return self._respond(connection, 200, page, "text/html; charset=utf-8")
        if url.path in self._scripts:
            return self._respond(connection, 200, self._scripts[url.path], "text/javascript; charset=utf-8")
        return self._respond(connection, 404, "not found\n", "text/plain; charset=utf-8")

    def _authorize_upgrade(self, connection: ServerConnection, query: str) -> Response | None:
        tokens = parse_qs(query).get("token", [])
        if not tokens or not tokens[0]:
            self.rejected_upgrades += 1
            log.warning("upgrade rejected (401): no token, from %s", connection.remote_address)
            return self._respond(connection, 401, "token required\n", "text/plain; charset=utf-8")
        try:
            self.tokens.verify(tokens[0])
        except InvalidTokenError as exc:
            self.rejected_upgrades += 1
            log.warning("upgrade rejected (403): %s, from %s", exc, connection.remote_address)
            return self._respond(connection, 403, f"{exc}\n", "text/plain; charset=utf-8")
        return None

    # ---- sessions --------------------------------------------------------------------------

    async def _on_connection(self, connection: ServerConnection) -> None:
        # websockets closes the socket when this returns, so wait for the session task to finish.
        assert self._tg is not None
        done = anyio.Event()
        self._session_counter += 1
        session_id = f"web-{self._session_counter}-{secrets.token_hex(3)}"
        try:
            self._tg.start_soon(self._run_session, connection, session_id, done, name=session_id)
        except RuntimeError:  # the task group is shutting down
            await connection.close(1001, "server shutting down")
            return
        await done.wait()

    async def _run_session(self, connection: ServerConnection, session_id: str, done: anyio.Event) -> None:
        self.active_sessions += 1
        scope = anyio.CancelScope()
        self._session_scopes.add(scope)
        try:
            with log_context(session=session_id):
                with scope:
                    reason = await self._serve_session(connection, session_id)
                    log_level = log.info if reason.clean else log.warning
                    log_level("session closed: %s", reason.reason)
                if scope.cancelled_caught:
                    log.info("session closed: server shutting down")
        finally:
            self._session_scopes.discard(scope)
            self.active_sessions -= 1
            done.set()

    async def _serve_session(self, connection: ServerConnection, session_id: str) -> CloseReason:
        try:
            with anyio.fail_after(self._hello_timeout):
                hello = await self._receive_hello(connection)
        except TimeoutError:
            return await self._close(connection, CloseReason(1008, "no hello in time", clean=False))
        except ProtocolViolationError as exc:
            return await self._close(connection, CloseReason(1008, str(exc), clean=False))
        except ConnectionClosed as exc:
            return CloseReason(None, f"browser left before hello ({exc})", clean=False)

        session = WebSession(connection, session_id, hello, audio_buffer=self._audio_buffer_frames)
        log.info("session open: %s, %d Hz", connection.remote_address, hello.sample_rate)
        # Stays so only if the server's shutdown cancels the session before anything else ends it.
        reason = CloseReason(1001, "server shutting down")
        try:
            await connection.send(ready_message(session_id, hello.sample_rate))
            async with anyio.create_task_group() as tg:

                async def end_with(outcome: Callable[[], Awaitable[CloseReason]]) -> None:
                    nonlocal reason
                    reason = await outcome()
                    tg.cancel_scope.cancel()

                async def run_handler() -> CloseReason:
                    try:
                        await self._handler(session)
                    except SessionClosedError:
                        await anyio.sleep_forever()  # the browser left: the reader reports why
                    except Exception:
                        log.exception("session handler failed")
                        return CloseReason(1011, "internal error", clean=False)
                    return CloseReason(1000, "handler finished")

                tg.start_soon(end_with, session.read_loop)
                tg.start_soon(end_with, session.watch_connection)
                tg.start_soon(end_with, run_handler)
        except ConnectionClosed as exc:
            reason = describe_close(exc)
        finally:
            session._finish(reason)
            # Shielded: a session cancelled by server shutdown still says goodbye properly.
            with anyio.CancelScope(shield=True):
                await self._close(connection, reason)
        return reason

    async def _receive_hello(self, connection: ServerConnection) -> Hello:
        first = await connection.recv()
        if isinstance(first, bytes):
            raise ProtocolViolationError("the first message must be a JSON hello, not audio")
        message = parse_browser_message(first)
        if not isinstance(message, Hello):
            raise ProtocolViolationError("the first message must be a hello")
        return message

    async def _close(self, connection: ServerConnection, reason: CloseReason) -> CloseReason:
        if reason.code is not None:
            with anyio.move_on_after(5):
                # Close reasons are capped at 123 bytes by the protocol.
                await connection.close(reason.code, reason.reason.encode()[:120].decode(errors="ignore"))
        return reason
