"""A small HTTP/1.1 client for the chat stream: one asyncio ``Protocol`` per connection, nothing else.

Why not a library: on a read per token (a model's real pace) the client's CPU per token is what bounds
sessions per core, and every layer counts. Measured side by side (bench/read_paths.py, bench/README.md):
the openai SDK's stack (httpx, httpcore, h11, anyio streams) ~3x a bare ``Protocol``; aiohttp (C parser)
~2x and ~3x its request set-up; this client ~1.1–1.3x. What it does is small and fixed: one POST, one
streamed response, parsed in the read callback (status line, headers, ``Content-Length``, chunked or
close-delimited body), keep-alive connections reused, TLS through ``ssl``.

The openai SDK keeps what it does well: its client supplies the base URL and every header (auth
included), and its status mapping turns an error response into the SDK's typed error, which
``voiceagent.llm`` maps as before. Failures keep the SDK's shapes so the retry rules do not change:
before the response head ``openai.APIConnectionError`` (``APITimeoutError`` for a timeout); an error
status the SDK's ``APIStatusError`` subclass; a body that breaks ``BodyError``.

What it does not do (``LLMClient`` keeps the SDK path for these): proxies (any ``*_PROXY`` variable set),
a caller's own ``openai_client`` (it may carry a custom ``http_client``), per-request ``timeout`` or
``extra_query``, non-asyncio loops (trio), response encodings other than identity, gzip and deflate.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import time
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import urlsplit

import openai

try:  # the HTTP library under the openai SDK: httpx2 in openai>=3.5x, httpx before
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _http  # type: ignore[no-redef]

_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
MAX_HEAD_BYTES = 64 * 1024  # status line and headers together
MAX_ERROR_BODY = 64 * 1024  # an error response's body, read to build the typed error
_MAX_SIZE_LINE = 1024  # a chunk-size line (with extensions)
_HIGH_WATER = 1 << 20  # decoded body bytes buffered before the socket is paused
_MAX_IDLE = 100  # idle connections kept per client
# Seconds a host name's resolved addresses are reused (aiohttp's ttl_dns_cache default). On asyncio's loop
# every create_connection to a name calls getaddrinfo in the default executor (min(32, cores + 4)
# threads): a burst of 400 opens to "localhost" cost 2.4x the CPU and 4x the wall of opens to its
# address (bench/README.md, section 4).
DNS_TTL = 10.0
# getaddrinfo's answer: (family, type, proto, canonname, sockaddr) per address.
_AddrInfo = list[tuple[Any, Any, int, str, Any]]


# A response head: status, headers by lower-cased name (repeats joined), the raw header lines.
_Head = tuple[int, dict[str, str], list[tuple[str, str]]]


class BodyError(Exception):
    """The response body broke: the connection closed early, timed out, or its framing is invalid."""


class _HeadError(Exception):
    """No usable response head (the caller maps it to a connection error)."""


def usable() -> bool:
    """On an asyncio loop, and no proxy configured in the environment."""
    if any(os.environ.get(name) for name in _PROXY_ENV):
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # trio, or no loop
        return False
    return True


class _Connection(asyncio.Protocol):
    """One connection; one response at a time. The body is decoded in ``data_received``; the reader
    takes what has arrived, or waits for it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        # The loop's clock, read once per read: asyncio's own loop.time() is time.monotonic() behind a
        # Python frame, so that is called directly (uvloop's has a clock of its own, and keeps it).
        self._clock: Callable[[], float] = (
            time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        )
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.in_flight = False  # a request was written and its response has not ended
        self._paused = False
        self._new_response()

    def _new_response(self) -> None:
        self.head: asyncio.Future[tuple[int, dict[str, str], list[tuple[str, str]]]] = (
            self.loop.create_future()
        )
        self._head_buf = b""
        self._mode = ""  # "length", "chunked" or "close" once the head is parsed
        self._remaining = 0  # length mode: bytes left; chunked: bytes left of the current chunk
        self._chunk_state = "size"  # chunked: "size", "data", "crlf", "trailer"
        self._pending = b""  # chunked: an incomplete size line, CRLF or trailer line
        # Between two chunks of a chunked, uncompressed, unfinished body, with nothing pending: where a
        # read holding one whole chunk can go straight to the reader (data_received's first branch).
        # Only data_received's general path changes what it depends on, so it is set there.
        self._lean = False
        self._pieces: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        # Set while the reader waits in push mode (arm): each decoded piece goes to it in this callback
        # instead of the buffer, and the reader is woken only when it returns True.
        self._push: Callable[[bytes], bool] | None = None
        self.complete = False
        self.keep_alive = True
        self._error: BaseException | None = None
        self._decoder: Any = None
        self._last = self._clock()
        self._watchdog: asyncio.TimerHandle | None = None

    # ---- asyncio.Protocol ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        self._last = self._clock()
        push = self._push
        if push is not None and self._lean:
            # Push mode, a read holding exactly one whole chunk (a token at a real pace): what _body,
            # _chunked and _emit do with it, inline (one callback per token pays every call).
            payload = _whole_chunk(data)
            waiter = self._waiter
            if payload is not None and waiter is not None and not waiter.done():
                if push(payload):
                    self._wake()
                return
        if self._mode:
            self._body(data)
        elif self.in_flight and not self.head.done():
            self._head(data)
        else:  # bytes no request asked for (on an idle connection): never trust it again
            self.keep_alive = False
            self.close()
        self._lean = (
            self._mode == "chunked"
            and self._chunk_state == "size"
            and not self._pending
            and self._decoder is None
            and not self.complete
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.head.done():
            self._head_error(f"connection closed before the response head ({exc!r})")
        elif self._mode == "close" and exc is None:
            self._finish()
        elif not self.complete:
            self._fail(BodyError(f"connection closed before the response body ended ({exc!r})"))

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost decides what the end means

    # ---- head ----

    def _head(self, data: bytes) -> None:
        buf = self._head_buf + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                self._head_fail(f"response head over {MAX_HEAD_BYTES} bytes")
            self._head_buf = buf
            return
        self._head_buf = b""
        try:
            status, headers, raw = _parse_head(buf[:end])
        except ValueError as exc:
            self._head_fail(str(exc))
            return
        rest = buf[end + 4 :]
        if 100 <= status < 200:  # an interim response (100 Continue): the real one follows
            if rest:
                self._head(rest)
            return
        if headers.get("connection", "").lower() == "close":
            self.keep_alive = False
        encoding = headers.get("content-encoding", "identity").lower()
        if encoding in ("gzip", "deflate"):
            self._decoder = zlib.decompressobj(wbits=47)  # 47: gzip or zlib, detected
        elif encoding not in ("identity", ""):
            self._head_fail(f"unsupported content-encoding {encoding!r}")
            return
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._mode = "chunked"
        elif "content-length" in headers:
            try:
                self._remaining = int(headers["content-length"])
            except ValueError:
                self._head_fail(f"bad content-length {headers['content-length']!r}")
                return
            self._mode = "length"
        else:
            self._mode, self.keep_alive = "close", False
        self.head.set_result((status, headers, raw))
        if self._mode == "length" and self._remaining == 0:
            self._finish()
        elif rest:
            self._body(rest)

    def _head_fail(self, message: str) -> None:
        if not self.head.done():
            self._head_error(message)
        self.close()

    def _head_error(self, message: str) -> None:
        self.head.set_exception(_HeadError(message))
        # Marked as seen: no one may be waiting any more (a timed-out request); a waiter still gets it.
        self.head.exception()

    # ---- body ----

    def _body(self, data: bytes) -> None:
        if self.complete:
            self.keep_alive = False  # bytes past the end of the body: do not trust this connection
            return
        if self._mode == "chunked":
            self._chunked(data)
        elif self._mode == "length":
            if len(data) >= self._remaining:
                if len(data) > self._remaining:
                    self.keep_alive = False
                self._emit(data[: self._remaining])
                self._remaining = 0
                self._finish()
            else:
                self._remaining -= len(data)
                self._emit(data)
        else:
            self._emit(data)

    def _chunked(self, data: bytes) -> None:
        if self._pending:
            data, self._pending = self._pending + data, b""
        elif self._chunk_state == "size":
            # A read holding exactly one whole chunk (a token at a real pace): sliced out at once; the
            # state machine below gives the same, at several times the bytecodes.
            payload = _whole_chunk(data)
            if payload is not None:
                self._emit(payload)
                return
        pos, size = 0, len(data)
        while pos < size:
            state = self._chunk_state
            if state == "data":
                end = pos + self._remaining
                if end > size:
                    self._remaining -= size - pos
                    self._emit(data[pos:] if pos else data)
                    return
                self._emit(data[pos:end])
                pos, self._chunk_state = end, "crlf"
            elif state == "crlf":
                if size - pos < 2:
                    self._pending = data[pos:]
                    return
                if data[pos : pos + 2] != b"\r\n":
                    self._fail(BodyError("chunked body: no CRLF after a chunk"))
                    return
                pos += 2
                self._chunk_state = "size"
            else:  # "size" or "trailer": a line
                end = data.find(b"\r\n", pos)
                if end < 0:
                    if size - pos > _MAX_SIZE_LINE:
                        self._fail(BodyError("chunked body: size or trailer line too long"))
                        return
                    self._pending = data[pos:]
                    return
                line = data[pos:end]
                pos = end + 2
                if state == "trailer":
                    if not line:
                        if pos < size:
                            self.keep_alive = False
                        self._finish()
                        return
                    continue
                try:
                    chunk = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self._fail(BodyError(f"chunked body: bad chunk size {line[:40]!r}"))
                    return
                if chunk < 0:
                    self._fail(BodyError(f"chunked body: bad chunk size {line[:40]!r}"))
                    return
                if chunk == 0:
                    self._chunk_state = "trailer"
                else:
                    self._remaining, self._chunk_state = chunk, "data"

    def _emit(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                self._fail(BodyError(f"undecodable compressed body: {exc}"))
                return
            if not data:
                return
        push = self._push
        if push is not None:
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                if push(data):  # the reader has something to do: wake it; what follows is buffered
                    self._wake()
                return
            self._push = None  # the reader's wait was cancelled: buffer, as if it had not armed
        self._pieces.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def _finish(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._pieces.append(tail)
        self.complete = True
        self.in_flight = False
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self.keep_alive = False
        self._wake()
        self.close()

    def _wake(self) -> None:
        self._push = None
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # ---- the reader's side ----

    async def read(self) -> bytes:
        """The body bytes that arrived since the last read (b"" at its end)."""
        while not self._pieces:
            if self._error is not None:
                raise self._error
            if self.complete:
                return b""
            waiter = self._waiter = self.loop.create_future()
            if self._watchdog is None:
                self._watchdog = self.loop.call_at(self._last + self.timeout, self._check_idle)
            await waiter
        pieces, self._pieces = self._pieces, []
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def arm(self, push: Callable[[bytes], bool]) -> asyncio.Future[None] | None:
        """Push mode: until ``push`` returns True, or the body ends or breaks, each decoded piece is
        handed to it in the read callback and the reader sleeps on the returned future (no wake-up per
        read). None if something is waiting to be read already (read it with ``read``). ``push`` must
        not raise."""
        if self._pieces or self.complete or self._error is not None:
            return None
        waiter = self._waiter = self.loop.create_future()
        if self._watchdog is None:
            self._watchdog = self.loop.call_at(self._last + self.timeout, self._check_idle)
        self._push = push
        return waiter

    def disarm(self) -> None:
        """Back to buffering (the reader woke, or was cancelled while it waited)."""
        self._push = None
        self._waiter = None

    def _check_idle(self) -> None:
        # One timer per response, re-armed from the last read: no timer work per token.
        self._watchdog = None
        if self.complete or self._error is not None or self.closed:
            return
        idle = self._clock() - self._last
        if idle >= self.timeout:
            if self._waiter is not None:
                self._fail(BodyError(f"no data from the server for {self.timeout:g} s (read timeout)"))
                return
        self._watchdog = self.loop.call_at(self._last + self.timeout, self._check_idle)

    def stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self._error is None

    def close(self) -> None:
        self.stop_watchdog()
        if self.transport is not None and not self.closed:
            self.transport.close()


def _whole_chunk(data: bytes) -> bytes | None:
    """The data of ``data`` if it is exactly one whole, non-empty chunk of a chunked body (its size
    line, the data and its CRLF: what a read holds when tokens arrive at a real pace); else None, and
    the chunked-body state machine takes it (extensions, several chunks, a piece of one, the last)."""
    end = data.find(b"\r\n")
    if 0 < end < 16 and data.endswith(b"\r\n"):
        try:
            size = int(data[:end], 16)
        except ValueError:
            return None
        if size > 0 and end + size + 4 == len(data):
            return data[end + 2 : -2]
    return None


def _parse_head(head: bytes) -> _Head:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    raw: list[tuple[str, str]] = []
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ValueError(f"bad header line: {line[:80]!r}")
        value = value.strip()
        raw.append((name, value))
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(parts[1]), headers, raw


class H1Transport:
    """Streaming POSTs to ``{base_url}/chat/completions`` with the SDK client's headers, keep-alive
    connections pooled per event loop."""

    def __init__(self, openai_client: openai.AsyncOpenAI, *, timeout: float, ssl_context: Any) -> None:
        self._openai = openai_client
        self._timeout = timeout
        url = urlsplit(str(openai_client.base_url))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) base URL: {openai_client.base_url}")
        self._tls = url.scheme == "https"
        self._ssl = ssl_context if self._tls else None
        self._host = url.hostname
        self._port = url.port or (443 if self._tls else 80)
        default_port = self._port == (443 if self._tls else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = host if default_port else f"{host}:{self._port}"
        self._url = str(openai_client.base_url).rstrip("/") + "/chat/completions"
        self._path = (url.path.rstrip("/") + "/chat/completions") + (f"?{url.query}" if url.query else "")
        self._idle: list[_Connection] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        try:
            ipaddress.ip_address(self._host)
            self._literal = True  # an address: the loop connects to it without resolving
        except ValueError:
            self._literal = False
        self._resolved: tuple[asyncio.AbstractEventLoop, float, _AddrInfo] | None = None  # loop, expiry
        self._resolving: tuple[asyncio.AbstractEventLoop, asyncio.Future[_AddrInfo]] | None = None
        self._head_cache: tuple[str, bytes, bytes] | None = None  # (api key, head before/after the length)

    def _head_bytes(self, length: int, extra: Any) -> bytes:
        # The SDK's headers are built once per API key (the SDK builds them afresh per request: ~30 µs
        # of dict merging and the platform headers); only Content-Length differs between requests.
        client = self._openai
        if extra:
            before, after = self._head_parts(client, extra)
        else:
            key = client.api_key
            cached = self._head_cache
            if cached is None or cached[0] != key:
                cached = self._head_cache = (key, *self._head_parts(client, None))
            before, after = cached[1], cached[2]
        return b"%s%d%s" % (before, length, after)

    def _head_parts(self, client: openai.AsyncOpenAI, extra: Any) -> tuple[bytes, bytes]:
        """The request head up to the Content-Length value, and from the end of it on."""
        merged: dict[str, Any] = {**client.default_headers, **client.auth_headers, **(extra or {})}
        lines = [""]
        for name, value in merged.items():
            if not isinstance(value, str) or name.lower() in ("host", "content-length", "connection"):
                continue
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                raise ValueError(f"header {name!r} holds a line break or a colon")
            lines.append(f"{name}: {value}")
        before = f"POST {self._path} HTTP/1.1\r\nHost: {self._host_header}\r\nContent-Length: "
        return before.encode("latin-1"), ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        protocol = _Connection(loop, self._timeout)
        server_hostname = self._host if self._tls else None
        # asyncio.timeout, not wait_for: wait_for runs the coroutine in a task of its own (set-up CPU).
        async with asyncio.timeout(self._timeout):
            if self._literal:
                await loop.create_connection(
                    lambda: protocol, self._host, self._port, ssl=self._ssl, server_hostname=server_hostname
                )
                return protocol
            error: OSError | None = None
            # Each address in the resolver's order, as create_connection tries them; TLS still checks
            # the certificate against the host name (server_hostname).
            for family, _, _, _, sockaddr in await self._resolve(loop):
                try:
                    await loop.create_connection(
                        lambda: protocol,
                        sockaddr[0],
                        sockaddr[1],
                        family=family,
                        ssl=self._ssl,
                        server_hostname=server_hostname,
                    )
                    return protocol
                except OSError as exc:
                    error = exc
            self._resolved = None  # none answered: the next connect resolves afresh
            raise error or OSError(f"no address for {self._host!r}")

    async def _resolve(self, loop: asyncio.AbstractEventLoop) -> _AddrInfo:
        """The host's addresses: cached for ``DNS_TTL`` s, and one lookup shared by a burst of connects."""
        cached = self._resolved
        if cached is not None and cached[0] is loop and cached[1] > loop.time():
            return cached[2]
        pending = self._resolving
        if pending is not None and pending[0] is loop and not pending[1].done():
            await asyncio.wait([pending[1]])
            if not pending[1].cancelled() and pending[1].exception() is None:
                return pending[1].result()
            # Its lookup failed or was cancelled: look up here, and raise this caller's own error.
        future: asyncio.Future[_AddrInfo] = loop.create_future()
        self._resolving = (loop, future)
        try:
            infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        except BaseException:
            future.cancel()
            raise
        finally:
            if self._resolving is not None and self._resolving[1] is future:
                self._resolving = None
        if not infos:
            future.cancel()
            raise OSError(f"getaddrinfo returned no address for {self._host!r}")
        future.set_result(infos)
        self._resolved = (loop, loop.time() + DNS_TTL, infos)
        return infos

    def _take_idle(self, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        if self._loop is not loop:  # connections belong to their loop; a finished loop's are gone
            self._idle, self._loop = [], loop
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        return None

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running is self._loop:  # a finished loop's connections went with it
            for connection in idle:
                connection.close()

    @asynccontextmanager
    async def post(self, body: dict[str, Any], extra_headers: Any) -> AsyncIterator[H1Response]:
        """The response to a streaming POST of ``body``, open for reading."""
        loop = asyncio.get_running_loop()
        # As httpx encodes a JSON body: compact, UTF-8, and NaN refused (it is not JSON).
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        request = self._head_bytes(len(payload), extra_headers) + payload
        connection = await self._send(loop, request)
        try:
            status, headers, raw = await connection.head
            if status >= 400:
                raise await self._status_error(connection, status, raw)
            yield H1Response(connection, headers.get("x-request-id"))
        finally:
            connection.stop_watchdog()
            if connection.reusable() and len(self._idle) < _MAX_IDLE:
                connection._new_response()
                self._idle.append(connection)
            else:
                connection.close()

    async def _send(self, loop: asyncio.AbstractEventLoop, request: bytes) -> _Connection:
        """A connection with the request written and its head arrived; a reused idle connection the
        server had closed meanwhile is replaced once by a new one (nothing was processed on it)."""
        reused = self._take_idle(loop)
        for connection in (reused, None):
            fresh = connection is None
            try:
                if connection is None:
                    connection = await self._connect(loop)
                assert connection.transport is not None
                connection.in_flight = True
                connection.transport.write(request)
                # The head's wait is bounded like a read (the watchdog runs only once the body is read).
                if not connection.head.done():
                    async with asyncio.timeout(self._timeout):
                        await asyncio.shield(connection.head)
                connection.head.result()  # a head error is raised here
                return connection
            except _HeadError as exc:
                if connection is not None:
                    connection.close()
                if fresh or reused is None:
                    raise openai.APIConnectionError(message=str(exc), request=self._request()) from exc
            except TimeoutError as exc:  # asyncio's is the builtin since 3.11
                if connection is not None:
                    connection.close()
                raise openai.APITimeoutError(request=self._request()) from exc
            except OSError as exc:
                if connection is not None:
                    connection.close()
                if fresh or reused is None:
                    raise openai.APIConnectionError(message=f"{exc!r}", request=self._request()) from exc
            except BaseException:
                if connection is not None:
                    connection.close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(self) -> Any:
        return _http.Request("POST", self._url)

    async def _status_error(self, connection: _Connection, status: int, raw: list[tuple[str, str]]) -> Any:
        content = b""
        try:
            while len(content) < MAX_ERROR_BODY:
                data = await connection.read()
                if not data:
                    break
                content += data
        except BodyError:
            pass
        fake = _http.Response(
            status,
            headers=[(k, v) for k, v in raw if k.lower() not in ("content-encoding", "transfer-encoding")],
            content=content[:MAX_ERROR_BODY],
            request=self._request(),
        )
        return self._openai._make_status_error_from_response(fake)


class H1Response:
    """What ``LLMStream`` needs of a response: its request id and its body as it arrives."""

    def __init__(self, connection: _Connection, request_id: str | None) -> None:
        self._connection = connection
        self.request_id = request_id

    def iter_bytes(self) -> _Body:
        return _Body(self._connection)


class _Body:
    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        # The reader's own call (b"" at the end): LLMStream awaits it directly, one frame and no
        # StopAsyncIteration less per read than through __anext__.
        self.read = connection.read
        self.arm = connection.arm
        self.disarm = connection.disarm

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        data = await self._connection.read()
        if not data:
            raise StopAsyncIteration
        return data
