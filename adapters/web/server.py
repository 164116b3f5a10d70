"""``WebServer``: serves the browser page and its WebSocket on one port, one task per session.

Plain HTTP GETs are answered from websockets' ``process_request`` hook (no web framework): ``/``
returns the page with a fresh signed token, ``/token`` another one (for the page's next Start),
``/client.js`` and ``/capture-worklet.js`` its scripts.
``/ws?token=...`` upgrades to the session socket: 401 without a token, 403 with a bad, expired or
used one. Every request must carry an expected ``Host`` (an IP literal, ``localhost`` or one of
``allowed_hosts``: a DNS-rebinding page on some other name never gets a token), and the upgrade an
``Origin`` on the allowlist (default: the page's own origin), so another site's page cannot open a
session in the visitor's browser; the page may be framed only by itself.
Each accepted connection runs in its own task of the server's task group; whatever one session does
(garbage, oversized frames, deep JSON, a crash in the app's handler, a dropped connection, a page
that stops reading) ends only that session.
"""

from __future__ import annotations

import html
import ipaddress
import secrets
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, Iterable
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
from voiceagent.ws_safety import (
    DEFAULT_SEND_TIMEOUT,
    DEFAULT_WRITE_LIMIT,
    close_bounded,
    contained,
    is_cancellation,
)

from .messages import Hello, ProtocolViolationError, parse_browser_message, ready_message
from .session import CloseReason, SessionClosedError, WebSession, describe_close
from .tokens import DEFAULT_TTL, InvalidTokenError, TokenSigner

log = get_logger(__name__)

SessionHandler = Callable[[WebSession], Awaitable[None]]

PAGE_DIR = Path(__file__).parent  # the page and scripts ship as package data
_SCRIPTS = {"/client.js": "client.js", "/capture-worklet.js": "capture-worklet.js"}
_TOKEN_PLACEHOLDER = "{{TOKEN}}"
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'self'",
    "X-Frame-Options": "SAMEORIGIN",  # frame-ancestors for browsers that predate it
}


class WebServer:
    """Serve the voice page and hand every authenticated browser session to ``handler``.

    Use as ``async with WebServer(handler) as server:``; ``server.url`` is the page's address.
    ``handler(session)`` runs in its own task; when it returns the session is closed (1000), when it
    raises the session is closed with 1011, and when the browser leaves or breaks the protocol the
    handler is cancelled. ``secret`` signs page tokens (random per process when omitted); a token
    opens ``ws_path`` once, within ``token_ttl`` seconds of the page load.

    Behind a proxy on a domain, name it: ``allowed_hosts=["bot.example.com"]``; the page's own
    ``http(s)://<host>`` origin is then allowed, and ``allowed_origins`` adds others (exact match).
    Memory per session is bounded: inbound messages over ``max_message_bytes`` close it (1009), the
    outbound buffer holds ``write_limit`` bytes, and a send blocked for ``send_timeout`` seconds
    (a page that stopped reading) drops the connection.
    """

    def __init__(
        self,
        handler: SessionHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        secret: bytes | None = None,
        token_ttl: float = DEFAULT_TTL,
        hello_timeout: float = 10.0,
        max_message_bytes: int = 64 * 1024,
        audio_buffer_frames: int = 500,
        ssl: ssl_module.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
        ws_path: str = "/ws",
        allowed_hosts: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        write_limit: int = DEFAULT_WRITE_LIMIT,
    ) -> None:
        self._handler = handler
        self.allowed_hosts = frozenset(h.lower().rstrip(".") for h in allowed_hosts)
        if not _is_ip_or_localhost(host):
            self.allowed_hosts |= {host.lower()}
        self.allowed_origins = frozenset(o.lower().rstrip("/") for o in allowed_origins)
        self._send_timeout = send_timeout
        self._write_limit = write_limit
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
                    write_limit=self._write_limit,
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

    @property
    def origin(self) -> str:
        """The page's origin, as a browser on ``url`` sends it in ``Origin``."""
        return self.url.rstrip("/")

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
        hosts = request.headers.get_all("Host")
        if len(hosts) != 1 or not self._host_allowed(hosts[0]):
            # DNS rebinding: a page on evil.test that resolves to this machine sends Host: evil.test.
            shown = hosts[0][:80] if len(hosts) == 1 else f"{len(hosts)} Host headers"
            log.warning(
                "request refused (403): unexpected Host %r, from %s", shown, connection.remote_address
            )
            if url.path == self.ws_path:
                self.rejected_upgrades += 1
            return self._respond(connection, 403, "unexpected Host\n", "text/plain; charset=utf-8")
        if url.path == self.ws_path:
            return self._authorize_upgrade(connection, request, hosts[0], url.query)
        if url.path in ("/", "/index.html"):
            page = self._page.replace(_TOKEN_PLACEHOLDER, html.escape(self.tokens.issue(self.ws_path)))
            return self._respond(connection, 200, page, "text/html; charset=utf-8")
        if url.path == "/token":  # a fresh token for the page's next Start (same exposure as the page)
            return self._respond(
                connection, 200, self.tokens.issue(self.ws_path), "text/plain; charset=utf-8"
            )
        if url.path in self._scripts:
            return self._respond(connection, 200, self._scripts[url.path], "text/javascript; charset=utf-8")
        return self._respond(connection, 404, "not found\n", "text/plain; charset=utf-8")

    def _host_allowed(self, host_header: str) -> bool:
        name = _host_name(host_header)
        return name is not None and (_is_ip_or_localhost(name) or name in self.allowed_hosts)

    def _origin_allowed(self, origin: str, host_header: str) -> bool:
        origin = origin.lower().rstrip("/")
        host = host_header.strip().lower()
        # The page's own origin: Host already passed its check, so no other site can be served on it.
        # Browsers leave a default port out of Origin; some clients put it in Host.
        own = {f"http://{host.removesuffix(':80')}", f"https://{host.removesuffix(':443')}"}
        return origin in own or origin in self.allowed_origins

    def _authorize_upgrade(
        self, connection: ServerConnection, request: Request, host: str, query: str
    ) -> Response | None:
        origins = request.headers.get_all("Origin")
        if len(origins) != 1 or not self._origin_allowed(origins[0], host):
            self.rejected_upgrades += 1
            shown = origins[0][:80] if len(origins) == 1 else f"{len(origins)} Origin headers"
            log.warning(
                "upgrade rejected (403): Origin %r not allowed, from %s", shown, connection.remote_address
            )
            return self._respond(connection, 403, "origin not allowed\n", "text/plain; charset=utf-8")
        tokens = parse_qs(query).get("token", [])
        if not tokens or not tokens[0]:
            self.rejected_upgrades += 1
            log.warning("upgrade rejected (401): no token, from %s", connection.remote_address)
            return self._respond(connection, 401, "token required\n", "text/plain; charset=utf-8")
        try:
            self.tokens.redeem(tokens[0], self.ws_path)
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
            await close_bounded(connection, 1001, "server shutting down")
            return
        await done.wait()

    async def _run_session(self, connection: ServerConnection, session_id: str, done: anyio.Event) -> None:
        self.active_sessions += 1
        scope = anyio.CancelScope()
        self._session_scopes.add(scope)
        try:
            with log_context(session=session_id), contained(log, f"session {session_id}"):
                with scope:
                    try:
                        reason = await self._serve_session(connection, session_id)
                    except BaseException as exc:
                        # A bug in this adapter must still end the socket (and only this one).
                        if not is_cancellation(exc):
                            with anyio.CancelScope(shield=True):
                                await close_bounded(connection, 1011, "internal error")
                        raise
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

        session = WebSession(
            connection,
            session_id,
            hello,
            audio_buffer=self._audio_buffer_frames,
            send_timeout=self._send_timeout,
        )
        log.info("session open: %s, %d Hz", connection.remote_address, hello.sample_rate)
        # Stays so only if the server's shutdown cancels the session before anything else ends it.
        reason = CloseReason(1001, "server shutting down")
        try:
            await session._send(ready_message(session_id, hello.sample_rate))
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
                    except BaseException as exc:  # SystemExit from argparse in a handler too
                        if is_cancellation(exc):
                            raise
                        log.error("session handler failed", exc_info=exc)
                        return CloseReason(1011, "internal error", clean=False)
                    return CloseReason(1000, "handler finished")

                tg.start_soon(end_with, session.read_loop)
                tg.start_soon(end_with, session.watch_connection)
                tg.start_soon(end_with, run_handler)
        except (ConnectionClosed, SessionClosedError) as exc:
            reason = (
                describe_close(exc)
                if isinstance(exc, ConnectionClosed)
                else CloseReason(None, str(exc), False)
            )
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
            await close_bounded(connection, reason.code, reason.reason)  # the reason is cut to fit
        return reason


def _host_name(host_header: str) -> str | None:
    """The host part of a Host header, lower-cased: ``[::1]:8080`` -> ``::1``; None if malformed."""
    host = host_header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1 :]
        if end < 0 or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return host[1:end]
    name, _, port = host.partition(":")
    if port and not port.isdigit():
        return None
    return name.rstrip(".") or None


def _is_ip_or_localhost(name: str) -> bool:
    # DNS rebinding needs a name the attacker's DNS answers for; an IP literal or localhost is none.
    if name in ("localhost", "localhost."):
        return True
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True
