"""Log context: every voiceagent log record carries session, turn, round and request_id.

A contextvar holds the current values; ``get_logger`` returns a logger whose filter copies them onto
each record, so the fields survive any handler or formatter the application installs.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class LogContext:
    session: str = "-"
    turn: int | str = "-"
    round: int | str = "-"
    request_id: str = "-"


# LogContext is frozen, so sharing one default instance is safe.
_current: contextvars.ContextVar[LogContext] = contextvars.ContextVar(
    "voiceagent_log",
    default=LogContext(),  # noqa: B039
)

LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s "
    "[session=%(session)s turn=%(turn)s round=%(round)s request_id=%(request_id)s] %(message)s"
)


def current() -> LogContext:
    return _current.get()


@contextmanager
def log_context(**fields: Any) -> Iterator[LogContext]:
    """Set some of session/turn/round/request_id for the body (and every task started inside it)."""
    token = _current.set(replace(_current.get(), **fields))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def set_request_id(request_id: str | None) -> None:
    """Record the request id of the request now in flight, for the rest of the current context."""
    _current.set(replace(_current.get(), request_id=request_id or "-"))


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _current.get()
        for name in ("session", "turn", "round", "request_id"):
            if not hasattr(record, name):
                setattr(record, name, getattr(ctx, name))
        return True


_FILTER = ContextFilter()


def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def configure(level: int = logging.INFO) -> None:
    """Convenience for apps and the CLI: one stderr handler with the context fields in every line."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_FILTER)
    root = logging.getLogger("voiceagent")
    root.handlers[:] = [handler]
    root.setLevel(level)
