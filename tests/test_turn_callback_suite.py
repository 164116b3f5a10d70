"""The turn's whole test suite again with ``LLMClient(read_callback=True)``: the read-callback path
(``LLMStream.feed_until``, h1 push mode) must behave exactly as the task loop does."""

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
def _reads_in_the_callback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    init = LLMClient.__init__

    def with_callback(self: LLMClient, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("read_callback", True)
        init(self, *args, **kwargs)

    monkeypatch.setattr(LLMClient, "__init__", with_callback)
    yield
