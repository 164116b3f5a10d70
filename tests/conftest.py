"""Shared test set-up: the fast retry policy, the fake OpenAI server fixture, a pausable listener clock,
and the ``slow`` marker.

``./dev.sh test`` runs everything; ``pytest -m "not slow"`` skips the soak, browser, redis and example
runs for a quick local loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import settings

from voiceagent import audio_output
from voiceagent.retry import RetryPolicy
from voiceagent.testing.openai_server import FakeOpenAIServer

# Hypothesis' per-example deadline is a wall-clock assert: on a shared 2-core machine the first example
# of a test (imports, a cold SDK model) can take 0.5 s. Correctness is what the property tests check.
settings.register_profile("voiceagent", deadline=None)
settings.load_profile("voiceagent")

# Whole files that start real processes (redis-server, Chromium, example scripts) or run for long.
# Marked here, by file, so those files need no edit and a new slow file is one line.
SLOW_FILES = frozenset(
    {
        "test_soak.py",
        "test_web_browser.py",
        "test_redis_limiter.py",
        "test_examples.py",
        "test_demo.py",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def anyio_backend() -> str:
    """The suite runs on asyncio (anyio's plugin would also run every anyio test on trio if installed)."""
    return "asyncio"


def fast_retry(**overrides: Any) -> RetryPolicy:
    """The retry policy tests use: real retries, millisecond back-off (a test never waits on it)."""
    return RetryPolicy(**({"base_delay": 0.001, "max_delay": 0.002} | overrides))


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAIServer]:
    """A fake OpenAI-compatible server on loopback; files with a ``server`` of their own override it."""
    async with FakeOpenAIServer() as s:
        yield s


class ListenerClock:
    """The clock of the simulated listener in ``voiceagent.audio_output`` (realtime WAV output).

    Paused, the listener hears nothing more however long the machine stalls, so "written but not yet
    heard" is a fact, not a race; resumed, it runs on in real time from where it stopped.
    """

    def __init__(self) -> None:
        self._paused_at: float | None = None
        self._lost = 0.0  # real time spent paused

    def __call__(self) -> float:
        now = anyio.current_time() if self._paused_at is None else self._paused_at
        return now - self._lost

    def pause(self) -> None:
        assert self._paused_at is None, "already paused"
        self._paused_at = anyio.current_time()

    def resume(self) -> None:
        assert self._paused_at is not None, "not paused"
        self._lost += anyio.current_time() - self._paused_at
        self._paused_at = None


class _AnyioWithClock:
    """``anyio`` as ``voiceagent.audio_output`` sees it, but for ``current_time``."""

    def __init__(self, clock: ListenerClock) -> None:
        self.current_time = clock

    def __getattr__(self, name: str) -> Any:
        return getattr(anyio, name)


@pytest.fixture
def listener_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[ListenerClock]:
    clock = ListenerClock()
    monkeypatch.setattr(audio_output, "anyio", _AnyioWithClock(clock))
    yield clock
