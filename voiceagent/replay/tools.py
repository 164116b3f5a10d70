"""Replaying tools: each call answered with its recorded result, or run for real (``substitute``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import anyio.from_thread
import anyio.to_thread

from voiceagent.logs import get_logger
from voiceagent.replay.cassette import (
    Cassette,
)
from voiceagent.replay.mismatch import ReplayMismatch
from voiceagent.tool_runner import ToolResult, ToolRunner

if TYPE_CHECKING:
    pass

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RecordedToolResult:
    call_id: str
    name: str
    result: str
    is_error: bool
    seconds: float


def recorded_tool_results(cassette: Cassette) -> dict[str, RecordedToolResult]:
    """Tool results by call id: from ``tool`` records, else from the ``tool`` messages of later requests."""
    out: dict[str, RecordedToolResult] = {
        t.call_id: RecordedToolResult(
            t.call_id, t.name, t.result, t.is_error, max(0.0, t.finished - t.started)
        )
        for t in cassette.tools
    }
    names: dict[str, str] = {}
    for exchange in cassette.exchanges:
        for m in exchange.request.messages:
            for call in m.get("tool_calls") or ():
                names[call.get("id", "")] = call.get("function", {}).get("name", "")
            if m.get("role") == "tool" and m.get("tool_call_id") not in out:
                call_id = str(m.get("tool_call_id"))
                content = str(m.get("content") or "")
                out[call_id] = RecordedToolResult(
                    call_id, names.get(call_id, ""), content, content.startswith("Error"), 0.0
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
        if self.speed and recorded.seconds:
            await anyio.sleep(recorded.seconds / self.speed)
        return ToolResult(call_id, name, recorded.result, recorded.is_error, started, time.monotonic())


# ---- STT -------------------------------------------------------------------------------------------
