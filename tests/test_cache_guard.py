"""CacheGuard: every way a request can fail to extend the previous one is reported, and only those."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from voiceagent.cache_guard import CacheBust, CacheGuard

SYSTEM = {"role": "system", "content": "You are a concise phone assistant."}
USER = {"role": "user", "content": "Weather in Paris?"}
ANSWER = {"role": "assistant", "content": "Sunny, 21 degrees."}
TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object"}},
}
OTHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "book_table", "parameters": {"type": "object"}},
}


def test_extending_requests_never_bust() -> None:
    guard = CacheGuard()
    assert guard.check([SYSTEM, USER], [TOOL]) is None  # the first request has nothing to compare with
    assert guard.check([SYSTEM, USER, ANSWER], [TOOL]) is None
    assert guard.check([SYSTEM, USER, ANSWER, USER], [TOOL]) is None
    assert guard.check([SYSTEM, USER, ANSWER, USER], [TOOL]) is None  # the same request again
    assert guard.busts == 0


def test_key_order_is_not_a_change() -> None:
    guard = CacheGuard()
    guard.check([{"role": "user", "content": "hi"}], None)
    assert guard.check([{"content": "hi", "role": "user"}], None) is None


def test_no_tools_and_an_empty_tools_list_are_the_same() -> None:
    guard = CacheGuard()
    guard.check([SYSTEM], None)
    assert guard.check([SYSTEM, USER], []) is None


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ([TOOL], [TOOL, OTHER_TOOL]),  # a tool added
        ([TOOL, OTHER_TOOL], [TOOL]),  # a tool removed
        ([TOOL, OTHER_TOOL], [OTHER_TOOL, TOOL]),  # reordered: the prompt prefix changes too
        ([TOOL], [{**TOOL, "function": {**TOOL["function"], "description": "now described"}}]),
        (None, [TOOL]),
    ],
)
def test_a_change_to_the_tools_is_reported(
    before: list[dict[str, Any]] | None, after: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    guard = CacheGuard()
    guard.check([SYSTEM, USER], before)
    with caplog.at_level(logging.WARNING, logger="voiceagent.cache_guard"):
        bust = guard.check([SYSTEM, USER, ANSWER], after)
    assert bust == CacheBust(-1, "the tools list changed")
    assert guard.busts == 1
    assert "prompt cache busted: the tools list changed" in caplog.text
    # The new tools are what the next request is compared with.
    assert guard.check([SYSTEM, USER, ANSWER, USER], after) is None
    assert guard.busts == 1


def test_removed_messages_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    guard = CacheGuard()
    guard.check([SYSTEM, USER, ANSWER, USER], [TOOL])
    with caplog.at_level(logging.WARNING, logger="voiceagent.cache_guard"):
        bust = guard.check([SYSTEM, USER], [TOOL])
    assert bust == CacheBust(2, "messages were removed after they were sent")
    assert guard.busts == 1
    assert "messages were removed" in caplog.text
    assert guard.check([SYSTEM, USER, ANSWER], [TOOL]) is None  # compared with the shorter one now


def test_a_changed_message_is_reported_at_its_index() -> None:
    guard = CacheGuard()
    guard.check([SYSTEM, USER, ANSWER], None)
    edited = {**ANSWER, "content": "Sunny, 22 degrees."}
    assert guard.check([SYSTEM, USER, edited, USER], None) == CacheBust(
        2, "message 2 changed after it was sent"
    )
    # The first difference is the one reported, even when a later message changed too.
    assert guard.check([{**SYSTEM, "content": "new"}, USER, ANSWER], None) == CacheBust(
        0, "message 0 changed after it was sent"
    )
    assert guard.busts == 2


def test_a_tools_change_is_reported_before_a_message_change() -> None:
    guard = CacheGuard()
    guard.check([SYSTEM, USER], [TOOL])
    assert guard.check([USER], [OTHER_TOOL]) == CacheBust(-1, "the tools list changed")
    assert guard.busts == 1
