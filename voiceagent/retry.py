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

        Exponential doubling capped at ``max_delay``; with jitter, "equal jitter": half of it fixed, half
        uniformly random, so many clients failing together do not retry in lockstep.
        """
        if attempt < 1:
            raise ValueError(f"attempt is 1-based, got {attempt}")
        # Cap the exponent first so huge attempt numbers cannot overflow.
        capped = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 64))
        if not self.jitter:
            return capped
        half = capped / 2
        return half + (rng or random).uniform(0, half)

    def is_retryable_status(self, status_code: int) -> bool:
        return status_code in self.retry_statuses
