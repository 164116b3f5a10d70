"""The top-level package exports what users need, and not the internals."""

from __future__ import annotations

import importlib

import voiceagent

USER_FACING = {
    "Agent", "Session", "BargeInPolicy", "LLMClient", "ChatStreamer", "ChatStream", "ELECTRON_BASE_URL",
    "Conversation", "Turn", "TurnConfig", "TurnResult", "RoundRecord", "ToolCall", "Tool", "tool",
    "ToolRunner", "ToolResult", "TTSSink", "AudioChunk", "STTSource", "STTEvent", "Transcript",
    "SpeechStarted", "SpeechEnded", "Transport", "TextDisplay", "EndOfTurnDetector", "EndpointingDetector",
    "Limiter", "ConcurrencyLimiter", "PLAN_CONCURRENCY", "RetryPolicy", "Usage",
    "ToolCallRecord",  # ToolCall's old name, kept as an alias
    # the audio side
    "TTSEngine", "TextStreamingEngine", "Speaker", "AudioOutput", "OwnsOutput",
    # phone calls
    "CallSettings", "DtmfSettings", "CallControl",
    # the turn's events
    "TurnEvent", "RoundStarted", "SpeechQueued", "ToolStarted", "ToolFinished", "CacheBusted",
    "RoundFinished", "TurnFinished",
    # errors
    "VoiceAgentError", "LLMError", "LLMStatusError", "RateLimitError", "LLMConnectionError",
    "StreamInterruptedError", "StreamProtocolError", "LLMDeadlineError", "SpeechLimitError",
    "TurnInProgressError", "LimiterUnavailableError", "SlotTimeoutError", "ToolDefinitionError", "TTSError",
    "TTSInterruptedError", "CallControlError",
}  # fmt: skip
INTERNALS = {
    "DeltaAccumulator": "voiceagent.accumulator",
    "SpeechChunker": "voiceagent.chunker",
    "LLMStream": "voiceagent.llm",
}


def test_the_package_exports_exactly_the_user_facing_names() -> None:
    assert set(voiceagent.__all__) == USER_FACING
    for name in USER_FACING:
        assert getattr(voiceagent, name) is not None


def test_internals_are_not_top_level_but_stay_importable_from_their_modules() -> None:
    for name, module in INTERNALS.items():
        assert name not in voiceagent.__all__
        assert not hasattr(voiceagent, name), name
        assert getattr(importlib.import_module(module), name).__name__ == name


def test_every_error_is_a_voiceagent_error() -> None:
    for name in voiceagent.__all__:
        value = getattr(voiceagent, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, voiceagent.VoiceAgentError), name


def test_the_chat_stream_protocols_are_the_ones_turn_uses() -> None:
    turn = importlib.import_module("voiceagent.turn")
    assert turn.ChatStreamer is voiceagent.ChatStreamer and turn.ChatStream is voiceagent.ChatStream


def test_the_old_tool_call_record_name_is_the_one_record() -> None:
    assert voiceagent.ToolCallRecord is voiceagent.ToolCall
