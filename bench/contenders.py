"""The same streamed completion consumed four ways, for the CPU-overhead comparison.

Each consumer returns the text it received, so a broken contender shows up as a wrong answer rather
than as a fast one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import openai

from voiceagent.agent import Agent
from voiceagent.llm import LLMClient, ReadPath
from voiceagent.testing.sinks import RecordingSink
from voiceagent.turn import TurnConfig

MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Talk to me."}]
API_KEY = "sk-bench"

Consumer = Callable[[str], Awaitable[str]]


def sdk_client(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=0, timeout=60.0)


def our_client(base_url: str, read_path: ReadPath = "auto") -> LLMClient:
    return LLMClient(base_url=base_url, api_key=API_KEY, timeout=60.0, read_path=read_path)


class _FloorProtocol(asyncio.Protocol):
    """Each read split into lines in the loop's own callback, ``json.loads`` per ``data: {`` line: no HTTP
    parser, no task wake-up, no framing (the chunked-encoding size lines are skipped as non-``data:``)."""

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.parts: list[str] = []
        self.tail = b""

    def data_received(self, data: bytes) -> None:
        lines = (self.tail + data).split(b"\n")
        self.tail = lines.pop()
        for line in lines:
            if line.startswith(b"data: {"):
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        self.parts.append(content)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def protocol_floor(base_url: str) -> Consumer:
    """The true floor: a raw asyncio ``Protocol`` on the same server (which closes each connection after
    its response), the request written by hand, ``json.loads`` per ``data:`` line. Nothing can do less."""
    url = urlsplit(base_url)
    host, port, path = url.hostname or "127.0.0.1", url.port or 80, url.path.rstrip("/")

    async def consume(model: str) -> str:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        body = json.dumps({"model": model, "messages": MESSAGES, "stream": True}).encode()
        head = (
            f"POST {path}/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        transport, protocol = await loop.create_connection(lambda: _FloorProtocol(done), host, port)
        try:
            transport.write(head.encode() + body)
            await done
        finally:
            transport.close()
        return "".join(protocol.parts)

    return consume


def bare_raw_lines(client: openai.AsyncOpenAI) -> Consumer:
    """The floor: the SDK's raw streaming response, ``json.loads`` per ``data:`` line, content pulled out."""

    async def consume(model: str) -> str:
        parts: list[str] = []
        create: Any = client.chat.completions.with_streaming_response.create
        async with create(model=model, messages=MESSAGES, stream=True) as response:
            async for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                chunk = json.loads(payload)
                for choice in chunk.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        parts.append(content)
        return "".join(parts)

    return consume


def bare_typed(client: openai.AsyncOpenAI) -> Consumer:
    """What most apps write: the SDK's typed stream, one pydantic model per chunk."""

    async def consume(model: str) -> str:
        parts: list[str] = []
        create: Any = client.chat.completions.create
        stream = await create(model=model, messages=MESSAGES, stream=True)
        async with stream:
            async for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta.content:
                        parts.append(choice.delta.content)
        return "".join(parts)

    return consume


def ours_stream(client: LLMClient) -> Consumer:
    """Our LLMClient alone: SDK request, our SSE parse, chunk dicts."""

    async def consume(model: str) -> str:
        parts: list[str] = []
        client.model = model
        async with client.stream(MESSAGES) as stream:
            async for chunk in stream:
                for choice in chunk.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        parts.append(content)
        return "".join(parts)

    return consume


def ours_turn(client: LLMClient) -> Consumer:
    """Our full turn: LLMClient, DeltaAccumulator, SpeechChunker, speaker task, a zero-delay sink."""

    async def consume(model: str) -> str:
        client.model = model
        return await _turn(client)

    return consume


def ours_turn_client_per_call(base_url: str) -> Consumer:
    """Our full turn with an ``LLMClient`` built for the call and closed after it (an app that makes one
    per phone call): its set-up and teardown are counted too."""

    async def consume(model: str) -> str:
        async with our_client(base_url) as client:
            client.model = model
            return await _turn(client)

    return consume


async def _turn(client: LLMClient) -> str:
    sink = RecordingSink(seconds_per_char=0.0)
    # The bench's 2,000-token answers are far over the default cap on one round's text (3,000 chars).
    config = TurnConfig(max_round_chars=1_000_000)
    agent = Agent(llm=client, sink=sink, system_prompt="You are a bench.", config=config)
    result = await agent.respond("Talk to me.")
    if result.error:
        raise RuntimeError(f"turn failed: {result.error}")
    return sink.text
