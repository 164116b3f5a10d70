"""A websockets server for Twilio Media Streams: one task per call, in one task group."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from types import TracebackType

import anyio
from anyio.abc import TaskGroup
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voiceagent.logs import get_logger, log_context, register_secret

from .errors import TwilioProtocolError
from .messages import MAX_FRAME_BYTES
from .signature import validate_signature
from .stream import TwilioMediaStream, describe_close, read_start

logger = get_logger(__name__)

CallHandler = Callable[[TwilioMediaStream], Awaitable[None]]


class TwilioServer:
    """Accepts Media Stream WebSocket connections on ``path`` and runs ``handler(stream)`` for each call.

    Each call runs in its own task in the server's task group. A call's bad input (garbage or
    oversized frames, unknown events), an abrupt disconnect or a failing handler ends THAT call with a
    logged reason; the other calls carry on. Leaving the ``async with`` cancels the calls still running.

    ``auth_token`` with ``public_url`` (the ``wss://`` URL Twilio was given) turns on
    X-Twilio-Signature checking of the upgrade request (Twilio signs the URL only; PROTOCOLS.md §4
    marks this as unconfirmed, so it is off by default).
    """

    def __init__(
        self,
        handler: CallHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/media",
        max_frame_bytes: int = MAX_FRAME_BYTES,
        handshake_timeout: float = 10.0,
        audio_buffer_frames: int = 500,
        auth_token: str | None = None,
        public_url: str | None = None,
    ) -> None:
        if (auth_token is None) != (public_url is None):
            raise ValueError("auth_token and public_url go together")
        self._handler = handler
        self._host = host
        self._port = port
        self.path = path
        self._max_frame_bytes = max_frame_bytes
        self._handshake_timeout = handshake_timeout
        self._audio_buffer_frames = audio_buffer_frames
        self._auth_token = auth_token
        register_secret(auth_token)  # never in a log line
        self._public_url = public_url
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._server: Server | None = None
        self._ids = itertools.count(1)
        self.active_calls = 0

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server is not running")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def url(self) -> str:
        return f"ws://{self._host}:{self.port}{self.path}"

    async def __aenter__(self) -> TwilioServer:
        async with AsyncExitStack() as stack:
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            # Twilio never sends frames anywhere near this; websockets fails bigger ones with 1009.
            self._server = await serve(
                self._on_connection,
                self._host,
                self._port,
                max_size=self._max_frame_bytes,
                process_request=self._check_request,
            )
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._stack is not None and self._tg is not None and self._server is not None
        # Stop accepting first, then cancel the calls still running (their tasks are ours), then
        # close whatever connections remain. The close happens outside the cancelled task group.
        self._server.close(close_connections=False)
        self._tg.cancel_scope.cancel()
        try:
            return await self._stack.__aexit__(exc_type, exc, tb)
        finally:
            self._server.close()
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        await anyio.sleep_forever()

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] != self.path:
            return connection.respond(404, "Not Found\n")
        if self._auth_token is not None and self._public_url is not None:
            signature = request.headers.get("X-Twilio-Signature", "")
            if not validate_signature(self._auth_token, self._public_url, {}, signature):
                logger.warning("rejected Media Stream upgrade: bad X-Twilio-Signature")
                return connection.respond(403, "Forbidden\n")
        return None

    async def _on_connection(self, ws: ServerConnection) -> None:
        # websockets runs this in its own task; the call itself is owned by our task group.
        assert self._tg is not None
        done = anyio.Event()
        self._tg.start_soon(self._run_call, ws, done)
        await done.wait()

    async def _run_call(self, ws: ServerConnection, done: anyio.Event) -> None:
        connection_id = f"ws-{next(self._ids)}"
        self.active_calls += 1
        try:
            with log_context(session=connection_id):
                await self._serve_call(ws)
        finally:
            self.active_calls -= 1
            done.set()

    async def _serve_call(self, ws: ServerConnection) -> None:
        try:
            with anyio.fail_after(self._handshake_timeout):
                start = await read_start(ws, max_frame_bytes=self._max_frame_bytes)
        except TwilioProtocolError as exc:
            logger.warning("closing connection before start: protocol error: %s", exc.reason)
            await ws.close(1008, exc.reason[:120])
            return
        except ConnectionClosed as exc:
            logger.warning("connection ended before start: %s", describe_close(exc))
            return
        except TimeoutError:
            logger.warning("closing connection: no start within %.1f s", self._handshake_timeout)
            await ws.close(1008, "no start event")
            return
        with log_context(session=start.call_sid):
            logger.info("call %s started (stream %s)", start.call_sid, start.stream_sid)
            failed = False
            async with TwilioMediaStream.open(
                ws,
                start,
                max_frame_bytes=self._max_frame_bytes,
                audio_buffer_frames=self._audio_buffer_frames,
            ) as stream:
                try:
                    await self._handler(stream)
                except Exception:
                    logger.exception("call handler failed; closing the call")
                    failed = True
            await (ws.close(1011, "handler failed") if failed else ws.close())
            logger.info("call %s finished: %s", start.call_sid, stream.close_reason)
