"""Smallest AI Pulse streaming speech-to-text, as a voiceagent ``STTSource``."""

from .client import PulseSTT
from .errors import (
    PulseConcurrencyLimitError,
    PulseConnectionError,
    PulseError,
    PulseHandshakeError,
    PulseProtocolError,
    PulseServerError,
)
from .messages import (
    PulseErrorMessage,
    PulseMessage,
    PulseOtherMessage,
    PulseSpeechEvent,
    PulseTranscript,
    parse_server_message,
)
from .options import DEFAULT_URL, PulseOptions, build_url

__all__ = [
    "DEFAULT_URL",
    "PulseConcurrencyLimitError",
    "PulseConnectionError",
    "PulseError",
    "PulseErrorMessage",
    "PulseHandshakeError",
    "PulseMessage",
    "PulseOptions",
    "PulseOtherMessage",
    "PulseProtocolError",
    "PulseSTT",
    "PulseServerError",
    "PulseSpeechEvent",
    "PulseTranscript",
    "build_url",
    "parse_server_message",
]
