"""Streaming chat completions from any OpenAI-compatible server, Electron by default.

The openai SDK builds the request, authenticates and maps error statuses; the stream itself is read on the
SDK's raw streaming response and parsed here with ``json.loads`` per ``data:`` line, about 17x cheaper in CPU
than the SDK's typed stream (DESIGN.md, "The fast stream path"). Chunks are plain dicts.

Retries are ours (the SDK's are off): HTTP 502/503, connection errors and a stream that breaks before its
first chunk are retried with backoff; nothing is retried once a chunk reached the consumer.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from types import TracebackType
from typing import Any, cast

import anyio
import openai

try:  # the HTTP library under the openai SDK: httpx2 in openai>=3.5x, httpx before
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _http  # type: ignore[no-redef]

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

ELECTRON_BASE_URL = "https://api.smallest.ai/waves/v1"
API_KEY_ENV = "SMALLEST_API_KEY"

# What can fail while reading a response body: the SDK only wraps errors raised while the request is sent.
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (_http.RequestError, anyio.EndOfStream)

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
    ) -> None:
        self.base_url = base_url or ELECTRON_BASE_URL
        self.model = model
        self.limiter = limiter
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.default_params: dict[str, Any] = dict(default_params or {})
        if openai_client is None:
            api_key = api_key or os.environ.get(API_KEY_ENV)
            if not api_key:
                raise ValueError(
                    f"no API key: pass api_key=... or set {API_KEY_ENV} (or pass openai_client=...)"
                )
            openai_client = openai.AsyncOpenAI(
                base_url=self.base_url, api_key=api_key, max_retries=0, timeout=timeout
            )
        register_secret(openai_client.api_key)  # never in a log line, whatever its shape
        self.openai_client = openai_client

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
        """Close the underlying HTTP client (its connection pool)."""
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
        self.attempts = 0
        self.started_at: float | None = None
        self.headers_at: float | None = None
        self.first_chunk_at: float | None = None
        self.malformed_chunks = 0
        self.retried_statuses: list[int] = []
        self.chunks_yielded = 0
        self.done = False  # ``data: [DONE]`` arrived
        self._attempt_stack: AsyncExitStack | None = None
        self._lines: AsyncIterator[str] | None = None
        self._caller_request_id = "-"

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
            if self.done or self._lines is None:
                raise StopAsyncIteration
            try:
                line = await self._lines.__anext__()
            except StopAsyncIteration:
                # A clean end without [DONE]: lenient, but say so (the usage chunk may be missing).
                logger.warning("stream ended without data: [DONE]")
                self.done = True
                await self._close_attempt()
                raise
            except _TRANSPORT_ERRORS as exc:
                await self._on_break(exc)
                continue
            if not line:
                continue  # the blank line after every event: the commonest line, skipped inline
            chunk = self._parse_line(line)
            if chunk is None:
                continue
            if self.first_chunk_at is None:
                self.first_chunk_at = time.perf_counter()
            self.chunks_yielded += 1
            return chunk

    def _parse_line(self, line: str) -> dict[str, Any] | None:
        if not line.startswith("data:"):
            return None  # blank separator, ``: comment``, ``event:``/``id:``/``retry:`` fields
        payload = line[5:].strip()
        if payload == "[DONE]":
            self.done = True
            return None
        try:
            chunk: Any = json.loads(payload)
        except ValueError:
            self.malformed_chunks += 1
            logger.warning("skipping malformed stream chunk: %.200s", payload)
            return None
        if not isinstance(chunk, dict):
            self.malformed_chunks += 1
            logger.warning("skipping stream chunk that is not an object: %.200s", payload)
            return None
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise StreamProtocolError(
                f"error event in stream: {message or error}", request_id=self.request_id
            )
        return chunk

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
                logger.warning("HTTP %s from the LLM server; retrying", exc.status_code)
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
        self._lines = response.iter_lines()
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
        create: Any = self.client.openai_client.chat.completions.with_streaming_response.create
        manager = create(model=body["model"], messages=[], stream=True, extra_body=body, **options)
        return cast(AbstractAsyncContextManager[Any], manager)

    async def _close_attempt(self) -> None:
        stack, self._attempt_stack = self._attempt_stack, None
        lines, self._lines = self._lines, None
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
