"""voiceagent.h1's connect path: a host name is resolved once for a burst of connects and reused for
``DNS_TTL`` seconds, every address is tried in the resolver's order, and a failed lookup is the SDK's
connection error. Real servers on 127.0.0.1; the loop's own ``getaddrinfo`` is counted, not replaced."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest

from voiceagent.h1 import H1Transport
from voiceagent.testing.openai_server import FakeOpenAIServer, text_reply

TIMEOUT = 20
pytestmark = pytest.mark.anyio


def _count_lookups(loop: asyncio.AbstractEventLoop) -> list[tuple[Any, ...]]:
    """Every loop.getaddrinfo call from here on (the real lookup still runs)."""
    calls: list[tuple[Any, ...]] = []
    real: Callable[..., Awaitable[Any]] = loop.getaddrinfo

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return await real(*args, **kwargs)

    loop.getaddrinfo = counted  # type: ignore[method-assign]
    return calls


async def _stream(transport: H1Transport) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    data = b""
    async with transport.post(body, None) as response:
        async for piece in response.iter_bytes():
            data += piece
    return data


def _transport(host: str, port: int) -> H1Transport:
    sdk = openai.AsyncOpenAI(base_url=f"http://{host}:{port}/v1", api_key="sk_h1")
    return H1Transport(sdk, timeout=TIMEOUT, ssl_context=None)


async def test_a_burst_of_connects_to_a_host_name_resolves_it_once() -> None:
    async with asyncio.timeout(TIMEOUT), FakeOpenAIServer() as server:
        server.responder = lambda body: text_reply("Hello there.")
        calls = _count_lookups(asyncio.get_running_loop())
        transport = _transport("localhost", server.port)
        # The server closes every connection, so each of these is a fresh connect.
        bodies = await asyncio.gather(*(_stream(transport) for _ in range(8)))
        bodies.append(await _stream(transport))
        assert all(b"Hello" in body and b"[DONE]" in body for body in bodies)
        assert len(server.requests) == 9
        assert [call[0] for call in calls] == ["localhost"]  # one lookup, shared and then reused


async def test_an_address_is_connected_to_without_a_lookup() -> None:
    async with asyncio.timeout(TIMEOUT), FakeOpenAIServer() as server:
        server.responder = lambda body: text_reply("Hi.")
        calls = _count_lookups(asyncio.get_running_loop())
        assert b"Hi." in await _stream(_transport("127.0.0.1", server.port))
        assert calls == []


async def test_every_resolved_address_is_tried_and_a_dead_one_is_skipped() -> None:
    async with asyncio.timeout(TIMEOUT), FakeOpenAIServer() as server:
        server.responder = lambda body: text_reply("Hi.")
        loop = asyncio.get_running_loop()
        dead = socket.socket()
        dead.bind(("127.0.0.1", 0))  # bound, never listening: a connect to it is refused
        dead_port = dead.getsockname()[1]
        real = loop.getaddrinfo

        async def two_addresses(host: Any, port: Any, **kwargs: Any) -> Any:
            live = await real("127.0.0.1", port, **kwargs)
            refused = await real("127.0.0.1", dead_port, **kwargs)
            return [*refused, *live]  # the resolver's first answer refuses the connection

        loop.getaddrinfo = two_addresses  # type: ignore[method-assign]
        try:
            assert b"Hi." in await _stream(_transport("localhost", server.port))
        finally:
            dead.close()


async def test_a_name_that_does_not_resolve_is_a_connection_error() -> None:
    transport = _transport("no-such-host.invalid", 9)
    with pytest.raises(openai.APIConnectionError):
        async with asyncio.timeout(TIMEOUT):
            await _stream(transport)
