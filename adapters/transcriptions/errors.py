"""Errors of the OpenAI-compatible ``/audio/transcriptions`` STT source."""

from __future__ import annotations

from voiceagent.errors import VoiceAgentError


class TranscriptionError(VoiceAgentError):
    """Base class of the transcription source's errors."""


class TranscriptionStatusError(TranscriptionError):
    """The endpoint answered a segment with a non-2xx status (401 bad key, 400 bad audio, ...)."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(f"transcription failed: HTTP {status_code}: {message}")
        self.status_code = status_code


class TranscriptionConnectionError(TranscriptionError):
    """The endpoint could not be reached (after the client's retries), or the source is closed."""
