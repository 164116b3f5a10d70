"""Deepgram live streaming speech-to-text (``/v1/listen``), as a voiceagent ``STTSource``."""

from .client import DeepgramSTT
from .errors import (
    DeepgramConnectionError,
    DeepgramError,
    DeepgramHandshakeError,
    DeepgramProtocolError,
    DeepgramServerError,
)
from .messages import (
    DeepgramErrorMessage,
    DeepgramMessage,
    DeepgramMetadata,
    DeepgramOtherMessage,
    DeepgramResults,
    DeepgramSpeechStarted,
    DeepgramUtteranceEnd,
    parse_server_message,
)
from .options import DEFAULT_URL, DeepgramOptions, build_url

__all__ = [
    "DEFAULT_URL",
    "DeepgramConnectionError",
    "DeepgramError",
    "DeepgramErrorMessage",
    "DeepgramHandshakeError",
    "DeepgramMessage",
    "DeepgramMetadata",
    "DeepgramOptions",
    "DeepgramOtherMessage",
    "DeepgramProtocolError",
    "DeepgramResults",
    "DeepgramSTT",
    "DeepgramServerError",
    "DeepgramSpeechStarted",
    "DeepgramUtteranceEnd",
    "build_url",
    "parse_server_message",
]
