"""Frozen event records: what the stream parser and the turn pipeline report.

Two layers:
- stream events, produced by the pure ``DeltaAccumulator`` from raw chat-completion chunks;
- turn events, produced by ``Turn`` for apps, tests and the recorder to observe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voiceagent.results import ToolCall  # results imports this module: the type only


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one LLM round. ``estimated`` is True when the stream was cut before the usage chunk."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_dict(cls, usage: dict[str, Any]) -> Usage:
        """From an OpenAI ``usage`` object; fields that are missing or not integers count as 0."""
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        if cached is None:
            cached = usage.get("prompt_cache_hit_tokens")  # DeepSeek's name for it
        return cls(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")), _count(cached))

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
            self.estimated or other.estimated,
        )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


# ---- stream events (DeltaAccumulator output) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    """The first fragment of a tool call arrived (its name is known, its arguments are not yet)."""

    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallReady:
    """A tool call's arguments are complete: it may start now. ``extra``: the call's fields this library
    does not know (Gemini's ``extra_content``), to be sent back with the call exactly as received."""

    index: int
    id: str
    name: str
    arguments: str
    extra: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class UsageReported:
    usage: Usage


@dataclass(frozen=True, slots=True)
class StreamFinished:
    finish_reason: str


StreamEvent = TextDelta | ToolCallStarted | ToolCallReady | UsageReported | StreamFinished


# ---- turn events (Turn output) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoundStarted:
    round: int
    at: float  # seconds since the turn started
    turn: int | None = None  # the turn's index (``Turn.index``): a recorder tags the round's records with it


@dataclass(frozen=True, slots=True)
class SpeechQueued:
    """A speakable chunk left the chunker for the TTS sink."""

    round: int
    text: str
    at: float
    filler: bool = False


@dataclass(frozen=True, slots=True)
class ToolStarted:
    round: int
    call_id: str
    name: str
    arguments: str
    at: float


@dataclass(frozen=True, slots=True)
class ToolFinished:
    """A tool call has its result (run, refused or failed): ``call`` is the turn's record of it."""

    call: ToolCall

    @property
    def round(self) -> int:
        return self.call.round

    @property
    def call_id(self) -> str:
        return self.call.call_id

    @property
    def name(self) -> str:
        return self.call.name

    @property
    def result(self) -> str:
        return self.call.result

    @property
    def is_error(self) -> bool:
        return self.call.is_error

    @property
    def at(self) -> float:
        return self.call.finished_at


@dataclass(frozen=True, slots=True)
class CacheBusted:
    """A round's request changed a message that an earlier request of this conversation had sent."""

    round: int
    index: int
    reason: str


@dataclass(frozen=True, slots=True)
class RoundFinished:
    round: int
    request_id: str | None
    finish_reason: str | None
    usage: Usage
    at: float


@dataclass(frozen=True, slots=True)
class TurnFinished:
    result: Any = field(repr=False)  # TurnResult; typed loosely to keep this module import-free


TurnEvent = (
    RoundStarted | SpeechQueued | ToolStarted | ToolFinished | CacheBusted | RoundFinished | TurnFinished
)
