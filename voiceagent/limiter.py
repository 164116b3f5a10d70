"""Client-side caps on in-flight LLM requests, so the server never has to answer 429.

Electron plans: standard = 3 concurrent requests, enterprise = 20. Over the cap the server answers
HTTP 429 "Concurrency limit reached"; waiting here instead costs nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol, runtime_checkable

import anyio

PLAN_CONCURRENCY: dict[str, int] = {"standard": 3, "enterprise": 20}


@runtime_checkable
class Limiter(Protocol):
    """Anything that hands out request slots: in-process (``ConcurrencyLimiter``) or shared (Redis)."""

    def slot(self) -> AbstractAsyncContextManager[None]:
        """An async context manager holding one in-flight slot for its body."""
        ...


class ConcurrencyLimiter:
    """In-process limiter: at most ``limit`` requests in flight, the rest wait in FIFO order."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self._limiter = anyio.CapacityLimiter(limit)

    @classmethod
    def for_plan(cls, plan: str) -> ConcurrencyLimiter:
        try:
            return cls(PLAN_CONCURRENCY[plan])
        except KeyError:
            raise ValueError(f"unknown plan {plan!r}; expected one of {sorted(PLAN_CONCURRENCY)}") from None

    @property
    def in_flight(self) -> int:
        return int(self._limiter.borrowed_tokens)

    @property
    def waiting(self) -> int:
        return int(self._limiter.statistics().tasks_waiting)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        # A fresh borrower per slot: anyio refuses a second borrow by the same task, and one task
        # may legitimately hold two slots (say, a turn and a background summary).
        borrower = object()
        await self._limiter.acquire_on_behalf_of(borrower)
        try:
            yield
        finally:
            self._limiter.release_on_behalf_of(borrower)
