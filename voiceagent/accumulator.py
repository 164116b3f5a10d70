"""DeltaAccumulator: pure state machine from chat-completion chunks (plain dicts) to stream events.

It knows the quirks of OpenAI-compatible streams (see shared PROTOCOLS.md §5): the usage chunk has
``choices: []``; Electron's finish chunk may have no ``delta``; ``id``/``name`` arrive only on a tool
call's first fragment; later fragments carry only ``index`` and argument text.

A tool call is *ready* (may start) as soon as its arguments are known to be complete:
- its argument text parses as a JSON object (cheap check, only when it ends in ``}``): the fastest
  signal, it does not wait for the next chunk;
- ``finish_reason`` arrives, or the stream ends cleanly.

A fragment for a higher index is *not* taken as the end of the lower calls: a server may interleave the
fragments of parallel calls, and a call started on half its arguments cannot be taken back. (Calls
that never form a JSON object, e.g. ``""`` for no arguments, wait for the finish instead.)

Each dispatched call gets a distinct id: a missing id becomes ``call_<index>``, and an id already
taken by another call of the stream gets an ``_<index>`` suffix, so every tool message answers
exactly one call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from voiceagent.events import (
    StreamEvent,
    StreamFinished,
    TextDelta,
    ToolCallReady,
    ToolCallStarted,
    Usage,
    UsageReported,
)


@dataclass(slots=True)
class _PendingCall:
    index: int
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    ready: bool = False

    @property
    def argument_text(self) -> str:
        return "".join(self.arguments)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _is_complete_object(text: str) -> bool:
    stripped = text.rstrip()
    if not stripped.endswith("}"):
        return False
    try:
        return isinstance(json.loads(stripped), dict)
    except ValueError:
        return False


class DeltaAccumulator:
    """Feed it chunk dicts in order; it returns the events each chunk completes."""

    def __init__(self) -> None:
        self.content_parts: list[str] = []
        self._calls: dict[int, _PendingCall] = {}
        self._ids: set[str] = set()  # ids of dispatched calls
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.response_id: str | None = None
        self.model: str | None = None
        self.chunks_seen = 0
        # Fragments that arrived for a call already dispatched: kept so nothing is silently lost.
        self.late_fragments: list[tuple[int, str]] = []

    # -- inputs ------------------------------------------------------------------------------------

    def feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        self.chunks_seen += 1
        events: list[StreamEvent] = []
        if self.response_id is None and isinstance(chunk.get("id"), str):
            self.response_id = chunk["id"]
        if self.model is None and isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        # Checked inline rather than through _dict/_list: this runs once per streamed token.
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n>1 is rejected by Electron; other choices are never ours
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str) and content:
                    self.content_parts.append(content)
                    events.append(TextDelta(content))
                fragments = delta.get("tool_calls")
                if isinstance(fragments, list):
                    for fragment in fragments:
                        if isinstance(fragment, dict):
                            events.extend(self._feed_tool_fragment(fragment))
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                events.extend(self._dispatch_pending())
                self.finish_reason = reason
                events.append(StreamFinished(reason))
        usage = chunk.get("usage")
        if isinstance(usage, dict) and "prompt_tokens" in usage:
            self.usage = Usage.from_dict(usage)
            events.append(UsageReported(self.usage))
        return events

    def end(self) -> list[StreamEvent]:
        """The stream ended cleanly (``[DONE]``): whatever is still pending is complete."""
        events = self._dispatch_pending()
        if self.finish_reason is None:
            self.finish_reason = "tool_calls" if self._calls else "stop"
            events.append(StreamFinished(self.finish_reason))
        return events

    # -- results -----------------------------------------------------------------------------------

    @property
    def content(self) -> str:
        return "".join(self.content_parts)

    @property
    def ready_calls(self) -> list[ToolCallReady]:
        """Dispatched tool calls in index order (the order their tool messages must follow)."""
        return [
            ToolCallReady(c.index, c.id, c.name, c.argument_text)
            for c in sorted(self._calls.values(), key=lambda c: c.index)
            if c.ready
        ]

    @property
    def has_tool_calls(self) -> bool:
        return bool(self._calls)

    # -- internals ---------------------------------------------------------------------------------

    def _feed_tool_fragment(self, fragment: dict[str, Any]) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        index = fragment.get("index")
        if not isinstance(index, int):
            # No index (non-conforming server): an id opens a new call, otherwise it continues the last.
            last = max(self._calls, default=-1)
            index = last + 1 if fragment.get("id") or last < 0 else last
        call = self._calls.get(index)
        if call is None:
            call = self._calls[index] = _PendingCall(index)
        function = _dict(fragment.get("function"))
        arguments = function.get("arguments")
        if call.ready:
            if isinstance(arguments, str) and arguments:
                self.late_fragments.append((index, arguments))
            return events
        if isinstance(fragment.get("id"), str) and fragment["id"]:
            call.id = fragment["id"]
        name = function.get("name")
        if isinstance(name, str) and name and not call.name:
            call.name = name
            events.append(ToolCallStarted(index, call.id, call.name))
        if isinstance(arguments, str) and arguments:
            call.arguments.append(arguments)
            if _is_complete_object(call.argument_text):
                events.append(self._mark_ready(call))
        return events

    def _dispatch_pending(self) -> list[StreamEvent]:
        return [self._mark_ready(self._calls[i]) for i in sorted(self._calls) if not self._calls[i].ready]

    def _mark_ready(self, call: _PendingCall) -> ToolCallReady:
        call.ready = True
        if not call.id:
            call.id = f"call_{call.index}"  # some servers omit ids; the tool message still needs one
        while call.id in self._ids:
            call.id = f"{call.id}_{call.index}"  # a repeated id would leave one call unanswered
        self._ids.add(call.id)
        return ToolCallReady(call.index, call.id, call.name, call.argument_text)
