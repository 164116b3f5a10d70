"""ToolRunner: runs one model-requested tool call and always returns a result the model can read.

Every tool problem (unknown name, bad JSON, bad arguments, the tool raising or timing out) becomes an error
``ToolResult`` so the turn can go on; only cancellation propagates. Starting calls concurrently is the
caller's job (the turn starts each call in its own task group as soon as its arguments are complete);
``run`` keeps no per-call state on the runner, so any number of calls may run at once.

Result content: a ``str`` return value is sent as-is; anything else, ``None`` included (-> ``null``), is
JSON: dataclasses via ``asdict``, pydantic-style models via ``model_dump``, enums by value, and any other
object by ``str()``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from voiceagent.errors import ToolDefinitionError
from voiceagent.logs import get_logger
from voiceagent.tools import Tool, ToolArgumentError

logger = get_logger(__name__)

# An exception's text goes back into the prompt: keep it short.
_MAX_ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What one tool call produced. Times are ``time.monotonic()`` seconds."""

    call_id: str
    name: str
    content: str
    is_error: bool
    started_at: float
    finished_at: float

    @property
    def duration(self) -> float:
        return self.finished_at - self.started_at


class ToolRunner:
    def __init__(self, tools: Sequence[Tool], *, default_timeout: float = 10.0) -> None:
        if not default_timeout > 0:
            raise ValueError("default_timeout must be a positive number of seconds")
        by_name: dict[str, Tool] = {}
        for t in tools:
            if t.name in by_name:
                raise ToolDefinitionError(f"two tools are named {t.name!r}")
            by_name[t.name] = t
        self._tools = by_name
        self.default_timeout = default_timeout

    @property
    def tools(self) -> list[Tool]:
        return list(self._tools.values())

    async def run(self, call_id: str, name: str, arguments: str) -> ToolResult:
        """Run one call. Never raises for tool problems; cancellation (e.g. barge-in) propagates.

        A tool with ``on_cancel="finish"`` is shielded from cancellation: it runs to the end (or to its
        timeout) and its result is returned; the caller's next checkpoint then sees the cancellation.
        """
        started_at = time.monotonic()
        tool = self._tools.get(name)
        if tool is None:
            available = ", ".join(self._tools) or "none"
            content, is_error = f'Error: unknown tool "{name}". Available: {available}.', True
        else:
            logger.debug("tool %s call_id=%s arguments=%s", name, call_id, arguments)
            content, is_error = await self._run_tool(tool, arguments)
        finished_at = time.monotonic()
        result = ToolResult(call_id, name, content, is_error, started_at, finished_at)
        logger.info(
            "tool %s call_id=%s finished in %.3f s is_error=%s",
            name,
            call_id,
            result.duration,
            is_error,
            extra={"tool": name, "call_id": call_id, "duration_s": result.duration, "is_error": is_error},
        )
        # The content may echo personal data the tool was given: DEBUG only.
        logger.debug("tool %s call_id=%s content=%s", name, call_id, content)
        return result

    async def _run_tool(self, tool: Tool, arguments: str) -> tuple[str, bool]:
        try:
            kwargs = _parse_arguments(tool, arguments)
        except ToolArgumentError as exc:
            return f"Error: {exc}", True

        timeout = tool.timeout if tool.timeout is not None else self.default_timeout
        failure: Exception | None = None
        value: Any = None
        # "finish" shields the call from the caller's cancellation; the timeout scope sits inside the
        # shield, so a timeout still stops (or, for a thread, abandons) it.
        with anyio.CancelScope(shield=tool.on_cancel == "finish"):
            with anyio.move_on_after(timeout) as deadline:
                try:
                    value = await _call(tool, kwargs)
                except Exception as exc:  # the tool's own failure; cancellation is a BaseException
                    failure = exc
        if deadline.cancelled_caught:
            return f"Error: {tool.name} timed out after {_seconds(timeout)} s.", True
        if failure is not None:
            logger.warning("tool %s raised %s", tool.name, type(failure).__name__)
            logger.debug("tool %s traceback", tool.name, exc_info=failure)
            return f"Error: {tool.name} failed: {_short(failure)}", True
        try:
            return _to_content(value), False
        except (TypeError, ValueError) as exc:
            return f"Error: {tool.name} returned a value that cannot be sent as JSON: {_short(exc)}", True


def _parse_arguments(tool: Tool, arguments: str) -> dict[str, Any]:
    # Some servers send "" for a call without arguments.
    if not arguments.strip():
        parsed: Any = {}
    else:
        try:
            parsed = json.loads(arguments)
        except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: hostile nesting depth
            raise ToolArgumentError(f"arguments for {tool.name} are not valid JSON ({exc}).") from exc
    if not isinstance(parsed, dict):
        kind = "array" if isinstance(parsed, list) else type(parsed).__name__
        raise ToolArgumentError(f"arguments for {tool.name} must be a JSON object, got {kind}.")
    try:
        return tool.bind(parsed)
    except ToolArgumentError as exc:
        raise ToolArgumentError(f"invalid arguments for {tool.name}: {exc}.") from exc


async def _call(tool: Tool, kwargs: dict[str, Any]) -> Any:
    if tool.is_async:
        return await tool.fn(**kwargs)
    # A thread cannot be stopped: on timeout or cancel ("cancel" policy) it is abandoned and runs on
    # unobserved; under "finish" only the timeout can reach it (see _run_tool).
    return await anyio.to_thread.run_sync(functools.partial(tool.fn, **kwargs), abandon_on_cancel=True)


def _seconds(value: float) -> str:
    # 2 -> "2.0", 0.05 -> "0.05": readable and never rounded to a misleading number
    return str(round(float(value), 2))


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


def _to_content(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):
        return model_dump(mode="json")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
