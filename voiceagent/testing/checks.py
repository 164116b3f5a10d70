"""Checks for tests: is this message history one an OpenAI-compatible server accepts?"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def conversation_problems(history: Iterable[Mapping[str, Any]]) -> list[str]:
    """What a server would reject in ``history`` (empty when valid): each assistant tool call must be
    answered by a ``tool`` message right after it, ids must not repeat, and an assistant message must
    carry words or tool calls."""
    problems: list[str] = []
    expected: list[str] = []
    seen: set[str] = set()
    for i, m in enumerate(history):
        role = m.get("role")
        if role == "tool":
            if not expected or m.get("tool_call_id") != expected[0]:
                problems.append(
                    f"message {i}: tool message for {m.get('tool_call_id')!r} answers no pending call"
                )
            else:
                expected.pop(0)
            continue
        if expected:
            problems.append(f"message {i}: tool calls {expected} unanswered before a {role} message")
            expected = []
        if role == "assistant":
            ids = [c.get("id") for c in m.get("tool_calls") or ()]
            if not m.get("content") and not ids:
                problems.append(f"message {i}: empty assistant message")
            repeated = {x for x in ids if ids.count(x) > 1} | (seen & set(ids))
            if repeated:
                problems.append(f"message {i}: repeated tool_call ids {sorted(map(str, repeated))}")
            seen |= {str(x) for x in ids}
            expected = [str(x) for x in ids]
    if expected:
        problems.append(f"tool calls {expected} unanswered at the end")
    return problems


def assert_valid_conversation(history: Iterable[Mapping[str, Any]]) -> None:
    problems = conversation_problems(history)
    assert not problems, problems
