"""One JSON object per log line, with the session, turn, round and request ids of ``voiceagent.logs``."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from voiceagent.logs import ContextFilter, RedactingFilter

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_CONTEXT = ("session", "turn", "round", "request_id")


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "session", "turn", "round", "request_id", ...extra}``."""

    def __init__(self, **static: Any) -> None:
        super().__init__()
        self.static = static  # e.g. the worker's index, on every line

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **self.static,
        }
        for name in _CONTEXT:
            value = getattr(record, name, "-")
            line[name] = None if value == "-" else value
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in _CONTEXT and not name.startswith("_"):
                line[name] = value  # `extra=` fields (a turn's summary)
        if record.exc_text or record.exc_info:
            line["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_json(level: int = logging.INFO, **static: Any) -> None:
    """Every ``voiceagent`` record as one JSON line on stderr, redacted like ``logs.configure``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(**static))
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger("voiceagent")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
