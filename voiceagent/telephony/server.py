"""A websockets server for any provider's media streams: one task per call, in one task group."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from types import TracebackType
from typing import Generic, Self, TypeVar, cast

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

from .auth import UpgradeAuth, UpgradeRequest
from .codec import MediaCodec
from .control import CallControl
from .errors import MediaStreamProtocolError
from .events import StreamStart
from .stream import MAX_FRAME_BYTES, MediaStream, describe_close, read_start

logger = get_logger(__name__)

S = TypeVar("S", bound=MediaStream)
ControlFactory = Callable[[StreamStart], CallControl]


class MediaStreamServer(Generic[S]):
    """Accepts media-stream WebSocket connections on ``path`` and runs ``handler(stream)`` for each call.

    ``codec`` speaks the provider's wire messages; ``auth`` checks each upgrade (403 otherwise, counted
    in ``rejected_upgrades``): without it the server refuses to start unless ``allow_unsigned=True``
    (then anyone who learns the URL can run up your STT, LLM and TTS bills). ``control_factory``
    builds each call's ``CallControl`` (the provider's REST API) from its start event; the stream
    then delegates ``hang_up``/``transfer``/``send_dtmf`` to it.

    Each call runs in its own task in the server's task group. A call's bad input (garbage or
    oversized frames, a close reason that does not fit), an abrupt disconnect, a peer that stops
    reading or a failing handler ends THAT call with a logged reason; the other calls carry on.
    Unknown event types are ignored (providers add events). Leaving the ``async with`` cancels the
    calls still running.

    Memory per call is bounded: inbound frames over ``max_frame_bytes`` close the call (1009), the
    outbound buffer holds ``write_limit`` bytes, and a send blocked for ``send_timeout`` seconds
    drops the connection; a connection without a start within ``handshake_timeout`` is closed.
    """

    def __init__(
        self,
        handler: Callable[[S], Awaitable[None]],
        *,
        codec: MediaCodec,
        auth: UpgradeAuth | None,
        allow_unsigned: bool = False,
        control_factory: ControlFactory | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/media",
        max_frame_bytes: int = MAX_FRAME_BYTES,
        handshake_timeout: float = 10.0,
        audio_buffer_frames: int = 500,
        public_url: str | None = None,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        write_limit: int = DEFAULT_WRITE_LIMIT,
    ) -> None:
        if auth is None and not allow_unsigned:
            raise ValueError(
                f"the {codec.provider} media-stream server needs an UpgradeAuth to check who dials it: "
                "pass auth=. To accept unchecked upgrades (anyone who learns the URL can then place "
                "calls on your bill) pass allow_unsigned=True."
            )
        if public_url is not None and not public_url.startswith(("wss://", "ws://")):
            raise ValueError(f"public_url must be the wss:// URL the provider dials: {public_url!r}")
        self._handler = handler
        self.codec = codec
        self._auth = auth
        self._control_factory = control_factory
        self._host = host
        self._port = port
        self.path = path
        self._max_frame_bytes = max_frame_bytes
        self._handshake_timeout = handshake_timeout
        self._audio_buffer_frames = audio_buffer_frames
        self._public_url = public_url
        self._send_timeout = send_timeout
        self._write_limit = write_limit
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._server: Server | None = None
        self._ids = itertools.count(1)
        self.active_calls = 0
        self.rejected_upgrades = 0
        self._idle = anyio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no call is running (at once when none is): e.g. to let a call's handler finish
        its own clean-up before leaving the ``async with``, which cancels the calls still running."""
        await self._idle.wait()

    @property
    def signed(self) -> bool:
        """Whether upgrades are checked."""
        return self._auth is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server is not running")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def url(self) -> str:
        return f"ws://{self._host}:{self.port}{self.path}"

    def _unsigned_warning(self) -> str:
        return (
            f"the {self.codec.provider} media-stream server is accepting UNSIGNED upgrades "
            "(allow_unsigned=True): anyone who learns the URL can place calls on your STT, LLM and TTS bills"
        )

    async def __aenter__(self) -> Self:
        if self._auth is None:
            logger.warning("%s", self._unsigned_warning())
        async with AsyncExitStack() as stack:
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            # Providers never send frames anywhere near max_size; websockets fails bigger ones with 1009.
            self._server = await serve(
                self._on_connection,
                self._host,
                self._port,
                max_size=self._max_frame_bytes,
                write_limit=self._write_limit,
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
        if self._auth is None:
            return None
        upgrade = UpgradeRequest(
            path=request.path, headers=tuple(request.headers.raw_items()), public_url=self._public_url
        )
        why = self._auth.check(upgrade)
        if why is not None:
            return self._reject(connection, why)
        return None

    def _reject(self, connection: ServerConnection, why: str) -> Response:
        self.rejected_upgrades += 1
        logger.warning(
            "rejected %s media-stream upgrade (403): %s, from %s",
            self.codec.provider,
            why,
            connection.remote_address,
        )
        return connection.respond(403, "Forbidden\n")

    async def _on_connection(self, ws: ServerConnection) -> None:
        # websockets runs this in its own task; the call itself is owned by our task group.
        assert self._tg is not None
        done = anyio.Event()
        try:
            self._tg.start_soon(self._run_call, ws, done)
        except RuntimeError:  # the task group is shutting down
            await close_bounded(ws, 1001, "server shutting down")
            return
        await done.wait()

    async def _run_call(self, ws: ServerConnection, done: anyio.Event) -> None:
        connection_id = f"ws-{next(self._ids)}"
        self.active_calls += 1
        if self._idle.is_set():
            self._idle = anyio.Event()
        try:
            with log_context(session=connection_id), contained(logger, f"call on {connection_id}"):
                try:
                    await self._serve_call(ws)
                except BaseException as exc:
                    # However the call ended (a bug in this layer included), its socket goes too.
                    shutdown = is_cancellation(exc)
                    with anyio.CancelScope(shield=True):
                        await close_bounded(
                            ws, *((1001, "server shutting down") if shutdown else (1011, "internal error"))
                        )
                    raise
        finally:
            self.active_calls -= 1
            if self.active_calls == 0:
                self._idle.set()
            done.set()

    def _open_stream(
        self, ws: ServerConnection, start: StreamStart, control: CallControl | None
    ) -> AbstractAsyncContextManager[S]:
        """The call's stream, running (a provider's server returns its own ``MediaStream`` subclass)."""
        opened = MediaStream.open(
            ws,
            start,
            codec=self.codec,
            control=control,
            max_frame_bytes=self._max_frame_bytes,
            audio_buffer_frames=self._audio_buffer_frames,
            send_timeout=self._send_timeout,
        )
        # The plain server's S is MediaStream; a subclass with another S overrides this method.
        return cast("AbstractAsyncContextManager[S]", opened)

    async def _serve_call(self, ws: ServerConnection) -> None:
        try:
            with anyio.fail_after(self._handshake_timeout):
                start = await read_start(ws, self.codec, max_frame_bytes=self._max_frame_bytes)
        except MediaStreamProtocolError as exc:
            logger.warning("closing connection before start: protocol error: %s", exc.reason)
            await close_bounded(ws, 1008, exc.reason)
            return
        except ConnectionClosed as exc:
            logger.warning("connection ended before start: %s", describe_close(exc))
            return
        except TimeoutError:
            logger.warning("closing connection: no start within %.1f s", self._handshake_timeout)
            await close_bounded(ws, 1008, "no start event")
            return
        with log_context(session=start.call_id):
            logger.info("call %s started (stream %s)", start.call_id, start.stream_id)
            control = self._control_factory(start) if self._control_factory is not None else None
            failed = False
            async with self._open_stream(ws, start, control) as stream:
                with contained(logger, "call handler"):
                    failed = True
                    await self._handler(stream)
                    failed = False
            await (close_bounded(ws, 1011, "handler failed") if failed else close_bounded(ws))
            logger.info("call %s finished: %s", start.call_id, stream.close_reason)
