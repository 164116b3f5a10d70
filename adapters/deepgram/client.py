"""Deepgram live streaming STT: a voiceagent ``STTSource`` over one ``/v1/listen`` WebSocket.

Deepgram's events map onto the end-of-turn detector (``voiceagent.endpointing``) so:
- ``Results`` become ``Transcript``s (empty ones skipped); a final's ``end_of_turn`` is its
  ``speech_final`` (Deepgram's endpointing heard a pause) or ``from_finalize`` (it answers our
  ``Finalize``);
- ``SpeechStarted`` (Deepgram's VAD) is ``SpeechStarted``; the first words after an end count as a start
  too, since Deepgram's VAD event is not guaranteed for every utterance;
- the end of speech is a ``speech_final`` or an ``UtteranceEnd`` (the fallback in noise, where
  endpointing never fires), whichever comes first: one ``SpeechEnded`` per utterance.

The connection's lifecycle (batching, keepalives, close, errors) is ``voiceagent.stt_websocket``'s.
"""

from __future__ import annotations

from typing import Any

from voiceagent.errors import VoiceAgentError
from voiceagent.logs import get_logger
from voiceagent.stt import SpeechEnded, SpeechStarted, Transcript
from voiceagent.stt_websocket import STTErrors, WebSocketSTT

from .errors import DeepgramConnectionError, DeepgramError, DeepgramHandshakeError, DeepgramServerError
from .messages import (
    CLOSE_STREAM,
    FINALIZE,
    KEEP_ALIVE,
    DeepgramErrorMessage,
    DeepgramMetadata,
    DeepgramResults,
    DeepgramSpeechStarted,
    DeepgramUtteranceEnd,
    parse_server_message,
)
from .options import DEFAULT_URL, DeepgramOptions, build_url

logger = get_logger(__name__)


class DeepgramSTT(WebSocketSTT):
    """Streams caller audio (PCM16 mono at ``options.sample_rate``; mu-law/A-law encoded here) in
    frames of ``chunk_ms`` (Deepgram asks for 20-100 ms), sends ``KeepAlive`` after ``keepalive``
    seconds without audio (Deepgram closes an idle stream after 10 s, NET-0001), and yields
    ``Transcript``/``SpeechStarted``/``SpeechEnded``. Use as ``async with DeepgramSTT(key) as stt``;
    ``aclose`` sends ``CloseStream`` and waits for ``Metadata``; failures surface from ``events()`` as
    ``DeepgramError`` subclasses."""

    vendor = "Deepgram"
    errors = STTErrors(DeepgramError, DeepgramHandshakeError, DeepgramConnectionError)
    end_marker = "Metadata"
    close_name = "CloseStream"

    def __init__(
        self,
        api_key: str,
        options: DeepgramOptions | None = None,
        *,
        url: str = DEFAULT_URL,
        chunk_ms: float = 50.0,
        keepalive: float = 5.0,
        open_timeout: float = 10.0,
        close_timeout: float = 10.0,
    ) -> None:
        if chunk_ms <= 0 or keepalive <= 0:
            raise ValueError("chunk_ms and keepalive must be positive")
        self.options = options or DeepgramOptions()
        width = 2 if self.options.encoding == "linear16" else 1
        chunk_bytes = max(width, int(self.options.sample_rate * chunk_ms / 1000) * width)
        super().__init__(
            build_url(self.options, url),
            {"Authorization": f"Token {api_key}"},
            secret=api_key,
            encoding=self.options.encoding,
            frame_bytes=chunk_bytes,
            flush_bytes=chunk_bytes,
            keepalive=keepalive,
            open_timeout=open_timeout,
            close_timeout=close_timeout,
        )
        self._speaking = False  # between a speech start and its end, as we reported them
        self._started_at = 0.0

    @property
    def vad_events(self) -> bool:
        """Deepgram reports speech start and end itself unless both endpointing and UtteranceEnd are off."""
        return self.options.endpointing is not False or self.options.utterance_end_ms is not None

    def _close_message(self) -> dict[str, Any]:
        return CLOSE_STREAM

    def _finalize_message(self) -> dict[str, Any]:
        return FINALIZE

    def _keepalive_message(self) -> dict[str, Any]:
        return KEEP_ALIVE

    def _closed_error(self, code: int | None, reason: str) -> VoiceAgentError | None:
        if code in (1008, 1011):  # DATA-0000 (audio it cannot decode), NET-0000/NET-0001 (timeouts)
            return DeepgramServerError(f"{code} {reason}", code=code)
        return None

    def _on_message(self, raw: str | bytes) -> bool:
        message = parse_server_message(raw)
        if isinstance(message, DeepgramMetadata):
            return True
        if isinstance(message, DeepgramErrorMessage):
            raise DeepgramServerError(f"{message.variant}: {message.description}".lstrip(": "))
        if isinstance(message, DeepgramResults):
            if message.text.strip():
                self._speech_start(message.start)
                end = message.is_final and (message.speech_final or message.from_finalize)
                self._emit(Transcript(message.text, message.is_final, end))
            if message.speech_final:
                self._speech_end(message.start + message.duration)
        elif isinstance(message, DeepgramSpeechStarted):
            self._speech_start(message.timestamp)
        elif isinstance(message, DeepgramUtteranceEnd):
            self._speech_end(message.last_word_end)
        else:
            logger.debug("ignoring Deepgram message %r", message)
        return False

    def _speech_start(self, at: float) -> None:
        if self.vad_events and not self._speaking:
            self._speaking, self._started_at = True, at
            self._emit(SpeechStarted(at=at))

    def _speech_end(self, at: float) -> None:
        # An UtteranceEnd about words from before the latest start is stale: the caller went on.
        if self.vad_events and self._speaking and at >= self._started_at:
            self._speaking = False
            self._emit(SpeechEnded(at=at))
