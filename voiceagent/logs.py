"""Log context: every voiceagent log record carries session, turn, round and request_id.

A contextvar holds the current values; ``get_logger`` returns a logger whose filter copies them onto
each record, so the fields survive any handler or formatter the application installs.

Secrets never reach a log line through voiceagent: every voiceagent logger, and the handler
``configure()`` installs, redact (``redact``) any value passed to ``register_secret`` (``LLMClient``,
``TwilioServer`` and the vendor adapters register their keys, and ``register_env_secrets`` every
environment variable named like a secret, at import) and every known token shape: ``sk-``/``sk_``
keys, ``Bearer``/``Basic`` credentials, ``Authorization``/``api_key``/``auth_token``/``token``/``secret``/
``password`` values, credentials inside URLs (``https://user:pass@host``), Twilio account and API key SIDs
(``AC…``/``SK…``), AWS access key ids, GitHub, Slack and Google API tokens and JWTs, in the message and in
the traceback text. Cassettes, ``TurnResult.error``, round records and tool errors sent to the model are
redacted the same way. Add ``RedactingFilter()`` to your own handlers to cover
other libraries' records too (a server error message may echo the key).
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
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
    ctx = _current.get()
    value = request_id or "-"
    if ctx.request_id != value:  # twice per request; unchanged is common, and replace() is not free
        _current.set(LogContext(ctx.session, ctx.turn, ctx.round, value))


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _current.get()
        for name in ("session", "turn", "round", "request_id"):
            if not hasattr(record, name):
                setattr(record, name, getattr(ctx, name))
        return True


_FILTER = ContextFilter()

REDACTED = "[REDACTED]"
_PATTERN = re.compile(
    r"(?P<key>\bsk[-_][A-Za-z0-9_\-]{6,})"
    r"|(?P<bearer>\b(?:Bearer|Basic)\s+)(?!\[REDACTED\])[^\s'\",;]+"
    r"|(?P<field>\b(?:authorization|api[-_]?key|auth[-_]?token|access[-_]?token|refresh[-_]?token|token"
    r"|client[-_]?secret|secret[-_]?key|secret|password|passwd|aws[-_]?secret[-_]?access[-_]?key)"
    r"['\"]?\s*[:=]\s*['\"]?)"
    r"(?!\[REDACTED\])(?:(?:bearer|basic|token)\s+)?[^\s'\",;}&]+"
    r"|(?P<url>\b[a-z][a-z0-9+.\-]*://)[^\s/@:'\"]*:[^\s/@'\"]+@",
    re.IGNORECASE,
)
# Token shapes that are case-sensitive (an uppercase prefix): matched apart so that hex digests and ids,
# which are lowercase, are never taken for one.
_SHAPES = re.compile(
    r"\b(?:AC|SK)[0-9a-f]{32}\b"  # Twilio account SID, API key SID
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key id
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{20,}"  # GitHub tokens
    r"|\bxox[abprs]-[A-Za-z0-9\-]{10,}"  # Slack tokens
    r"|\bAIza[0-9A-Za-z_\-]{35}"  # Google API keys
    r"|\b[rp]k_(?:live|test)_[A-Za-z0-9]{10,}"  # Stripe-style restricted / publishable keys
    r"|\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"  # JWTs
)
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Redact this exact value (an API key, a Twilio auth token...) from every record voiceagent's
    filters see, whatever its shape. Values shorter than 6 characters are ignored (too common)."""
    if value and len(value) >= 6:
        _secrets.add(value)


# Environment variables whose names say they hold a secret (TWILIO_AUTH_TOKEN, SMALLEST_API_KEY,
# AWS_SECRET_ACCESS_KEY...): a tool's client library reads them, and its error text may echo them.
_SECRET_ENV_SUFFIXES = ("_API_KEY", "_APIKEY", "_TOKEN", "_SECRET", "_SECRET_KEY", "_PASSWORD", "_PASSWD")


def register_env_secrets() -> int:
    """Register the value of every environment variable named like a secret (``*_API_KEY``, ``*_TOKEN``,
    ``*_SECRET``, ``*_SECRET_KEY``, ``*_PASSWORD``; values of 8 characters or more). Done once at import;
    call it again after loading a ``.env`` file. Returns how many values were registered."""
    found = 0
    for name, value in os.environ.items():
        if name.upper().endswith(_SECRET_ENV_SUFFIXES) and len(value) >= 8:
            register_secret(value)
            found += 1
    return found


def redact_secrets(text: str) -> str:
    """``text`` with every value given to ``register_secret`` replaced by [REDACTED], and nothing else
    touched (for text that is data, such as a tool's result, where a shape could be a false positive)."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact(text: str) -> str:
    """``text`` with every known secret and every key/token-looking value replaced by [REDACTED]."""

    def replace(match: re.Match[str]) -> str:
        if match["key"]:
            return REDACTED
        if match["url"]:
            return match["url"] + REDACTED + "@"
        return (match["bearer"] or match["field"]) + REDACTED

    return _SHAPES.sub(REDACTED, _PATTERN.sub(replace, redact_secrets(text)))


def secret_spans(text: str) -> list[tuple[int, int]]:
    """Where ``redact`` would replace something in ``text``: sorted, merged ``(start, end)`` spans. Lets a
    caller that holds text in pieces (a recorded stream's chunks) mask a secret split across them."""
    spans: list[tuple[int, int]] = []
    for secret in _secrets:
        start = text.find(secret)
        while start >= 0:
            spans.append((start, start + len(secret)))
            start = text.find(secret, start + 1)
    for match in _PATTERN.finditer(text):
        if match["key"]:
            spans.append(match.span())
        elif match["url"]:
            spans.append((match.end("url"), match.end() - 1))  # keep the "@"
        else:
            spans.append((match.end("bearer" if match["bearer"] else "field"), match.end()))
    spans.extend(match.span() for match in _SHAPES.finditer(text))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        elif end > start:
            merged.append((start, end))
    return merged


def longest_secret() -> int:
    """The length of the longest registered secret (0 if none)."""
    return max(map(len, _secrets), default=0)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message and traceback text with ``redact`` (it never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed %-format is the logging module's to report
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_REDACT = RedactingFilter()


def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    for f in (_FILTER, _REDACT):
        if f not in logger.filters:
            logger.addFilter(f)
    return logger


def configure(level: int = logging.INFO) -> None:
    """Convenience for apps and the CLI: one stderr handler with the context fields in every line."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_FILTER)
    handler.addFilter(_REDACT)
    root = logging.getLogger("voiceagent")
    root.handlers[:] = [handler]
    root.setLevel(level)


register_env_secrets()
