"""What a turn reports when it is over: per-round usage, request ids, tool calls and timings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from voiceagent.events import Usage

if TYPE_CHECKING:
    from voiceagent.cost import Rates, TurnCost


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call of a turn and what it produced: the one record of a call, in ``TurnResult``, in the
    ``ToolFinished`` event, in a cassette's ``tool`` line and in the timeline. Times are seconds since the
    turn started: the arguments were complete (``ready_at``), the tool started and finished."""

    round: int
    call_id: str
    name: str
    arguments: str
    result: str
    is_error: bool
    ready_at: float
    started_at: float
    finished_at: float

    @property
    def duration(self) -> float:
        return self.finished_at - self.started_at


ToolCallRecord = ToolCall  # the name before 0.2; kept for imports that use it


@dataclass(frozen=True, slots=True)
class RoundRecord:
    round: int
    request_id: str | None
    attempts: int
    usage: Usage
    finish_reason: str | None
    content: str
    tool_call_ids: tuple[str, ...]
    started_at: float
    first_chunk_at: float | None
    first_text_at: float | None
    finished_at: float
    cache_bust: str | None = None
    malformed_chunks: int = 0
    error: str | None = None
    speculative: bool = False  # started before the caller was done, then discarded (never heard)
    reasoning: str = ""  # reasoning_content / reasoning deltas: kept here, never spoken nor sent back


@dataclass(frozen=True, slots=True)
class TurnResult:
    user_text: str
    spoken_text: str  # every chunk handed to the TTS sink, filler and fallback included
    heard_text: str  # what the listener heard (== spoken_text unless interrupted)
    rounds: tuple[RoundRecord, ...]
    tool_calls: tuple[ToolCall, ...]
    time_to_first_text: float | None  # turn start -> first speakable chunk queued for the sink
    llm_done_at: float  # turn start -> last round over
    total: float  # turn start -> speech flushed (or the turn was interrupted)
    interrupted: bool = False
    fallback_spoken: bool = False
    error: str | None = None
    # Requests started early for this user turn and discarded because the caller went on.
    speculative_rounds: tuple[RoundRecord, ...] = ()

    @property
    def usage(self) -> Usage:
        total = Usage()
        for r in self.rounds:
            total = total + r.usage
        return total

    def cost(self, rates: Rates | None = None, *, stt_seconds: float = 0.0) -> TurnCost:
        """What this turn cost (``voiceagent.cost``): tokens fresh and cached, TTS characters synthesized vs.
        heard, STT seconds, priced at ``rates`` (zero rates by default: counts only)."""
        from voiceagent.cost import Rates, turn_cost  # cost builds on this module

        return turn_cost(self, rates or Rates(), stt_seconds=stt_seconds)

    @property
    def request_ids(self) -> tuple[str | None, ...]:
        return tuple(r.request_id for r in self.rounds)
