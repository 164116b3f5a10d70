"""``checkpoint_if_cancelled``: anyio's, at a fraction of its cost on asyncio (the speech lane calls it
once per spoken chunk).

anyio's version looks the backend up (sniffio, on every call), then walks the task's cancel scopes,
reading two properties per scope. On asyncio this walks the same scopes and reads the same fields; only
when it finds a cancelled scope does it call anyio's own function, which then delivers the cancellation
exactly as it always does. The anyio internals it reads (the task-state map, a scope's parent, cancel
and shield fields) are checked once at import; if any is missing (another anyio), anyio's function is
used as is. ``tests/test_speak_path.py`` checks both agree, cancelled, shielded and not.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio.lowlevel

__all__ = ["FAST", "checkpoint_if_cancelled"]


def _task_states() -> Any:
    try:
        from anyio._backends import _asyncio as backend
    except ImportError:  # pragma: no cover - anyio without its asyncio backend module
        return None
    states = getattr(backend, "_task_states", None)
    scope_slots = getattr(backend.CancelScope, "__slots__", ())
    state_slots = getattr(getattr(backend, "TaskState", None), "__slots__", ())
    if (
        states is None
        or not callable(getattr(states, "get", None))
        or not {"_cancel_called", "_shield", "_parent_scope"} <= set(scope_slots)
        or "cancel_scope" not in state_slots
    ):
        return None  # pragma: no cover - an anyio whose internals moved
    return states


_STATES = _task_states()
FAST = _STATES is not None
"""The asyncio walk is in use (False: every call is anyio's own ``checkpoint_if_cancelled``)."""


async def checkpoint_if_cancelled() -> None:
    """``anyio.lowlevel.checkpoint_if_cancelled()``: raise the cancellation if an enclosing cancel scope
    (up to the first shielded one) was cancelled; never yields otherwise."""
    if _STATES is None or asyncio._get_running_loop() is None:
        await anyio.lowlevel.checkpoint_if_cancelled()  # not asyncio (trio), or internals unknown
        return
    task = asyncio.current_task()
    state = None if task is None else _STATES.get(task)
    scope = None if state is None else state.cancel_scope
    while scope is not None:
        if scope._cancel_called:
            await anyio.lowlevel.checkpoint_if_cancelled()  # anyio delivers it, as it would have
            return
        if scope._shield:
            return
        scope = scope._parent_scope
