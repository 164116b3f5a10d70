"""Backoff for retryable LLM failures (HTTP 502/503, connection errors), as Electron's best practices advise:
start ~250 ms, double up to ~8 s, about 5 attempts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    base_delay: float = 0.25
    max_delay: float = 8.0
    max_attempts: int = 5  # attempts in total, the first one included
    jitter: bool = True
    retry_statuses: frozenset[int] = field(default_factory=lambda: frozenset({502, 503}))

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    def delay(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based) before the next one.

        Exponential doubling capped at ``max_delay``. With jitter the wait is drawn from
        [d, 1.5 d] for the doubled delay d, so it never comes earlier than the documented start (~250 ms
        for the first retry) and many clients failing together do not retry in lockstep; at the cap
        (1.5 d > ``max_delay``) from [min(d, 0.75 max_delay), max_delay].
        """
        if attempt < 1:
            raise ValueError(f"attempt is 1-based, got {attempt}")
        # Cap the exponent first so huge attempt numbers cannot overflow.
        capped = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 64))
        if not self.jitter:
            return capped
        high = min(capped * 1.5, self.max_delay)
        low = min(capped, 0.75 * high)
        return (rng or random).uniform(low, high)

    def is_retryable_status(self, status_code: int) -> bool:
        return status_code in self.retry_statuses
