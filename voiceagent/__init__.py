"""voiceagent: voice agents on any OpenAI-compatible streaming LLM, Smallest AI's Electron first.

The public API is small: build an ``Agent`` from an ``LLMClient``, a ``TTSSink`` and ``@tool`` functions,
then ``await agent.respond(text)`` runs one turn and returns a ``TurnResult``.
"""

# Exports are imported lazily (PEP 562): `voiceagent --help` and pytest's plugin loading then skip the
# openai SDK (~0.6 s). A name added to the public API goes into both the TYPE_CHECKING block and _EXPORTS;
# tests/test_cli.py checks they agree with __all__.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voiceagent.accumulator import DeltaAccumulator
    from voiceagent.agent import Agent
    from voiceagent.chunker import SpeechChunker
    from voiceagent.conversation import Conversation
    from voiceagent.errors import (
        LLMConnectionError,
        LLMError,
        LLMStatusError,
        RateLimitError,
        StreamInterruptedError,
        StreamProtocolError,
        ToolDefinitionError,
        VoiceAgentError,
    )
    from voiceagent.events import Usage
    from voiceagent.limiter import PLAN_CONCURRENCY, ConcurrencyLimiter, Limiter
    from voiceagent.llm import ELECTRON_BASE_URL, LLMClient, LLMStream
    from voiceagent.results import RoundRecord, ToolCallRecord, TurnResult
    from voiceagent.retry import RetryPolicy
    from voiceagent.stt import STTSource, Transcript
    from voiceagent.tool_runner import ToolResult, ToolRunner
    from voiceagent.tools import Tool, tool
    from voiceagent.transport import TextDisplay, Transport
    from voiceagent.tts import AudioChunk, TTSSink
    from voiceagent.turn import Turn, TurnConfig

_EXPORTS = {  # name -> the module that defines it; imported on first use
    "DeltaAccumulator": "voiceagent.accumulator",
    "Agent": "voiceagent.agent",
    "SpeechChunker": "voiceagent.chunker",
    "Conversation": "voiceagent.conversation",
    "LLMConnectionError": "voiceagent.errors",
    "LLMError": "voiceagent.errors",
    "LLMStatusError": "voiceagent.errors",
    "RateLimitError": "voiceagent.errors",
    "StreamInterruptedError": "voiceagent.errors",
    "StreamProtocolError": "voiceagent.errors",
    "ToolDefinitionError": "voiceagent.errors",
    "VoiceAgentError": "voiceagent.errors",
    "Usage": "voiceagent.events",
    "PLAN_CONCURRENCY": "voiceagent.limiter",
    "ConcurrencyLimiter": "voiceagent.limiter",
    "Limiter": "voiceagent.limiter",
    "ELECTRON_BASE_URL": "voiceagent.llm",
    "LLMClient": "voiceagent.llm",
    "LLMStream": "voiceagent.llm",
    "RoundRecord": "voiceagent.results",
    "ToolCallRecord": "voiceagent.results",
    "TurnResult": "voiceagent.results",
    "RetryPolicy": "voiceagent.retry",
    "STTSource": "voiceagent.stt",
    "Transcript": "voiceagent.stt",
    "ToolResult": "voiceagent.tool_runner",
    "ToolRunner": "voiceagent.tool_runner",
    "Tool": "voiceagent.tools",
    "tool": "voiceagent.tools",
    "TextDisplay": "voiceagent.transport",
    "Transport": "voiceagent.transport",
    "AudioChunk": "voiceagent.tts",
    "TTSSink": "voiceagent.tts",
    "Turn": "voiceagent.turn",
    "TurnConfig": "voiceagent.turn",
}

__all__ = [
    "ELECTRON_BASE_URL",
    "PLAN_CONCURRENCY",
    "Agent",
    "AudioChunk",
    "ConcurrencyLimiter",
    "Conversation",
    "DeltaAccumulator",
    "LLMClient",
    "LLMConnectionError",
    "LLMError",
    "LLMStatusError",
    "LLMStream",
    "Limiter",
    "RateLimitError",
    "RetryPolicy",
    "RoundRecord",
    "STTSource",
    "SpeechChunker",
    "StreamInterruptedError",
    "StreamProtocolError",
    "TTSSink",
    "TextDisplay",
    "Tool",
    "ToolCallRecord",
    "ToolDefinitionError",
    "ToolResult",
    "ToolRunner",
    "Transcript",
    "Transport",
    "Turn",
    "TurnConfig",
    "TurnResult",
    "Usage",
    "VoiceAgentError",
    "tool",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'voiceagent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
