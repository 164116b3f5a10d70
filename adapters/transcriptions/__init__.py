"""Any OpenAI-compatible ``/audio/transcriptions`` endpoint, segmented by a local VAD, as an STT source."""

from .client import TranscriptionSTT
from .errors import TranscriptionConnectionError, TranscriptionError, TranscriptionStatusError
from .segmenter import Segment, VadSegmenter

__all__ = [
    "Segment",
    "TranscriptionConnectionError",
    "TranscriptionError",
    "TranscriptionSTT",
    "TranscriptionStatusError",
    "VadSegmenter",
]
