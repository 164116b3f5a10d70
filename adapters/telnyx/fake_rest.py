"""A fake Telnyx Call Control v2 REST API on 127.0.0.1, built from Telnyx's API reference.

It serves ``POST /v2/calls/{call_control_id}/actions/{hangup|transfer|send_dtmf}``, checks what the real
API checks (``Authorization: Bearer <API key>`` else 401 with error 10009; a known, live call else 404 /
422 with 90018 "Call has already ended"; a JSON object body; ``to`` for transfer and ``digits`` for
send_dtmf, else 422), records every accepted action, and answers ``{"data": {"result": "ok"}}``.
Errors come in Telnyx's ``{"errors": [{"code", "title", "detail"}]}`` shape. Misbehaviour on command:
``fail_next(status, code)`` and ``stall`` (an event the handler waits on before answering).
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import unquote

import anyio

from voiceagent.testing.loopback_http import HTTPRequest, LoopbackHTTPServer, Responder

__all__ = ["FakeTelnyxRest", "RecordedAction"]

_ROUTE = re.compile(r"/v2/calls/([^/]+)/actions/([a-z_]+)")
_ACTIONS = ("hangup", "transfer", "send_dtmf")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_DIGITS = re.compile(r"[0-9A-D*#wW]+")


@dataclass(frozen=True, slots=True)
class RecordedAction:
    call_control_id: str
    action: str
    body: dict[str, Any]
    headers: dict[str, str]


def _error(status: int, code: str, title: str, detail: str) -> tuple[int, dict[str, Any]]:
    return status, {"errors": [{"code": code, "title": title, "detail": detail}]}


class FakeTelnyxRest:
    def __init__(self, *, api_key: str = "KEY-test-telnyx", calls: tuple[str, ...] = ()) -> None:
        self.api_key = api_key
        self.live_calls: set[str] = set(calls)
        self.ended_calls: set[str] = set()
        self.actions: list[RecordedAction] = []
        self.rejected: list[tuple[int, str]] = []  # (status, error code) of every refused request
        self.stall: anyio.Event | None = None
        # Called as an accepted action is recorded, before it is answered: what the caller had heard
        # when the request arrived can be read there (the client is still waiting for the answer).
        self.on_action: Callable[[RecordedAction], None] | None = None
        self._fail_next: deque[tuple[int, str]] = deque()
        self._changed = anyio.Event()
        self._http = LoopbackHTTPServer(self._handle)

    async def __aenter__(self) -> FakeTelnyxRest:
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.__aexit__(exc_type, exc, tb)

    @property
    def base_url(self) -> str:
        return f"{self._http.url}/v2"

    def add_call(self, call_control_id: str) -> None:
        self.live_calls.add(call_control_id)

    def fail_next(self, status: int, code: str = "10007") -> None:
        self._fail_next.append((status, code))

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _check(self, request: HTTPRequest) -> tuple[str, str, dict[str, Any]] | tuple[int, dict[str, Any]]:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "10009", "Authentication failed", "The API key is missing or invalid.")
        route = _ROUTE.fullmatch(request.path)
        if request.method != "POST" or route is None or route.group(2) not in _ACTIONS:
            return _error(404, "10005", "Resource not found", f"{request.method} {request.path}")
        if self._fail_next:
            status, code = self._fail_next.popleft()
            return _error(status, code, "Injected failure", "fail_next")
        call_control_id, action = unquote(route.group(1)), route.group(2)
        if call_control_id in self.ended_calls:
            return _error(422, "90018", "Call has already ended", "This call is no longer active.")
        if call_control_id not in self.live_calls:
            return _error(404, "10005", "Resource not found", "No call with that call_control_id.")
        body: Any = {}
        if request.body:
            if "application/json" not in request.headers.get("content-type", ""):
                return _error(415, "10014", "Unsupported Media Type", "Send application/json.")
            try:
                body = json.loads(request.body)
            except (ValueError, RecursionError):
                return _error(400, "10015", "Bad Request", "The body is not valid JSON.")
        if not isinstance(body, dict):
            return _error(422, "10015", "Bad Request", "The body must be a JSON object.")
        problem = _check_body(action, body)
        if problem is not None:
            return problem
        return call_control_id, action, body

    async def _handle(self, request: HTTPRequest, responder: Responder) -> None:
        checked = self._check(request)
        if len(checked) == 2:
            status, payload = checked
            self.rejected.append((status, payload["errors"][0]["code"]))
            self._notify()
            await responder.send_json(status, payload)
            return
        call_control_id, action, body = checked
        if self.stall is not None:
            await self.stall.wait()
        recorded = RecordedAction(call_control_id, action, body, dict(request.headers))
        self.actions.append(recorded)
        if self.on_action is not None:
            self.on_action(recorded)
        if action == "hangup":
            self.live_calls.discard(call_control_id)
            self.ended_calls.add(call_control_id)
        self._notify()
        await responder.send_json(200, {"data": {"result": "ok"}})


def _check_body(action: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    if action == "transfer":
        to = body.get("to")
        if not isinstance(to, str) or not to:
            return _error(422, "10004", "Missing required parameter", "'to' is required.")
        if not (_E164.fullmatch(to) or to.startswith(("sip:", "sips:"))):
            return _error(422, "10016", "Invalid 'to'", "'to' must be +E.164 or a SIP URI.")
    elif action == "send_dtmf":
        digits = body.get("digits")
        if not isinstance(digits, str) or not digits:
            return _error(422, "10004", "Missing required parameter", "'digits' is required.")
        if not _DIGITS.fullmatch(digits):
            return _error(422, "10015", "Invalid digits", "Valid digits are 0-9, A-D, *, # and w/W.")
    for key in ("client_state", "command_id"):
        if key in body and not isinstance(body[key], str):
            return _error(422, "10015", "Bad Request", f"'{key}' must be a string.")
    return None
