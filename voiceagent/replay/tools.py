"""Replaying tools: each call answered with its recorded result, or run for real (``substitute``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

import anyio

from voiceagent.replay.cassette import Cassette
from voiceagent.replay.mismatch import ReplayMismatch
from voiceagent.results import ToolCall
from voiceagent.tool_runner import ToolResult, ToolRunner


def recorded_tool_results(cassette: Cassette) -> dict[str, ToolCall]:
    """Tool calls by call id: the cassette's ``tool`` records, else one made from the ``tool`` messages
    of later requests (no arguments, no time)."""
    out: dict[str, ToolCall] = {t.call.call_id: t.call for t in cassette.tools}
    names: dict[str, str] = {}
    for exchange in cassette.exchanges:
        for m in exchange.request.messages:
            for call in m.get("tool_calls") or ():
                names[call.get("id", "")] = call.get("function", {}).get("name", "")
            if m.get("role") == "tool" and m.get("tool_call_id") not in out:
                call_id = str(m.get("tool_call_id"))
                content = str(m.get("content") or "")
                out[call_id] = ToolCall(
                    0,
                    call_id,
                    names.get(call_id, ""),
                    "",
                    content,
                    content.startswith("Error"),
                    0.0,
                    0.0,
                    0.0,
                )
    return out


class ReplayToolRunner(ToolRunner):
    """Serves recorded tool results for the tools in ``names`` (None: every tool); runs the others."""

    def __init__(
        self,
        inner: ToolRunner,
        cassette: Cassette,
        names: Collection[str] | None = None,
        *,
        on_missing: Callable[[ReplayMismatch], None] | None = None,
        speed: float = 0.0,
    ) -> None:
        super().__init__(inner.tools, default_timeout=inner.default_timeout)
        self.inner = inner
        self.names = None if names is None else frozenset(names)
        self.recorded = recorded_tool_results(cassette)
        self.cassette_name = cassette.name
        self.on_missing = on_missing
        self.speed = speed

    async def run(self, call_id: str, name: str, arguments: str) -> ToolResult:
        if self.names is not None and name not in self.names:
            return await self.inner.run(call_id, name, arguments)
        started = time.monotonic()
        recorded = self.recorded.get(call_id)
        if recorded is None or (recorded.name and recorded.name != name):
            message = f"{self.cassette_name}: no recorded result for tool call {call_id} ({name})"
            if self.on_missing is not None:
                self.on_missing(ReplayMismatch(message))
            return ToolResult(call_id, name, f"Error: {message}", True, started, time.monotonic())
        seconds = max(0.0, recorded.duration)
        if self.speed and seconds:
            await anyio.sleep(seconds / self.speed)
        return ToolResult(call_id, name, recorded.result, recorded.is_error, started, time.monotonic())
