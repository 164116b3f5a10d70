"""Streaming chat completions from any OpenAI-compatible server, Electron by default.

The openai SDK supplies the URL and headers (auth included) and maps error statuses; the response is read by
``voiceagent.h1``, a small HTTP/1.1 client (the SDK's own HTTP stack where h1 does not apply, see ReadPath),
as raw bytes, and parsed here: SSE lines split by ``bytes.split``, ``json.loads``
once per event, about 17x cheaper in CPU than the SDK's typed stream (bench/README.md has the figures).
Chunks are plain dicts. A ``data:`` line holding one whole object is decoded at once (servers that leave out
the blank line between events work too); otherwise the event's ``data:`` fields are joined with ``\n`` at
its blank line, as SSE says.

Untrusted input is bounded: a line (or an event's joined data) over ``max_line_bytes`` is a stream error,
and so is any event whose data does not decode as JSON (``RecursionError`` from hostile nesting included).
Data that decodes to something other than an object is skipped and counted, as are empty ``data:`` fields.

Retries are ours (the SDK's are off): HTTP 502/503, connection errors and a stream that breaks before its
first chunk are retried with backoff; nothing is retried once a chunk reached the consumer. A stream cut
after its ``finish_reason`` arrived (the usage chunk or ``[DONE]`` lost) is complete, not broken.

Building a client is cheap: every client the library builds shares one SSL context per process (making one
costs ~20 ms of CPU; httpx makes one per client, even for ``http://``). Sharing one ``LLMClient`` for all the
calls of a process is cheaper still: it also shares the connection pool.
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from types import TracebackType
from typing import Any, Final, Literal, NoReturn, cast

import anyio
import openai

try:  # the HTTP library under the openai SDK: httpx2 in openai>=3.5x, httpx before
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _http  # type: ignore[no-redef]

from voiceagent import h1, http_stream
from voiceagent.errors import (
    LLMConnectionError,
    LLMError,
    LLMStatusError,
    RateLimitError,
    StreamInterruptedError,
    StreamProtocolError,
)
from voiceagent.limiter import ConcurrencyLimiter, Limiter
from voiceagent.logs import current, get_logger, register_secret, set_request_id
from voiceagent.retry import RetryPolicy

logger = get_logger(__name__)

# Longest SSE line, or joined ``data:`` of one event, accepted from a server (a longer one is a stream error).
DEFAULT_MAX_LINE_BYTES = 1 << 20

_SSL_CONTEXT: Any = None


def _shared_ssl_context() -> Any:
    """One verifying SSL context for every client this process builds (httpx's own default, SSL_CERT_FILE
    and SSL_CERT_DIR honoured). It is read-only once built, so sharing it is safe."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = _http.create_ssl_context()
    return _SSL_CONTEXT


ELECTRON_BASE_URL = "https://api.smallest.ai/waves/v1"
API_KEY_ENV = "SMALLEST_API_KEY"

# What can fail while reading a response body: the SDK only wraps errors raised while the request is sent.
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    _http.RequestError,
    anyio.EndOfStream,
    h1.BodyError,
    *http_stream.BODY_ERRORS,
)

# How the response is read. "auto": our small HTTP/1.1 client (voiceagent.h1) where it changes nothing
# but speed (h1.usable(): asyncio, no proxy; and a client built here, no per-request timeout), else the
# SDK's. "aiohttp": the same through aiohttp (if installed). "sdk": always the SDK's. bench/README.md
# has the measurements behind the choice.
ReadPath = Literal["auto", "h1", "aiohttp", "sdk"]
_READ_PATHS = ("auto", "h1", "aiohttp", "sdk")

# Arguments of create() that are request options, not body fields. Every other parameter is a body field
# and goes out as given (Electron forwards fields unknown to the SDK to the model; see _create).
_REQUEST_OPTIONS = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})

# One limiter per account and server, shared by every client of the process (Electron counts concurrency per
# account, so two clients on one key must share the cap).
_SHARED_LIMITERS: dict[tuple[str, str], ConcurrencyLimiter] = {}


def shared_limiter(base_url: str, api_key: str, plan: str) -> ConcurrencyLimiter:
    """The process-wide limiter for this account on this server, created on first use."""
    wanted = ConcurrencyLimiter.for_plan(plan)
    key = (base_url.rstrip("/"), api_key)
    existing = _SHARED_LIMITERS.get(key)
    if existing is None:
        _SHARED_LIMITERS[key] = wanted
        return wanted
    if existing.limit != wanted.limit:
        raise ValueError(
            f"this account already has a limiter of {existing.limit} concurrent requests; "
            f"plan {plan!r} asks for {wanted.limit}"
        )
    return existing


class LLMClient:
    """Opens streaming chat completions with retries and a concurrency cap."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str = "electron",
        limiter: Limiter | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        default_params: Mapping[str, Any] | None = None,
        openai_client: openai.AsyncOpenAI | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        read_path: ReadPath = "auto",
        read_callback: bool = True,
    ) -> None:
        """``read_callback`` (the default): a ``Turn`` reading this client's streams on the h1 read path
        runs its per-token work (SSE lines, JSON, accumulator, chunker) in the connection's read callback
        and wakes its task only when a chunk needs it (``LLMStream.feed_until``): a task wake-up per
        spoken chunk instead of one per token (bench/README.md, #17). ``False`` keeps the task reading
        each chunk (``async for``), as the SDK and aiohttp read paths always do."""
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be at least 1, got {max_line_bytes}")
        if read_path not in _READ_PATHS:
            raise ValueError(f"read_path must be one of {_READ_PATHS}, got {read_path!r}")
        if read_path == "aiohttp" and not http_stream.AVAILABLE:
            raise ValueError("read_path='aiohttp' needs aiohttp installed (pip install 'voiceagent[fast]')")
        self.base_url = base_url or ELECTRON_BASE_URL
        self.max_line_bytes = max_line_bytes
        self.read_callback = read_callback
        self.model = model
        self.limiter = limiter
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.default_params: dict[str, Any] = dict(default_params or {})
        # A caller's own openai client may carry a custom http_client (transport, proxy, hooks): SDK path.
        lean = read_path != "sdk" and openai_client is None
        if openai_client is None:
            api_key = api_key or os.environ.get(API_KEY_ENV)
            if not api_key:
                raise ValueError(
                    f"no API key: pass api_key=... or set {API_KEY_ENV} (or pass openai_client=...)"
                )
            http_client = openai.DefaultAsyncHttpxClient(verify=_shared_ssl_context(), timeout=timeout)
            openai_client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=api_key,
                max_retries=0,
                timeout=timeout,
                http_client=http_client,
            )
        register_secret(openai_client.api_key)  # never in a log line, whatever its shape
        self.openai_client = openai_client
        self._lean: h1.H1Transport | http_stream.StreamTransport | None = None
        self._lean_name = "aiohttp" if read_path == "aiohttp" else "h1"
        if lean and str(openai_client.base_url).startswith(("http://", "https://")):
            ssl_context = _shared_ssl_context() if str(openai_client.base_url).startswith("https") else None
            if read_path == "aiohttp":
                self._lean = http_stream.StreamTransport(
                    openai_client, timeout=timeout, ssl_context=ssl_context
                )
            else:
                self._lean = h1.H1Transport(openai_client, timeout=timeout, ssl_context=ssl_context)

    def _lean_transport(
        self, options: Mapping[str, Any]
    ) -> h1.H1Transport | http_stream.StreamTransport | None:
        """The lean path for this request, or None for the SDK's (a per-request timeout or extra_query,
        a proxy in the environment, a loop other than asyncio)."""
        if self._lean is None or set(options) - {"extra_headers"} or not h1.usable():
            return None
        return self._lean

    @classmethod
    def electron(cls, plan: str = "standard", **kwargs: Any) -> LLMClient:
        """A client for Electron whose limiter caps in-flight requests at the plan's concurrency,
        shared with every other client of this process on the same account."""
        base_url = kwargs.get("base_url") or ELECTRON_BASE_URL
        api_key = kwargs.get("api_key") or os.environ.get(API_KEY_ENV)
        if not api_key and kwargs.get("openai_client") is not None:
            api_key = kwargs["openai_client"].api_key
        if not api_key:
            raise ValueError(f"no API key: pass api_key=... or set {API_KEY_ENV}")
        kwargs["limiter"] = shared_limiter(base_url, api_key, plan)
        kwargs.setdefault("api_key", api_key)
        return cls(**kwargs)

    async def aclose(self) -> None:
        """Close the underlying HTTP clients (their connection pools)."""
        try:
            if self._lean is not None:
                await self._lean.aclose()
        finally:
            await self.openai_client.close()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def build_request(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The JSON body sent: model, messages, tools, defaults and params; always streaming with usage."""
        request: dict[str, Any] = {"model": self.model, **self.default_params, **(params or {})}
        request["messages"] = [dict(m) for m in messages]
        if tools:
            request["tools"] = [dict(t) for t in tools]
        request["stream"] = True
        # Usage (and Electron's cached_tokens) only arrives with include_usage; it is forced on.
        request["stream_options"] = {**(request.get("stream_options") or {}), "include_usage": True}
        return request

    def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **params: Any,
    ) -> LLMStream:
        """``async with client.stream(messages) as stream: async for chunk in stream: ...``"""
        return LLMStream(self, self.build_request(messages, tools, params))


class LLMStream:
    """One streamed completion. Entering it opens the response (retrying as the policy allows); iterating it
    yields chunk dicts; exiting closes the HTTP response and frees the limiter slot."""

    def __init__(self, client: LLMClient, request: dict[str, Any]) -> None:
        self.client = client
        self.request = request
        self.request_id: str | None = None
        self.read_path: str | None = None  # "h1", "aiohttp" or "sdk": how the last attempt was read
        self.attempts = 0
        self.started_at: float | None = None
        self.headers_at: float | None = None
        self.first_chunk_at: float | None = None
        self.malformed_chunks = 0
        self.retried_statuses: list[int] = []
        self.chunks_yielded = 0
        self.done = False  # ``data: [DONE]`` arrived
        self.finished = False  # a chunk with a finish_reason was yielded
        self._attempt_stack: AsyncExitStack | None = None
        self._source: AsyncIterator[bytes] | None = None  # the body, as the network delivers it
        self._read: Callable[[], Awaitable[bytes]] | None = None  # the body's own read(), if it has one
        self._arm: Callable[[Callable[[bytes], bool]], Any] | None = None  # h1: reads pushed to a callback
        self._disarm: Callable[[], None] = _no_disarm
        self._closing_error: StreamProtocolError | None = None  # raised after the attempt is closed
        self._max_line = client.max_line_bytes
        self._lines: list[bytes] = []  # complete lines not yet consumed, from _lines[_pos]
        self._pos = 0
        self._tail: list[bytes] = []  # the line still incomplete, in pieces (joined once, when it ends)
        self._tail_size = 0
        self._data: list[bytes] = []  # the ``data:`` fields of the event being read
        self._data_size = 0
        self._eof = False
        self._cr_held = False
        self._caller_request_id = "-"

    @property
    def read_callback(self) -> bool:
        """A turn may read this stream through ``feed_until`` (the client's ``read_callback``)."""
        return self.client.read_callback

    # ---- context manager ----

    async def __aenter__(self) -> LLMStream:
        # Restored by value on exit (not with a contextvar token, which breaks if another task exits us).
        self._caller_request_id = current().request_id
        self.started_at = time.perf_counter()
        try:
            await self._open_with_retries()
        except BaseException:
            set_request_id(self._caller_request_id)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._close_attempt()
        finally:
            set_request_id(self._caller_request_id)

    # ---- iteration ----

    def __aiter__(self) -> LLMStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while True:
            if self.done or self._source is None:
                raise StopAsyncIteration
            try:
                chunk = self._take()
            except StreamProtocolError as exc:
                await self._raise_protocol_error(exc)
            if chunk is not None:
                return chunk
            if self.done:
                raise StopAsyncIteration
            if self._eof:
                # A clean end without [DONE]: lenient, but say so (the usage chunk may be missing).
                await self._end_without_done()
                raise StopAsyncIteration
            await self._read_more()

    async def feed_until(self, feed: Callable[[dict[str, Any]], bool]) -> bool:
        """Hand each chunk, in order, to ``feed`` until it returns True (the caller has something to do:
        True is returned) or the stream ends (False). The same chunks, errors and bookkeeping as
        iterating, without a task wake-up per chunk on the h1 read path: there the body's lines are
        split and decoded, and ``feed`` called, in the connection's read callback, and this task wakes
        only when ``feed`` says so, the body ends, or it breaks. ``feed`` must be pure (no I/O, no
        awaits): it runs in the callback, in this task's context; what it raises is raised here."""
        while True:
            if self.done or self._source is None:
                return False
            try:
                chunk = self._take()
                if chunk is not None:
                    if feed(chunk):
                        return True
                    continue
                if self.done:
                    return False
                if self._eof:
                    await self._end_without_done()
                    return False
                arm = self._arm
                if arm is None:
                    await self._read_more()
                    continue
                if await self._pushed(arm, feed):
                    return True
            except StreamProtocolError as exc:
                await self._raise_protocol_error(exc)

    async def _pushed(
        self, arm: Callable[[Callable[[bytes], bool]], Any], feed: Callable[[dict[str, Any]], bool]
    ) -> bool:
        """Let the read callback split, decode and feed until ``feed`` asks for this task (or the body
        ends or breaks: then what is left is read here as usual). True: ``feed`` asked."""
        context = contextvars.copy_context()  # log records made in the callback carry this task's fields
        pushed_error: list[BaseException] = []
        asked: list[bool] = []
        max_data, scan, one_event = self._max_line + 2, _scan_object, _ONE_EVENT.fullmatch
        clean = not self._tail and not self._data and not self._cr_held  # no partial line or event held

        def on_data(data: bytes) -> bool:
            nonlocal clean
            try:
                if clean and len(data) <= max_data and one_event(data) is not None:
                    # A read holding one whole single-line event (a token at a real pace): what _split,
                    # _take and _decode_json give for it, at a fraction of the bytecodes. Anything unusual
                    # (not one object, trailing text, an error event, a NUL after the brace: it is not
                    # JSON as UTF-8) takes the general path below.
                    try:
                        text = data[6:-2].decode("utf-8", "surrogatepass")
                        chunk, end = scan(text, 0)
                    except (ValueError, StopIteration, RecursionError):
                        pass
                    else:
                        # text starts with "{": what the scanner gives for it is a dict.
                        if end == len(text) and ("error" not in chunk or not chunk["error"]):
                            if self.first_chunk_at is None:
                                self.first_chunk_at = time.perf_counter()
                            if not self.finished:
                                # As _take decides it: the first choice's finish_reason, when it is an object.
                                try:
                                    if chunk["choices"][0]["finish_reason"]:
                                        self.finished = True
                                except (LookupError, TypeError):
                                    pass
                            self.chunks_yielded += 1
                            if context.run(feed, chunk):
                                asked.append(True)
                                return True
                            return False
                if context.run(self._push, data, feed):
                    asked.append(True)
                    return True
                clean = not self._tail and not self._data and not self._cr_held
                return self.done
            except Exception as exc:  # never into the event loop: raised by the task below
                pushed_error.append(exc)
                return True

        waiter = arm(on_data)
        if waiter is None:  # data, the end or an error is waiting already: read it the usual way
            await self._read_more()
            return False
        try:
            await waiter
        finally:
            self._disarm()
        if pushed_error:
            raise pushed_error[0]
        return bool(asked)

    def _push(self, data: bytes, feed: Callable[[dict[str, Any]], bool]) -> bool:
        """In the read callback: True when ``feed`` asked for the task (what is left of the read stays
        in the line buffer, in order)."""
        self._split(data)
        while True:
            chunk = self._take()
            if chunk is None:
                return False
            if feed(chunk):
                return True

    def _take(self) -> dict[str, Any] | None:
        """The next chunk from the lines already read; None once they run out (``done`` and ``_eof`` say
        why) or ``[DONE]`` arrived. A line over the cap raises StreamProtocolError."""
        lines = self._lines
        while self._pos < len(lines) and not self.done:
            line = lines[self._pos]
            self._pos += 1
            if not line:
                # The blank line that ends an event: the commonest line, handled first.
                if not self._data:
                    continue
                chunk = self._dispatch()
            elif line.startswith(b"data:"):
                if len(line) > self._max_line:
                    raise self._too_long("line", len(line))
                # One space after the colon is part of the field syntax; several data lines join with \n.
                payload = line[6:] if line[5:6] == b" " else line[5:]
                if not self._data and payload.endswith(b"}"):
                    # The usual event, one whole object on one line: decoded now, without waiting for the
                    # blank line (servers that send none, "data: {...}\n" after "data: {...}\n", work too).
                    chunk = self._decode_line(payload)
                else:
                    chunk = None
                if chunk is None:
                    self._data_size += len(payload) + 1
                    if self._data_size > self._max_line:
                        raise self._too_long("event's data", self._data_size)
                    self._data.append(payload)
                    continue
            else:
                # A ``: comment`` or an ``event:``/``id:``/``retry:`` field: not ours.
                if len(line) > self._max_line:
                    raise self._too_long("line", len(line))
                continue
            if chunk is None:
                continue
            if self.first_chunk_at is None:
                self.first_chunk_at = time.perf_counter()
            if not self.finished:
                choices = chunk.get("choices")
                if choices and isinstance(choices, list) and isinstance(choices[0], dict):
                    self.finished = bool(choices[0].get("finish_reason"))
            self.chunks_yielded += 1
            pos = self._pos
            if pos < len(lines) and not lines[pos] and not self._data:
                # The blank line ending this event is a no-op with no data pending: taken now, which
                # saves the next call a pass through the loop (one per token).
                self._pos = pos + 1
            return chunk
        return None

    async def _end_without_done(self) -> None:
        # A clean end without [DONE]: lenient, but say so (the usage chunk may be missing).
        logger.warning("stream ended without data: [DONE]")
        self.done = True
        await self._close_attempt()

    async def _raise_protocol_error(self, exc: StreamProtocolError) -> NoReturn:
        # An over-long line closes the attempt before it is raised; other protocol errors leave the
        # closing to the context manager's exit, as they always did.
        if exc is self._closing_error:
            self._closing_error = None
            await self._close_attempt()
        raise exc

    def _start_body(self, source: AsyncIterator[bytes]) -> None:
        """A new attempt's body: nothing of an earlier attempt's partial lines carries over."""
        self._source = source
        self._read = getattr(source, "read", None)  # h1's body: its read() directly
        self._arm = getattr(source, "arm", None)  # h1's body: reads pushed to a callback
        self._disarm = getattr(source, "disarm", _no_disarm)
        self._lines, self._pos, self._tail, self._tail_size = [], 0, [], 0
        self._data, self._data_size, self._eof, self._cr_held = [], 0, False, False

    async def _read_more(self) -> None:
        """Read the next piece of the body and split it into lines (``\n``, ``\r\n`` or ``\r``)."""
        assert self._source is not None
        try:
            read = self._read
            if read is not None:
                data = await read()
                if not data:
                    raise StopAsyncIteration
            else:
                data = await self._source.__anext__()
        except StopAsyncIteration:
            # An unterminated last line still counts, and the event it belongs to ends with the body.
            rest = b"".join(self._tail)
            self._lines, self._pos = [rest, b""], 0
            self._tail, self._tail_size, self._eof = [], 0, True
            return
        except _TRANSPORT_ERRORS as exc:
            if self.finished:
                # The answer is complete: only the usage chunk or [DONE] was lost with the connection.
                logger.warning("stream cut after its finish_reason (%r); the answer is complete", exc)
                self.done = True
                await self._close_attempt()
                return
            await self._on_break(exc)
            return
        try:
            self._split(data)
        except StreamProtocolError as exc:
            await self._raise_protocol_error(exc)

    def _split(self, data: bytes) -> None:
        """Split a read into lines (``\n``, ``\r\n`` or ``\r``) after those not yet taken (the read
        callback may hand over mid-read). The one line step of both ways of reading: ``__anext__`` and
        ``feed_until`` take the lines with ``_take``. A line over the cap raises StreamProtocolError."""
        if self._cr_held or b"\r" in data:
            data = self._normalize_cr(data)
        if b"\n" not in data:
            self._tail.append(data)
            self._tail_size += len(data)
            if self._tail_size > self._max_line:
                raise self._too_long("line", self._tail_size)
            return
        if self._tail:
            self._tail.append(data)
            data = b"".join(self._tail)
            self._tail, self._tail_size = [], 0
        lines = data.split(b"\n")
        last = lines.pop()
        if last:
            self._tail.append(last)
            self._tail_size = len(last)
        if self._pos < len(self._lines):
            lines = self._lines[self._pos :] + lines
        self._lines, self._pos = lines, 0

    def _normalize_cr(self, data: bytes) -> bytes:
        # A \r ending a read may be the first half of a \r\n: it is held back until the next read.
        if self._cr_held:
            data = b"\r" + data
        self._cr_held = data.endswith(b"\r")
        if self._cr_held:
            data = data[:-1]
        return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    def _too_long(self, what: str, size: int) -> StreamProtocolError:
        self._closing_error = StreamProtocolError(
            f"stream {what} of over {self._max_line} bytes ({size} so far); max_line_bytes caps it",
            request_id=self.request_id,
        )
        return self._closing_error

    def _decode_line(self, payload: bytes) -> dict[str, Any] | None:
        """A single-line event decoded eagerly; None if it is not a whole object (it then waits for the
        rest of its event, and any decode error is raised when the event ends)."""
        try:
            chunk: Any = _decode_json(payload)
        except (ValueError, RecursionError):
            return None
        if not isinstance(chunk, dict):
            return None
        return self._checked(chunk)

    def _checked(self, chunk: dict[str, Any]) -> dict[str, Any]:
        error = chunk.get("error")
        if error:
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise StreamProtocolError(
                f"error event in stream: {message or error}", request_id=self.request_id
            )
        return chunk

    def _dispatch(self) -> dict[str, Any] | None:
        """The event's data is complete: decode it. Undecodable data is a protocol error."""
        parts, self._data, self._data_size = self._data, [], 0
        payload = parts[0] if len(parts) == 1 else b"\n".join(parts)
        if payload.startswith(b"[DONE]"):
            self.done = True
            return None
        if not payload.strip():
            self.malformed_chunks += 1
            logger.warning("skipping a stream event with empty data")
            return None
        try:
            chunk: Any = json.loads(payload)
        except (ValueError, RecursionError) as exc:  # ValueError covers bad UTF-8 too
            raise StreamProtocolError(
                f"stream event is not valid JSON ({type(exc).__name__}: {str(exc)[:120]}): {payload[:200]!r}",
                request_id=self.request_id,
            ) from None
        if not isinstance(chunk, dict):
            self.malformed_chunks += 1
            logger.warning("skipping stream chunk that is not an object: %.200r", payload)
            return None
        return self._checked(chunk)

    async def _on_break(self, exc: BaseException) -> None:
        """The body broke. Before the first chunk it is retried; after, what arrived is kept and we stop."""
        await self._close_attempt()
        if self.chunks_yielded:
            raise StreamInterruptedError(
                f"stream broke after {self.chunks_yielded} chunks: {exc!r}", request_id=self.request_id
            ) from exc
        if self.attempts >= self.client.retry.max_attempts:
            raise StreamInterruptedError(
                f"stream broke before its first chunk on all {self.attempts} attempts: {exc!r}",
                request_id=self.request_id,
            ) from exc
        logger.warning("stream broke before its first chunk (%r); retrying", exc)
        await anyio.sleep(self.client.retry.delay(self.attempts))
        await self._open_with_retries()

    # ---- attempts ----

    async def _open_with_retries(self) -> None:
        policy = self.client.retry
        while True:
            try:
                await self._open_attempt()
                return
            except openai.APIStatusError as exc:
                error = _status_error(exc)
                if not policy.is_retryable_status(exc.status_code) or self.attempts >= policy.max_attempts:
                    raise error from exc
                self.retried_statuses.append(exc.status_code)
                # The failed attempt's X-Request-Id goes on the record: support traces requests by it.
                set_request_id(error.request_id)
                logger.warning(
                    "HTTP %s from the LLM server (request_id %s); retrying", exc.status_code, error.request_id
                )
            except openai.APIConnectionError as exc:
                if self.attempts >= policy.max_attempts:
                    raise LLMConnectionError(
                        f"could not reach {self.client.base_url} after {self.attempts} attempts: {exc}"
                    ) from exc
                logger.warning("connection to the LLM server failed (%r); retrying", exc.__cause__ or exc)
            # The slot was released when the attempt closed: backoff does not hold one.
            await anyio.sleep(policy.delay(self.attempts))

    async def _open_attempt(self) -> None:
        self.attempts += 1
        stack = AsyncExitStack()
        try:
            if self.client.limiter is not None:
                slot = self.client.limiter.slot()
                await stack.enter_async_context(slot)
            response = await stack.enter_async_context(self._create())
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            raise
        self._attempt_stack = stack
        self.headers_at = time.perf_counter()
        self.request_id = response.request_id
        set_request_id(self.request_id)
        self._start_body(response.iter_bytes())
        logger.debug("LLM stream open (attempt %d)", self.attempts)

    def _create(self) -> AbstractAsyncContextManager[Any]:
        # The body goes to the SDK as extra_body, merged verbatim into the JSON it sends. Its typed
        # arguments would be walked against the SDK's TypedDicts first: ~5 ms per request on a 2-core
        # machine, growing with the conversation, between a tool's result and the next round's first
        # token. Our messages are plain JSON already, and chat params have no field that walk rewrites.
        request = self.request
        options = {k: v for k, v in request.items() if k in _REQUEST_OPTIONS}
        body = {k: v for k, v in request.items() if k not in _REQUEST_OPTIONS}
        body.update(options.pop("extra_body", None) or {})
        lean = self.client._lean_transport(options)
        if lean is not None:
            self.read_path = self.client._lean_name
            return lean.post(body, options.get("extra_headers"))
        self.read_path = "sdk"
        create: Any = self.client.openai_client.chat.completions.with_streaming_response.create
        manager = create(model=body["model"], messages=[], stream=True, extra_body=body, **options)
        return cast(AbstractAsyncContextManager[Any], manager)

    async def _close_attempt(self) -> None:
        stack, self._attempt_stack = self._attempt_stack, None
        lines, self._source = self._source, None
        # Closing must finish even when the consumer is being cancelled (barge-in), or the connection and
        # the limiter slot would leak.
        with anyio.CancelScope(shield=True):
            aclose = getattr(lines, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except _TRANSPORT_ERRORS:
                    pass  # the body already broke; the response is closed below either way
            if stack is not None:
                await stack.aclose()


_raw_decode = json.JSONDecoder().raw_decode
# A read that is exactly one single-line event holding an object: "data: {...}" and its blank line, no
# other line break, no CR (the read callback's inline path; anything else takes the general one).
_ONE_EVENT: Final = re.compile(rb"data: \{[^\r\n]*\}\n\n")
# The C scanner raw_decode calls (one JSON value at an index), without raw_decode's Python frame; it
# raises StopIteration where raw_decode raises JSONDecodeError.
_scan_object: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _no_disarm() -> None:
    pass


def _decode_json(payload: bytes) -> Any:
    """``json.loads(payload)``, without its Python-level wrappers for the usual chunk: bytes that start
    with ``{`` and a non-NUL byte are UTF-8 for ``json.loads`` (its ``detect_encoding``), and
    ``raw_decode`` is what it runs on the text. Anything else, or trailing text, goes to ``json.loads``
    itself, so the result and the errors are always its own. Per token this is ~120 bytecodes less."""
    if payload[:1] == b"{" and payload[1:2] != b"\x00":
        try:
            text = payload.decode("utf-8", "surrogatepass")
            value, end = _raw_decode(text)
            if end == len(text):
                return value
        except (ValueError, RecursionError):
            pass
    return json.loads(payload)


def _status_error(exc: openai.APIStatusError) -> LLMError:
    body = exc.body if isinstance(exc.body, dict) else {}
    message = str(body.get("message") or exc.message)
    error_type = body.get("type") if isinstance(body.get("type"), str) else None
    body_request_id = body.get("request_id")
    request_id = exc.request_id or (body_request_id if isinstance(body_request_id, str) else None)
    cls = RateLimitError if exc.status_code == 429 else LLMStatusError
    return cls(message, status_code=exc.status_code, request_id=request_id, error_type=error_type)


__all__ = [
    "API_KEY_ENV",
    "ELECTRON_BASE_URL",
    "LLMClient",
    "LLMStream",
    "shared_limiter",
]
