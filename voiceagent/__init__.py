"""voiceagent: voice agents on any OpenAI-compatible streaming LLM, Smallest AI's Electron first.

The public API is small: build an ``Agent`` from an ``LLMClient``, a ``TTSSink`` and ``@tool`` functions,
then ``await agent.respond(text)`` runs one turn and returns a ``TurnResult``.
"""

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
