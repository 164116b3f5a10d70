"""Conversation: the message list, shaped for prefix caching.

Electron (like most servers) caches the longest prompt prefix it has seen. So the stable parts go
first and never change: the system prompt, then fixed context blocks. History is append-only and the
new user message goes last. Anything variable (time, caller data) belongs in a user message, not in
the system prompt.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

Message = dict[str, Any]


class Conversation:
    def __init__(self, system: str, context: Sequence[str] = ()) -> None:
        prefix: list[Message] = [{"role": "system", "content": system}]
        prefix += [{"role": "system", "content": block} for block in context]
        self._prefix: tuple[Message, ...] = tuple(prefix)
        self._history: list[Message] = []

    @property
    def prefix(self) -> tuple[Message, ...]:
        return self._prefix

    @property
    def history(self) -> tuple[Message, ...]:
        return tuple(self._history)

    def messages(self) -> list[Message]:
        """A fresh list (callers may not mutate the conversation through it) of deep-enough copies."""
        return [_copy(m) for m in (*self._prefix, *self._history)]

    def __len__(self) -> int:
        return len(self._prefix) + len(self._history)

    # -- append-only -----------------------------------------------------------------------------

    def add_user(self, text: str) -> None:
        self._history.append({"role": "user", "content": text})

    def add_assistant(self, content: str | None, tool_calls: Sequence[dict[str, Any]] = ()) -> None:
        message: Message = {"role": "assistant", "content": content or None}
        if tool_calls:
            message["tool_calls"] = [_copy(c) for c in tool_calls]
        elif not content:
            return  # an empty assistant message adds nothing and some servers reject it
        self._history.append(message)

    def add_tool_result(self, tool_call_id: str, content: str) -> None:
        self._history.append({"role": "tool", "tool_call_id": tool_call_id, "content": content})

    def unanswered_tool_calls(self) -> list[str]:
        """Ids of tool calls that have no tool message yet (servers reject such a conversation)."""
        answered = {m["tool_call_id"] for m in self._history if m["role"] == "tool"}
        return [
            call["id"]
            for m in self._history
            if m["role"] == "assistant"
            for call in m.get("tool_calls", ())
            if call["id"] not in answered
        ]


def tool_call_message(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _copy(message: Message) -> Message:
    return json.loads(json.dumps(message))  # type: ignore[no-any-return]
