"""Pulse streaming STT connection options and URL (Smallest AI's Pulse streaming STT docs)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

DEFAULT_URL = "wss://api.smallest.ai/waves/v1/stt/live"
ENCODINGS = frozenset({"linear16", "linear32", "alaw", "mulaw", "opus", "ogg_opus"})
SAMPLE_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})
# Bytes per sample for the encodings whose size says how much audio a batch holds.
BYTES_PER_SAMPLE = {"linear16": 2, "linear32": 4, "alaw": 1, "mulaw": 1}


@dataclass(frozen=True, slots=True)
class PulseOptions:
    """Query parameters of a Pulse stream. ``model`` and ``language`` are required by the server.

    ``extra`` carries any other documented parameter (``keywords``, ``diarize``, ``redact_pii``...);
    every value goes on the wire as a string, booleans as ``"true"``/``"false"``.
    """

    language: str = "en"
    model: str = "pulse"
    encoding: str = "linear16"
    sample_rate: int = 16000
    vad_events: bool = True
    word_timestamps: bool | None = None
    eou_timeout_ms: int | None = None
    external_session_id: str | None = None
    extra: Mapping[str, str | int | bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.language or not self.model:
            raise ValueError("Pulse requires model and language")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {sorted(ENCODINGS)}, got {self.encoding!r}")
        if self.sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {sorted(SAMPLE_RATES)}, got {self.sample_rate}")
        if self.eou_timeout_ms is not None and not 100 <= self.eou_timeout_ms <= 10000:
            raise ValueError("eou_timeout_ms must be within 100..10000")

    @classmethod
    def for_twilio(cls, language: str = "en", **kwargs: object) -> PulseOptions:
        """Telephone audio as Twilio delivers it: mu-law at 8 kHz."""
        return cls(language=language, encoding="mulaw", sample_rate=8000, **kwargs)  # type: ignore[arg-type]

    def query(self) -> dict[str, str]:
        params: dict[str, str | int | bool | None] = {
            "model": self.model,
            "language": self.language,
            "encoding": self.encoding,
            "sample_rate": self.sample_rate,
            "vad_events": self.vad_events,
            "word_timestamps": self.word_timestamps,
            "eou_timeout_ms": self.eou_timeout_ms,
            "external_session_id": self.external_session_id,
            **self.extra,
        }
        return {name: _wire(value) for name, value in params.items() if value is not None}

    def batch_size(self, batch_bytes: int, max_batch_ms: float) -> int:
        """Bytes per send: ``batch_bytes``, or less when that would hold more than ``max_batch_ms`` of
        audio; always whole samples."""
        width = BYTES_PER_SAMPLE.get(self.encoding)
        if width is None:
            return batch_bytes
        samples = max(1, min(batch_bytes // width, int(self.sample_rate * max_batch_ms / 1000)))
        return samples * width


def build_url(options: PulseOptions, base_url: str = DEFAULT_URL) -> str:
    if urlsplit(base_url).query:
        raise ValueError("pass query parameters through PulseOptions, not in the base URL")
    return f"{base_url}?{urlencode(options.query())}"


def _wire(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
