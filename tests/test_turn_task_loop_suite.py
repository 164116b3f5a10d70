"""The turn's whole test suite again with ``LLMClient(read_callback=False)``: the task loop (``async
for`` over the stream, a wake-up per chunk), which the SDK and aiohttp read paths and every other
``ChatStreamer`` use, must behave exactly as the default read-callback path (``LLMStream.feed_until``,
h1 push mode) does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.test_faults import *  # noqa: F403
from tests.test_turn import *  # noqa: F403
from tests.test_turn_limits import *  # noqa: F403
from tests.test_turn_scripts import *  # noqa: F403
from voiceagent.llm import LLMClient


@pytest.fixture(autouse=True)
def _reads_in_the_task(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    init = LLMClient.__init__

    def in_the_task(self: LLMClient, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("read_callback", False)
        init(self, *args, **kwargs)

    monkeypatch.setattr(LLMClient, "__init__", in_the_task)
    yield
