"""ToolRunner: runs one model-requested tool call and always returns a result the model can read.

Every tool problem (unknown name, bad JSON, bad arguments, the tool raising or timing out) becomes an error
``ToolResult`` so the turn can go on; only the turn's own cancellation propagates. "Raising" means any
``BaseException``: ``SystemExit`` (argparse inside a tool), ``KeyboardInterrupt``, and a ``CancelledError``
the tool raised by itself while nobody cancelled it (then the user's message is not lost). The error text
the model reads is redacted (``logs.redact``: registered secrets, keys, credentials in URLs).

Bounds: sync tools run in threads from this runner's own budget (``max_threads``, default 8), not anyio's
process-wide 40, so one call's stuck tools never delay another call's; a result longer than
``max_result_chars`` (default 16,000) is cut, with a note saying so. Starting calls concurrently is the
caller's job (the turn starts each call in its own task group as soon as its arguments are complete);
``run`` keeps no per-call state on the runner, so any number of calls may run at once.

Result content: a ``str`` return value is sent as-is; anything else, ``None`` included (-> ``null``), is
JSON: dataclasses via ``asdict``, pydantic-style models via ``model_dump``, enums by value, and any other
object by ``str()``; NaN and infinities become ``null`` (the JSON stays valid). Registered secrets
(``register_secret``) are replaced in every result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from voiceagent.errors import ToolDefinitionError
from voiceagent.logs import get_logger, redact, redact_secrets
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
    """Runs one conversation's tool calls. Make one per call (an ``Agent`` does): its thread budget is
    that call's alone."""

    def __init__(
        self,
        tools: Sequence[Tool],
        *,
        default_timeout: float = 10.0,
        max_threads: int = 8,
        max_result_chars: int = 16_000,
    ) -> None:
        if not default_timeout > 0:
            raise ValueError("default_timeout must be a positive number of seconds")
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, got {max_threads}")
        if max_result_chars < 1:
            raise ValueError(f"max_result_chars must be at least 1, got {max_result_chars}")
        by_name: dict[str, Tool] = {}
        for t in tools:
            if t.name in by_name:
                raise ToolDefinitionError(f"two tools are named {t.name!r}")
            by_name[t.name] = t
        self._tools = by_name
        self.default_timeout = default_timeout
        self.max_threads = max_threads
        self.max_result_chars = max_result_chars
        # A tool that times out gives its token back at once (its thread is abandoned and runs on).
        self.thread_limiter = anyio.CapacityLimiter(max_threads)

    @property
    def tools(self) -> list[Tool]:
        return list(self._tools.values())

    def add(self, tool: Tool) -> None:
        """Offer one more tool (a turn reads the tools once, when it starts)."""
        if tool.name in self._tools:
            raise ToolDefinitionError(f"two tools are named {tool.name!r}")
        self._tools[tool.name] = tool

    def with_tools(self, extra: Sequence[Tool]) -> ToolRunner:
        """A view of this runner with ``extra`` tools on top, for one session (``Session`` offers the
        built-in call tools this way, so one ``Agent`` serves call after call). This runner is unchanged;
        its own tools still run through it, and the view shares its thread budget.
        Raises ``ToolDefinitionError`` when a name is taken."""
        return _WithTools(self, extra)

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
        failure: BaseException | None = None
        value: Any = None
        # "finish" shields the call from the caller's cancellation; the timeout scope sits inside the
        # shield, so a timeout still stops (or, for a thread, abandons) it.
        with anyio.CancelScope(shield=tool.on_cancel == "finish"):
            with anyio.move_on_after(timeout) as deadline:
                try:
                    value = await _call(tool, kwargs, self.thread_limiter)
                except Exception as exc:  # the tool's own failure
                    failure = exc
                except anyio.get_cancelled_exc_class() as exc:
                    if _really_cancelled():
                        raise  # the turn's cancellation (barge-in, hang-up) or the timeout above
                    await anyio.lowlevel.checkpoint_if_cancelled()  # a cancelled scope re-raises here
                    failure = exc  # the tool raised CancelledError by itself: its failure, not ours
                except GeneratorExit:
                    raise  # this coroutine is being closed: nothing may run after it
                except BaseException as exc:  # SystemExit, KeyboardInterrupt...: must not end the process
                    failure = exc
        if deadline.cancelled_caught:
            return f"Error: {tool.name} timed out after {_seconds(timeout)} s.", True
        if failure is not None:
            logger.warning("tool %s raised %s", tool.name, type(failure).__name__)
            logger.debug("tool %s traceback", tool.name, exc_info=failure)
            return f"Error: {tool.name} failed: {_short(failure)}", True
        try:
            content = redact_secrets(_to_content(value))
        except (TypeError, ValueError, RecursionError) as exc:
            return f"Error: {tool.name} returned a value that cannot be sent as JSON: {_short(exc)}", True
        return _capped(content, self.max_result_chars), False


class _WithTools(ToolRunner):
    def __init__(self, inner: ToolRunner, extra: Sequence[Tool]) -> None:
        super().__init__(
            [*inner.tools, *extra],
            default_timeout=inner.default_timeout,
            max_threads=inner.max_threads,
            max_result_chars=inner.max_result_chars,
        )
        self.inner = inner
        self.thread_limiter = inner.thread_limiter
        self._extra = frozenset(t.name for t in extra)

    async def run(self, call_id: str, name: str, arguments: str) -> ToolResult:
        if name in self._extra:
            return await super().run(call_id, name, arguments)
        return await self.inner.run(call_id, name, arguments)  # a wrapped runner (replay) keeps its role


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


async def _call(tool: Tool, kwargs: dict[str, Any], limiter: anyio.CapacityLimiter) -> Any:
    if tool.is_async:
        return await tool.fn(**kwargs)
    # A thread cannot be stopped: on timeout or cancel ("cancel" policy) it is abandoned and runs on
    # unobserved; under "finish" only the timeout can reach it (see _run_tool).
    call = functools.partial(tool.fn, **kwargs)
    return await anyio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=limiter)


def _really_cancelled() -> bool:
    """Whether a CancelledError caught around a tool is a cancellation of this task (not one the tool
    raised by itself). On asyncio a cancelled task has a pending cancel request; trio's Cancelled cannot
    be raised by user code, so there it is always real."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no asyncio loop: trio
        return True
    return task is None or task.cancelling() > 0


def _capped(content: str, limit: int) -> str:
    # A huge result would stay in the history and make every later request too big (HTTP 400).
    if len(content) <= limit:
        return content
    note = f"\n[truncated: the tool returned {len(content):,} characters; only the first {limit:,} are shown]"
    return content[:limit] + note


def _seconds(value: float) -> str:
    # 2 -> "2.0", 0.05 -> "0.05": readable and never rounded to a misleading number
    return str(round(float(value), 2))


def _short(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception:  # an exception whose __str__ raises still gets reported by its type
        message = ""
    # Redacted before it is cut, so a secret can never be half-cut past recognition.
    text = redact(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


def _to_content(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=_json_default, allow_nan=False)
    except ValueError:
        # NaN or an infinity somewhere (json would write NaN/Infinity, which is not JSON): round-trip
        # through plain JSON types and write those as null. Any other ValueError (a cycle) raises again.
        plain = json.loads(json.dumps(value, ensure_ascii=False, default=_json_default))
        return json.dumps(_finite(plain), ensure_ascii=False, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


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
