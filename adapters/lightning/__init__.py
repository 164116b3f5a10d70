"""Smallest AI Lightning TTS: ``LightningEngine`` (WebSocket) and ``LightningHTTPEngine`` (sync/SSE), and
``LightningSink``/``LightningHTTPSink``, the ``Speaker`` over each."""

from voiceagent.adapters.lightning.account import account_limiter
from voiceagent.adapters.lightning.http import LightningHTTPEngine, LightningHTTPSink
from voiceagent.adapters.lightning.protocol import (
    DEFAULT_VOICES,
    MODELS,
    SAMPLE_RATES,
    WordTimestamp,
    split_text,
)
from voiceagent.adapters.lightning.voices import Voice, check_voice, fetch_voices
from voiceagent.adapters.lightning.websocket import LightningEngine, LightningSink

__all__ = [
    "DEFAULT_VOICES",
    "MODELS",
    "SAMPLE_RATES",
    "LightningEngine",
    "LightningHTTPEngine",
    "LightningHTTPSink",
    "LightningSink",
    "Voice",
    "WordTimestamp",
    "account_limiter",
    "check_voice",
    "fetch_voices",
    "split_text",
]
