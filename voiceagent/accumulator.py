"""DeltaAccumulator: pure state machine from chat-completion chunks (plain dicts) to stream events.

It knows the quirks of OpenAI-compatible streams (the provider corpus in
``tests/provider_corpus``): the usage chunk has ``choices: []`` (Groq puts usage in ``x_groq``); Electron's
finish chunk may have no ``delta``; ``id``/``name`` usually arrive only on a tool call's first fragment and
later fragments carry only ``index`` and argument text, but some servers stream the name in pieces (Gemini:
``"edit_ex"`` + ``"isting_file"``, concatenated) or repeat the whole name or id on every fragment (MiniMax via
NIM, vLLM: kept once), and some send several whole calls under one ``index`` (Ollama, LiteLLM): a new ``id``
at an index whose call has another id is a new call. Fields of a call this module does not know (Gemini's
``extra_content.google.thought_signature``) are kept and sent back as received. ``reasoning_content`` /
``reasoning`` deltas are collected apart from the content: they are never spoken.

A tool call is *ready* (may start) as soon as its arguments are known to be complete:
- its argument text parses as a JSON object (cheap check, only when it ends in ``}``): the fastest
  signal, it does not wait for the next chunk;
- ``finish_reason`` arrives, or the stream ends cleanly, or another call takes its index.

A fragment for a higher index is *not* taken as the end of the lower calls: a server may interleave the
fragments of parallel calls, and a call started on half its arguments cannot be taken back. (Calls
that never form a JSON object, e.g. ``""`` for no arguments, wait for the finish instead.)

Accumulating is linear in the size of the arguments: the text is joined and parsed only when a fragment
closes a ``}``, and past ``_SMALL_ARGUMENTS`` characters only once it has doubled since the last try, so
an adversarial stream of ``}`` fragments costs O(n) parses in total, not O(n^2).

Each dispatched call gets a distinct id: a missing id becomes ``call_<index>``, and an id already
taken by another call of the stream gets an ``_<n>`` suffix (``n`` its position among the calls), so
every tool message answers exactly one call.
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
from voiceagent.logs import get_logger

logger = get_logger(__name__)

# Keys of a tool-call fragment this module reads; any other key is the server's own and is sent back.
_KNOWN_CALL_KEYS = frozenset({"index", "id", "type", "function"})
# Argument texts up to this size are parsed at every closing brace; larger ones when they have doubled.
_SMALL_ARGUMENTS = 1024


@dataclass(slots=True)
class _PendingCall:
    index: int  # the wire index (several calls may share one)
    seq: int  # position among the stream's calls, in arrival order
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    size: int = 0  # characters in ``arguments``
    tried_at: int = 0  # ``size`` at the last parse attempt
    extra: dict[str, Any] | None = None
    ready: ToolCallReady | None = None
    late: bool = False  # a fragment arrived after dispatch (logged once)

    @property
    def argument_text(self) -> str:
        return "".join(self.arguments)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _is_complete_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):  # RecursionError: hostile nesting depth
        return False


def _merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    """Unknown per-call fields, merged as received: nested objects key by key, anything else replaced.
    Nulls carry nothing (LiteLLM's ``provider_specific_fields: null``) and are not sent back."""
    for key, value in more.items():
        old = into.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            merged = dict(old)
            _merge(merged, value)
            into[key] = merged
        elif value is not None:
            into[key] = value


class DeltaAccumulator:
    """Feed it chunk dicts in order; it returns the events each chunk completes."""

    def __init__(self) -> None:
        self.content_parts: list[str] = []
        self.reasoning_parts: list[str] = []
        self._calls: dict[int, _PendingCall] = {}  # wire index -> its latest call
        self._all: list[_PendingCall] = []  # every call, in arrival order
        self._ids: set[str] = set()  # ids of dispatched calls
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.response_id: str | None = None
        self.model: str | None = None
        self.chunks_seen = 0
        # Fragments that arrived for a call already dispatched: kept (and logged) so nothing is lost unseen.
        self.late_fragments: list[tuple[int, str]] = []

    # -- inputs ------------------------------------------------------------------------------------

    def feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        # The commonest chunk by far (see feed_text) first: the general path below gives exactly this.
        text = self.feed_text(chunk)
        if text is not None:
            return [TextDelta(text)]
        self.chunks_seen += 1
        return self._feed(chunk)

    def feed_text(self, chunk: dict[str, Any]) -> str | None:
        """The commonest chunk by far, one choice whose delta is only content, no finish and no usage:
        taken in (as ``feed`` would, whose events would be ``[TextDelta(text)]``) and its text returned.
        None for any other chunk, which is left untouched: give it to ``feed``. (The turn's read callback
        calls it, to skip the event list for the usual token; tests/test_fast_paths.py holds it to
        ``feed``'s general path.)"""
        if self.model is not None and self.response_id is not None:
            try:
                # Indexing proves the shape: one choice (a list of one; a one-key object or a
                # one-character string unpacks to a string, which the next index rejects), an object
                # choice and an object delta (a list or string indexed by a string is a TypeError).
                (choice,) = chunk["choices"]
                delta = choice["delta"]
                content = delta["content"]
            except (LookupError, TypeError, ValueError):
                return None
            if (
                type(content) is str
                and content
                and len(delta) == 1
                and choice.get("finish_reason") is None
                and choice.get("index", 0) == 0
                and chunk.get("usage") is None
                and "x_groq" not in chunk
            ):
                self.chunks_seen += 1
                self.content_parts.append(content)
                return content
        return None

    def _feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
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
                # DeepSeek, xAI and vLLM<0.10 say reasoning_content; Groq, Ollama, OpenRouter, vLLM say
                # reasoning. A server sending both sends the same text twice: one is kept.
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if isinstance(reasoning, str) and reasoning:
                    self.reasoning_parts.append(reasoning)
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
        if not isinstance(usage, dict):
            groq = chunk.get("x_groq")  # Groq sends the stream's usage only here
            usage = groq.get("usage") if isinstance(groq, dict) else None
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
    def reasoning(self) -> str:
        """The model's reasoning text (never spoken), empty if the server sent none."""
        return "".join(self.reasoning_parts)

    @property
    def ready_calls(self) -> list[ToolCallReady]:
        """Dispatched tool calls in index order, arrival order within an index (the order their tool
        messages must follow)."""
        return [c.ready for c in sorted(self._all, key=lambda c: (c.index, c.seq)) if c.ready is not None]

    @property
    def has_tool_calls(self) -> bool:
        return bool(self._calls)

    # -- internals ---------------------------------------------------------------------------------

    def _feed_tool_fragment(self, fragment: dict[str, Any]) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        index = fragment.get("index")
        call_id = fragment.get("id")
        if not isinstance(call_id, str):
            call_id = ""
        if not isinstance(index, int):
            # No index (non-conforming server): an id opens a new call, otherwise it continues the last.
            last = max(self._calls, default=-1)
            opens = last < 0 or (call_id and call_id != self._calls[last].id)
            index = last + 1 if opens else last
        function = _dict(fragment.get("function"))
        name = function.get("name")
        arguments = function.get("arguments")
        call = self._calls.get(index)
        if call is not None and call_id and call.id and call_id != call.id:
            # Another call at this index (Ollama, LiteLLM, Gemini proxies send whole calls at index 0):
            # the one there is over.
            if call.ready is None:
                events.append(self._mark_ready(call))
            call = None
        elif call is not None and call.ready is not None and not call_id and name and name != call.name:
            call = None  # a whole call without an id after a finished one at the same index
        if call is None:
            call = self._calls[index] = _PendingCall(index, len(self._all))
            self._all.append(call)
        if call.ready is not None:
            if isinstance(arguments, str) and arguments:
                self.late_fragments.append((index, arguments))
                if not call.late:
                    call.late = True
                    logger.warning(
                        "tool call %s (%s) got argument text after its arguments were complete; kept in "
                        "late_fragments, not sent to the tool",
                        call.id,
                        call.name,
                    )
            return events
        if call_id and not call.id:
            call.id = call_id
        if len(fragment) > 4 or not _KNOWN_CALL_KEYS.issuperset(fragment):
            extra = call.extra or {}
            _merge(extra, {k: v for k, v in fragment.items() if k not in _KNOWN_CALL_KEYS})
            call.extra = extra or None
        if isinstance(name, str) and name and name != call.name:
            # Pieces are concatenated; a server repeating the whole name on every fragment is not.
            first = not call.name
            call.name += name
            if first:
                events.append(ToolCallStarted(index, call.id, call.name))
        if isinstance(arguments, str) and arguments:
            call.arguments.append(arguments)
            call.size += len(arguments)
            if arguments.rstrip().endswith("}") and (
                call.size <= _SMALL_ARGUMENTS or call.size >= 2 * call.tried_at
            ):
                call.tried_at = call.size
                if _is_complete_object(call.argument_text):
                    events.append(self._mark_ready(call))
        return events

    def _dispatch_pending(self) -> list[StreamEvent]:
        return [self._mark_ready(c) for c in sorted(self._all, key=lambda c: c.index) if c.ready is None]

    def _mark_ready(self, call: _PendingCall) -> ToolCallReady:
        if not call.id:
            call.id = f"call_{call.index}"  # some servers omit ids; the tool message still needs one
        while call.id in self._ids:
            call.id = f"{call.id}_{call.seq}"  # a repeated id would leave one call unanswered
        self._ids.add(call.id)
        call.ready = ToolCallReady(call.index, call.id, call.name, call.argument_text, call.extra)
        return call.ready
