"""Pulse streaming STT client: a voiceagent ``STTSource`` over one WebSocket (its lifecycle is
``voiceagent.stt_websocket``'s; this module holds Pulse's wire parts)."""

from __future__ import annotations

from typing import Any

from voiceagent.errors import VoiceAgentError
from voiceagent.logs import get_logger
from voiceagent.stt import SpeechEnded, SpeechStarted, Transcript
from voiceagent.stt_websocket import STTErrors, WebSocketSTT

from .errors import (
    PulseConcurrencyLimitError,
    PulseConnectionError,
    PulseError,
    PulseHandshakeError,
    PulseServerError,
)
from .messages import PulseErrorMessage, PulseSpeechEvent, PulseTranscript, has_words, parse_server_message
from .options import DEFAULT_URL, PulseOptions, build_url

logger = get_logger(__name__)

CONCURRENCY_LIMIT_CLOSE_CODE = 1008


class PulseSTT(WebSocketSTT):
    """Streams caller audio to Pulse and yields ``Transcript``/``SpeechStarted``/``SpeechEnded``.

    ``send_audio`` takes PCM16 mono at ``options.sample_rate`` and encodes it as ``options.encoding``
    (mulaw/alaw are encoded here; linear16 is sent as is; for linear32, opus and ogg_opus pass bytes
    already in that encoding). Audio goes out in binary frames of about ``batch_bytes`` (4096, as
    recommended), or sooner once a batch holds ``max_batch_ms`` of audio, so that slow encodings
    (mu-law at 8 kHz fills 4096 bytes only every half second) do not add latency.

    Use as ``async with PulseSTT(key, options) as stt``. ``aclose`` flushes, sends ``close_stream``
    and waits for the ``is_last`` transcript before closing; ``events()`` then ends. Failures surface
    from ``events()`` as ``PulseError`` subclasses (``PulseConcurrencyLimitError`` on close code 1008).
    """

    vendor = "Pulse"
    errors = STTErrors(PulseError, PulseHandshakeError, PulseConnectionError)
    end_marker = "is_last"
    close_name = "close_stream"

    def __init__(
        self,
        api_key: str,
        options: PulseOptions | None = None,
        *,
        url: str = DEFAULT_URL,
        batch_bytes: int = 4096,
        max_batch_ms: float = 128.0,
        open_timeout: float = 10.0,
        close_timeout: float = 10.0,
    ) -> None:
        if batch_bytes <= 0:
            raise ValueError("batch_bytes must be positive")
        self.options = options or PulseOptions()
        super().__init__(
            build_url(self.options, url),
            {"Authorization": f"Bearer {api_key}"},
            secret=api_key,
            encoding=self.options.encoding,
            frame_bytes=batch_bytes,
            flush_bytes=self.options.batch_size(batch_bytes, max_batch_ms),
            open_timeout=open_timeout,
            close_timeout=close_timeout,
        )

    @property
    def vad_events(self) -> bool:
        """True when Pulse was asked for ``speech_started``/``speech_ended`` (``options.vad_events``)."""
        return self.options.vad_events

    def _close_message(self) -> dict[str, Any]:
        return {"type": "close_stream"}

    def _finalize_message(self) -> dict[str, Any]:
        return {"type": "finalize"}

    def _closed_error(self, code: int | None, reason: str) -> VoiceAgentError | None:
        if code == CONCURRENCY_LIMIT_CLOSE_CODE:
            return PulseConcurrencyLimitError(f"Pulse concurrency limit reached (1008 {reason})")
        return None

    def _on_message(self, raw: str | bytes) -> bool:
        message = parse_server_message(raw)
        if isinstance(message, PulseTranscript):
            # A final is the end of a segment; the server ends the turn only on is_last, an answer to
            # finalize, or speech_final (LiveKit's plugin reads the same flags).
            end = message.is_final and (message.is_last or message.from_finalize or message.speech_final)
            if has_words(message.text):
                self._emit(Transcript(message.text, message.is_final, end))
            return message.is_last
        if isinstance(message, PulseSpeechEvent):
            event = SpeechStarted if message.started else SpeechEnded
            self._emit(event(at=message.timestamp))
        elif isinstance(message, PulseErrorMessage):
            raise PulseServerError(message.message)
        else:
            logger.debug("ignoring Pulse message of type %r", message.type)
        return False
