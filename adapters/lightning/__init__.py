"""Smallest AI Lightning TTS: ``LightningSink`` (WebSocket) and ``LightningHTTPSink`` (sync/SSE)."""

from voiceagent.adapters.lightning.account import account_limiter
from voiceagent.adapters.lightning.http import LightningHTTPSink
from voiceagent.adapters.lightning.protocol import MODELS, SAMPLE_RATES, WordTimestamp, split_text
from voiceagent.adapters.lightning.websocket import LightningSink

__all__ = [
    "MODELS",
    "SAMPLE_RATES",
    "LightningHTTPSink",
    "LightningSink",
    "WordTimestamp",
    "account_limiter",
    "split_text",
]
