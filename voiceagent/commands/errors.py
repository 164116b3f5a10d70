"""How the command lines (``voiceagent`` and the example bots) report a user's mistake: one line, no
traceback. Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable, Iterator

# A module an optional feature imports -> the extra that installs it.
EXTRAS: dict[str, str] = {"redis": "redis", "matplotlib": "timeline"}

INTERRUPTED = 130  # the shell's code for "stopped by SIGINT"


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def expected(exc: BaseException, types: tuple[type[BaseException], ...]) -> list[BaseException] | None:
    """The errors inside ``exc`` (a task group's too) if every one is of ``types``, else None."""
    leaves = list(_leaves(exc))
    return leaves if all(isinstance(leaf, types) for leaf in leaves) else None


def explain(exc: BaseException, *, address: str | None = None) -> str | None:
    """The one-line message for a user's mistake inside ``exc`` (a task group's too), else None."""
    for leaf in _leaves(exc):
        if isinstance(leaf, OSError) and leaf.errno == errno.EADDRINUSE:
            where = address or "the port"
            return f"error: {where} is already in use (another server running there? pick another --port)"
        if isinstance(leaf, ModuleNotFoundError) and leaf.name:
            top = leaf.name.partition(".")[0]
            if top in EXTRAS:
                return f"error: this needs {top}: pip install 'voiceagent[{EXTRAS[top]}]'"
    return None


def run_cleanly(body: Callable[[], int], *, address: Callable[[], str | None] = lambda: None) -> int:
    """``body()``, with Ctrl-C ending quietly (exit 130) and a user's mistake reported in one line."""
    try:
        return body()
    except BaseException as exc:
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in _leaves(exc)):
            print("interrupted", file=sys.stderr)  # also when a task group carried it
            return INTERRUPTED
        message = explain(exc, address=address()) if isinstance(exc, Exception) else None
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 1
