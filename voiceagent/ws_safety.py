"""What a WebSocket server connection needs to fail alone and stay bounded (docs/reliability.md).

- ``close_reason``: a close reason cut to the 123 UTF-8 bytes a close frame can carry (websockets
  raises on a longer one, and a raise there used to end the whole server).
- ``send_bounded``: a send that gives up after a deadline and drops the connection, so a peer that
  stops reading costs at most the write buffer and a few seconds, not the ~50 s keepalive takes.
- ``close_bounded``: a close that never hangs (a close frame waits behind unread data too) and never raises.
- ``contained``: the per-connection guard: everything but cancellation is logged and stays in that connection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

MAX_CLOSE_REASON_BYTES = 123  # RFC 6455 5.5: 125-byte control payload minus the 2-byte code
DEFAULT_SEND_TIMEOUT = 5.0
DEFAULT_CLOSE_TIMEOUT = 2.0
# asyncio's write buffer high-water mark per connection: past it a send waits for the peer to read.
DEFAULT_WRITE_LIMIT = 64 * 1024


class SendStalledError(ConnectionError):
    """A send waited longer than its deadline: the peer stopped reading; the connection was dropped."""


def close_reason(text: str, limit: int = MAX_CLOSE_REASON_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary (lone surrogates replaced)."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return raw.decode("utf-8")
    return raw[:limit].decode("utf-8", "ignore")


def drop(ws: Connection) -> None:
    """Abort the TCP connection now: no close handshake with a peer that does not read."""
    transport = ws.transport
    if transport is not None and not transport.is_closing():
        transport.abort()


async def send_bounded(
    ws: Connection, message: str | bytes, *, seconds: float = DEFAULT_SEND_TIMEOUT
) -> None:
    """``ws.send(message)``, but a send blocked for ``seconds`` drops the connection and raises
    ``SendStalledError``. ``ConnectionClosed`` passes through as usual."""
    with anyio.move_on_after(seconds) as scope:
        await ws.send(message)
    if scope.cancelled_caught:
        drop(ws)
        raise SendStalledError(f"peer stopped reading: a send was blocked for {seconds:g} s")


async def close_bounded(
    ws: Connection, code: int = 1000, reason: str = "", *, seconds: float = DEFAULT_CLOSE_TIMEOUT
) -> None:
    """Close with ``code`` and ``reason`` (cut to fit); drop the connection if that takes over ``seconds``."""
    with anyio.move_on_after(seconds) as scope:
        try:
            await ws.close(code, close_reason(reason))
        except ConnectionClosed:
            pass
        except Exception:  # a close must not fail the caller; the connection is dropped instead
            logging.getLogger(__name__).debug("close failed; dropping the connection", exc_info=True)
            drop(ws)
    if scope.cancelled_caught:
        drop(ws)


def is_cancellation(exc: BaseException) -> bool:
    """Cancellation (or KeyboardInterrupt, the user's own), also inside an exception group."""
    stop = (anyio.get_cancelled_exc_class(), KeyboardInterrupt)
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(stop) is not None
    return isinstance(exc, stop)


@contextmanager
def contained(logger: logging.Logger, what: str) -> Iterator[None]:
    """Log and swallow any exception from the body except cancellation: one connection's failure
    (a handler bug, SystemExit from argparse in a handler, a websockets error) never reaches the
    server's task group."""
    try:
        yield
    except BaseException as exc:
        if is_cancellation(exc):
            raise
        logger.error("%s failed; only this connection ends", what, exc_info=exc)
