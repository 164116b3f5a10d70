"""voiceagent: voice agents on any OpenAI-compatible streaming LLM, Smallest AI's Electron first.

The public API is small: build an ``Agent`` from an ``LLMClient``, a ``TTSSink`` and ``@tool`` functions,
then ``await agent.respond(text)`` runs one turn and returns a ``TurnResult``; a ``Session`` runs a call
(speech in, turns, barge-in per ``BargeInPolicy``). Internals (``DeltaAccumulator``, ``SpeechChunker``,
``LLMStream``) are importable from their modules but are not part of this top level.
"""

# Exports are imported lazily (PEP 562): `voiceagent --help` and pytest's plugin loading then skip the
# openai SDK (~0.6 s). A name added to the public API goes into both the TYPE_CHECKING block and _EXPORTS;
# tests/test_cli.py checks they agree with __all__.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voiceagent.agent import Agent
    from voiceagent.chat_stream import ChatStream, ChatStreamer
    from voiceagent.conversation import Conversation
    from voiceagent.endpointing import EndOfTurnDetector, EndpointingDetector
    from voiceagent.errors import (
        LimiterUnavailableError,
        LLMConnectionError,
        LLMDeadlineError,
        LLMError,
        LLMStatusError,
        RateLimitError,
        SlotTimeoutError,
        SpeechLimitError,
        StreamInterruptedError,
        StreamProtocolError,
        ToolDefinitionError,
        TTSError,
        TTSInterruptedError,
        TurnInProgressError,
        VoiceAgentError,
    )
    from voiceagent.events import (
        CacheBusted,
        RoundFinished,
        RoundStarted,
        SpeechQueued,
        ToolFinished,
        ToolStarted,
        TurnEvent,
        TurnFinished,
        Usage,
    )
    from voiceagent.limiter import PLAN_CONCURRENCY, ConcurrencyLimiter, Limiter
    from voiceagent.llm import ELECTRON_BASE_URL, LLMClient
    from voiceagent.results import RoundRecord, ToolCall, ToolCallRecord, TurnResult
    from voiceagent.retry import RetryPolicy
    from voiceagent.session import BargeInPolicy, Session
    from voiceagent.speaker import Speaker, TextStreamingEngine, TTSEngine
    from voiceagent.stt import (
        SpeechEnded,
        SpeechStarted,
        STTEvent,
        STTSource,
        Transcript,
    )
    from voiceagent.telephony import CallControl, CallControlError, CallSettings, DtmfSettings
    from voiceagent.tool_runner import ToolResult, ToolRunner
    from voiceagent.tools import Tool, tool
    from voiceagent.transport import OwnsOutput, TextDisplay, Transport
    from voiceagent.tts import AudioChunk, AudioOutput, TTSSink
    from voiceagent.turn import Turn, TurnConfig

_EXPORTS = {  # name -> the module that defines it; imported on first use
    "Agent": "voiceagent.agent",
    "ChatStream": "voiceagent.chat_stream",
    "ChatStreamer": "voiceagent.chat_stream",
    "Conversation": "voiceagent.conversation",
    "EndOfTurnDetector": "voiceagent.endpointing",
    "EndpointingDetector": "voiceagent.endpointing",
    "LimiterUnavailableError": "voiceagent.errors",
    "LLMConnectionError": "voiceagent.errors",
    "LLMDeadlineError": "voiceagent.errors",
    "LLMError": "voiceagent.errors",
    "LLMStatusError": "voiceagent.errors",
    "RateLimitError": "voiceagent.errors",
    "SlotTimeoutError": "voiceagent.errors",
    "SpeechLimitError": "voiceagent.errors",
    "StreamInterruptedError": "voiceagent.errors",
    "StreamProtocolError": "voiceagent.errors",
    "ToolDefinitionError": "voiceagent.errors",
    "TTSError": "voiceagent.errors",
    "TTSInterruptedError": "voiceagent.errors",
    "TurnInProgressError": "voiceagent.errors",
    "VoiceAgentError": "voiceagent.errors",
    "CacheBusted": "voiceagent.events",
    "RoundFinished": "voiceagent.events",
    "RoundStarted": "voiceagent.events",
    "SpeechQueued": "voiceagent.events",
    "ToolFinished": "voiceagent.events",
    "ToolStarted": "voiceagent.events",
    "TurnEvent": "voiceagent.events",
    "TurnFinished": "voiceagent.events",
    "Usage": "voiceagent.events",
    "PLAN_CONCURRENCY": "voiceagent.limiter",
    "ConcurrencyLimiter": "voiceagent.limiter",
    "Limiter": "voiceagent.limiter",
    "ELECTRON_BASE_URL": "voiceagent.llm",
    "LLMClient": "voiceagent.llm",
    "RoundRecord": "voiceagent.results",
    "ToolCall": "voiceagent.results",
    "ToolCallRecord": "voiceagent.results",  # deprecated: ToolCall's old name
    "TurnResult": "voiceagent.results",
    "RetryPolicy": "voiceagent.retry",
    "BargeInPolicy": "voiceagent.session",
    "Session": "voiceagent.session",
    "CallControl": "voiceagent.telephony",
    "CallControlError": "voiceagent.telephony",
    "CallSettings": "voiceagent.telephony",
    "DtmfSettings": "voiceagent.telephony",
    "SpeechEnded": "voiceagent.stt",
    "SpeechStarted": "voiceagent.stt",
    "STTEvent": "voiceagent.stt",
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
    # the audio side: a vendor writes a TTSEngine; a Speaker makes it the turn's sink on an AudioOutput
    "TTSEngine": "voiceagent.speaker",
    "Speaker": "voiceagent.speaker",
    "TextStreamingEngine": "voiceagent.speaker",
    "AudioOutput": "voiceagent.tts",
    "OwnsOutput": "voiceagent.transport",
}

__all__ = [
    "ELECTRON_BASE_URL",
    "PLAN_CONCURRENCY",
    "Agent",
    "AudioChunk",
    "AudioOutput",
    "BargeInPolicy",
    "CacheBusted",
    "CallControl",
    "CallControlError",
    "CallSettings",
    "ChatStream",
    "ChatStreamer",
    "ConcurrencyLimiter",
    "Conversation",
    "DtmfSettings",
    "EndOfTurnDetector",
    "EndpointingDetector",
    "LLMClient",
    "LLMConnectionError",
    "LLMDeadlineError",
    "LLMError",
    "LLMStatusError",
    "Limiter",
    "LimiterUnavailableError",
    "OwnsOutput",
    "RateLimitError",
    "RetryPolicy",
    "RoundFinished",
    "RoundRecord",
    "RoundStarted",
    "STTEvent",
    "STTSource",
    "Session",
    "SlotTimeoutError",
    "Speaker",
    "SpeechEnded",
    "SpeechLimitError",
    "SpeechQueued",
    "SpeechStarted",
    "StreamInterruptedError",
    "StreamProtocolError",
    "TTSEngine",
    "TTSError",
    "TTSInterruptedError",
    "TTSSink",
    "TextDisplay",
    "TextStreamingEngine",
    "Tool",
    "ToolCall",
    "ToolCallRecord",
    "ToolDefinitionError",
    "ToolFinished",
    "ToolResult",
    "ToolRunner",
    "ToolStarted",
    "Transcript",
    "Transport",
    "Turn",
    "TurnConfig",
    "TurnEvent",
    "TurnFinished",
    "TurnInProgressError",
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
