"""Deepgram live-listen query options (the ``/v1/listen`` WebSocket's query string)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlencode, urlsplit

DEFAULT_URL = "wss://api.deepgram.com/v1/listen"
Encoding = Literal["linear16", "mulaw", "alaw"]


@dataclass(frozen=True, slots=True)
class DeepgramOptions:
    """``endpointing``: ms of silence before ``speech_final`` (Deepgram's default is 10 ms, too eager
    for a conversation; False turns it off). ``utterance_end_ms``: the gap after the last word before
    ``UtteranceEnd`` (the fallback end of speech in noise where endpointing never fires; needs
    ``interim_results``; None for none). ``extra``: any other query parameter, as Deepgram spells it."""

    model: str = "nova-3"
    language: str = "en"
    encoding: Encoding = "linear16"
    sample_rate: int = 16000
    interim_results: bool = True
    endpointing: int | Literal[False] = 300
    utterance_end_ms: int | None = 1000
    vad_events: bool = True
    punctuate: bool = True
    smart_format: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        if self.utterance_end_ms is not None and not self.interim_results:
            raise ValueError("utterance_end_ms needs interim_results (Deepgram finds the gap in them)")

    def query(self) -> dict[str, str]:
        params: dict[str, str | int | bool] = {
            "model": self.model,
            "language": self.language,
            "encoding": self.encoding,
            "sample_rate": self.sample_rate,
            "channels": 1,
            "interim_results": self.interim_results,
            "endpointing": self.endpointing,
            "vad_events": self.vad_events,
            "punctuate": self.punctuate,
            "smart_format": self.smart_format,
        }
        if self.utterance_end_ms is not None:
            params["utterance_end_ms"] = self.utterance_end_ms
        return {k: _wire(v) for k, v in params.items()} | dict(self.extra)


def build_url(options: DeepgramOptions, base_url: str = DEFAULT_URL) -> str:
    if urlsplit(base_url).query:
        raise ValueError("pass query parameters through DeepgramOptions, not in the base URL")
    return f"{base_url}?{urlencode(options.query())}"


def _wire(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
