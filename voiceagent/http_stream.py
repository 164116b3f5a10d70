"""The lean read path of a chat stream: one POST through aiohttp (its C HTTP parser), the body read as bytes.

The openai SDK still does what it does well: its client supplies the base URL and the headers (auth
included), and its status mapping turns an error response into the SDK's typed error (request id and
body included), which ``voiceagent.llm`` maps as before. What this replaces is the HTTP stack under the
SDK (httpx, httpcore, h11, anyio streams), about two thirds of a paced token's CPU (bench/README.md).

Failures keep the SDK's shapes, so the retry rules in ``voiceagent.llm`` do not change: a failure before
the response headers is ``openai.APIConnectionError`` (``APITimeoutError`` for a timeout); an error
status is the SDK's ``APIStatusError`` subclass; a body that breaks is one of ``BODY_ERRORS``.

Used only where it changes nothing but speed (``usable``): an asyncio event loop, no proxy in the
environment, and a client ``LLMClient`` built itself (a caller's own ``openai_client`` may carry a custom
``http_client``: transport, proxy, mounts, event hooks; it keeps the SDK path).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai

try:
    import aiohttp
except ImportError:  # pragma: no cover - aiohttp is an optional speed-up
    aiohttp = None  # type: ignore[assignment]

try:  # the HTTP library under the openai SDK: httpx2 in openai>=3.5x, httpx before
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _http  # type: ignore[no-redef]

AVAILABLE = aiohttp is not None

# What can break while the body is read (before or after the first chunk: the caller decides what it means).
BODY_ERRORS: tuple[type[BaseException], ...] = (
    (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError)
    if aiohttp is not None
    else ()
)

# Environment variables that route requests through a proxy: the SDK path honours them (httpx), this one
# does not try to (socks, NO_PROXY matching and netrc differ between the libraries).
_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")

# Longest error body read to build the typed error (a hostile server cannot make us buffer more).
_MAX_ERROR_BODY = 64 * 1024


def usable() -> bool:
    """aiohttp is installed, we are on an asyncio loop, and no proxy is configured in the environment."""
    if aiohttp is None or any(os.environ.get(name) for name in _PROXY_ENV):
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # trio, or no loop
        return False
    return True


class StreamTransport:
    """One aiohttp session (its connection pool) per event loop, made on first use."""

    def __init__(self, openai_client: openai.AsyncOpenAI, *, timeout: float, ssl_context: Any) -> None:
        self._openai = openai_client
        self._timeout = timeout
        self._ssl = ssl_context
        self._session: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._url: str | None = None

    def _session_here(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            # A session belongs to its loop: one left on a finished loop is detached and dropped.
            assert aiohttp is not None
            if self._session is not None and not self._session.closed:
                self._session.detach()
            connector = aiohttp.TCPConnector(limit=1000, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self._timeout, sock_read=self._timeout
                ),
                skip_auto_headers=("User-Agent",),  # the SDK's own is sent
            )
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                return
            if running is self._loop:
                await session.close()

    def headers(self, extra: Any) -> dict[str, str]:
        """The SDK's own headers (User-Agent, X-Stainless-*, auth), plus a request's extra_headers."""
        client = self._openai
        merged: dict[str, Any] = {**client.default_headers, **client.auth_headers, **(extra or {})}
        return {k: v for k, v in merged.items() if isinstance(v, str)}

    @asynccontextmanager
    async def post(self, body: dict[str, Any], extra_headers: Any) -> AsyncIterator[StreamResponse]:
        """The response to a streaming POST of ``body`` to chat/completions, open for reading."""
        assert aiohttp is not None
        if self._url is None:
            self._url = str(self._openai.base_url).rstrip("/") + "/chat/completions"
        url = self._url
        session = self._session_here()
        try:
            manager = session.post(url, data=json.dumps(body).encode(), headers=self.headers(extra_headers))
            response = await manager.__aenter__()
        except aiohttp.ServerTimeoutError as exc:
            raise openai.APITimeoutError(request=_http.Request("POST", url)) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise openai.APIConnectionError(message=f"{exc!r}", request=_http.Request("POST", url)) from exc
        try:
            if response.status >= 400:
                raise await self._status_error(response, url)
            yield StreamResponse(response)
        finally:
            response.close()  # never back to the pool half read; a fully read one was released already

    async def _status_error(self, response: Any, url: str) -> openai.APIStatusError:
        try:
            content = await response.content.read(_MAX_ERROR_BODY)
        except BODY_ERRORS:
            content = b""
        fake = _http.Response(
            response.status,
            headers=list(response.headers.items()),
            content=content,
            request=_http.Request("POST", url),
        )
        return self._openai._make_status_error_from_response(fake)


class StreamResponse:
    """What ``LLMStream`` needs of a response: its request id and its body as it arrives."""

    def __init__(self, response: Any) -> None:
        self._response = response
        self.request_id: str | None = response.headers.get("x-request-id")

    def iter_bytes(self) -> _Body:
        return _Body(self._response.content)


class _Body:
    """The body's bytes, each read as the network delivered it (aiohttp's ``readany``, no generator)."""

    def __init__(self, content: Any) -> None:
        self._content = content

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        data: bytes = await self._content.readany()
        if not data:
            raise StopAsyncIteration
        return data
