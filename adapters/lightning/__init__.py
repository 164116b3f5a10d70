"""Smallest AI Lightning TTS: ``LightningSink`` (WebSocket) and ``LightningHTTPSink`` (sync/SSE)."""

from voiceagent.adapters.lightning.account import account_limiter
from voiceagent.adapters.lightning.http import LightningHTTPSink
from voiceagent.adapters.lightning.protocol import (
    DEFAULT_VOICES,
    MODELS,
    SAMPLE_RATES,
    WordTimestamp,
    split_text,
)
from voiceagent.adapters.lightning.voices import Voice, check_voice, fetch_voices
from voiceagent.adapters.lightning.websocket import LightningSink

__all__ = [
    "DEFAULT_VOICES",
    "MODELS",
    "SAMPLE_RATES",
    "LightningHTTPSink",
    "LightningSink",
    "Voice",
    "WordTimestamp",
    "account_limiter",
    "check_voice",
    "fetch_voices",
    "split_text",
]
