"""What one turn cost: LLM tokens fresh and cached, TTS characters synthesized vs. heard, STT seconds.

Pure: computed from a ``TurnResult`` (plus the STT seconds the session streamed) and your rates. Words a
barge-in cut were synthesized (paid for) and never heard; speculative requests discarded before the
caller finished were paid for too, so their tokens count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from voiceagent.events import Usage
from voiceagent.results import TurnResult


@dataclass(frozen=True, slots=True)
class Rates:
    """Prices in your currency. Defaults are 0: set your plan's rates (per million tokens, per thousand
    characters, per minute of audio)."""

    llm_fresh_per_mtok: float = 0.0
    llm_cached_per_mtok: float = 0.0
    llm_output_per_mtok: float = 0.0
    tts_per_kchar: float = 0.0
    stt_per_minute: float = 0.0


@dataclass(frozen=True, slots=True)
class TurnCost:
    fresh_tokens: int  # prompt tokens the server had to process (prompt - cached)
    cached_tokens: int
    completion_tokens: int
    tts_chars_synthesized: int
    tts_chars_heard: int
    stt_seconds: float
    llm: float
    tts: float
    stt: float

    @property
    def total(self) -> float:
        return self.llm + self.tts + self.stt

    @property
    def cache_hit_ratio(self) -> float | None:
        prompt = self.fresh_tokens + self.cached_tokens
        return self.cached_tokens / prompt if prompt else None

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "fresh_tokens": self.fresh_tokens,
            "cached_tokens": self.cached_tokens,
            "completion_tokens": self.completion_tokens,
            "tts_chars_synthesized": self.tts_chars_synthesized,
            "tts_chars_heard": self.tts_chars_heard,
            "stt_seconds": round(self.stt_seconds, 3),
            "cache_hit_ratio": None if self.cache_hit_ratio is None else round(self.cache_hit_ratio, 4),
            "cost": round(self.total, 6),
        }


def token_counts(usages: Iterable[Usage]) -> tuple[int, int, int]:
    """(fresh, cached, completion) tokens over these rounds' usage: fresh = prompt - cached."""
    prompt = cached = completion = 0
    for usage in usages:
        prompt += usage.prompt_tokens
        cached += min(usage.cached_tokens, usage.prompt_tokens)
        completion += usage.completion_tokens
    return prompt - cached, cached, completion


def turn_cost(result: TurnResult, rates: Rates = Rates(), *, stt_seconds: float = 0.0) -> TurnCost:
    fresh, cached, completion = token_counts(r.usage for r in (*result.rounds, *result.speculative_rounds))
    synthesized, heard = len(result.spoken_text), len(result.heard_text)
    llm = (
        fresh * rates.llm_fresh_per_mtok
        + cached * rates.llm_cached_per_mtok
        + completion * rates.llm_output_per_mtok
    ) / 1e6
    return TurnCost(
        fresh_tokens=fresh,
        cached_tokens=cached,
        completion_tokens=completion,
        tts_chars_synthesized=synthesized,
        tts_chars_heard=heard,
        stt_seconds=stt_seconds,
        llm=llm,
        tts=synthesized * rates.tts_per_kchar / 1000,
        stt=stt_seconds * rates.stt_per_minute / 60,
    )
