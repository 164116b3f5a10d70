"""The same streamed completion consumed four ways, for the CPU-overhead comparison.

Each consumer returns the text it received, so a broken contender shows up as a wrong answer rather
than as a fast one.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import openai

from voiceagent.agent import Agent
from voiceagent.llm import LLMClient
from voiceagent.testing.sinks import RecordingSink
from voiceagent.turn import TurnConfig

MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Talk to me."}]
API_KEY = "sk-bench"

Consumer = Callable[[str], Awaitable[str]]


def sdk_client(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=0, timeout=60.0)


def our_client(base_url: str) -> LLMClient:
    return LLMClient(base_url=base_url, api_key=API_KEY, timeout=60.0)


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
        sink = RecordingSink(seconds_per_char=0.0)
        agent = Agent(llm=client, sink=sink, system_prompt="You are a bench.", config=TurnConfig())
        result = await agent.respond("Talk to me.")
        if result.error:
            raise RuntimeError(f"turn failed: {result.error}")
        return sink.text

    return consume
