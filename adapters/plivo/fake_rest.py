"""A fake Plivo Call API on 127.0.0.1, for tests: checks auth and bodies as Plivo documents them, records
what was asked.

Routes (https://www.plivo.com/docs/voice/api/call): ``DELETE /v1/Account/{auth_id}/Call/{uuid}/`` (204,
the call ends), ``POST /v1/Account/{auth_id}/Call/{uuid}/`` with ``legs`` and ``aleg_url``/``bleg_url``
(202 "call transferred"; the fake then fetches the URL as Plivo would and keeps the XML it got),
``POST /v1/Account/{auth_id}/Call/{uuid}/DTMF/`` with ``digits`` (202 "digits sent"). Wrong Basic auth
is a 401, an unknown or ended call a 404, a bad body a 400, each with Plivo's ``{"api_id", "error"}``.
JSON and form bodies are read (the official SDK sends JSON).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

import anyio
import httpx2

from voiceagent.testing.loopback_http import HTTPRequest, LoopbackHTTPServer, Responder

from .messages import DTMF_DIGITS


@dataclass(frozen=True, slots=True)
class CallAction:
    kind: str  # "hangup", "transfer" or "dtmf"
    call_uuid: str
    body: dict[str, Any]
    fetched_xml: str | None = None  # a transfer: what the aleg_url served


@dataclass(slots=True)
class _Fault:
    status: int
    error: str


@dataclass
class FakePlivoRest:
    auth_id: str = "MAFAKEAUTHID00000001"  # 20 characters, as the SDK checks
    auth_token: str = "fake-plivo-auth-token"
    fetch_transfer_urls: bool = True
    actions: list[CallAction] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (status, error) of refused requests
    live_calls: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._server = LoopbackHTTPServer(self._handle)
        self._faults: list[_Fault] = []
        self._hold: anyio.Event | None = None
        self.changed = anyio.Event()

    @property
    def base_url(self) -> str:
        return self._server.url

    def add_call(self, call_uuid: str) -> None:
        self.live_calls.add(call_uuid)

    def fail_next(self, status: int, error: str) -> None:
        """Answer the next request with ``status`` and Plivo's error body."""
        self._faults.append(_Fault(status, error))

    def hold_requests(self) -> anyio.Event:
        """Keep every request unanswered until the returned event is set (for client deadlines)."""
        self._hold = anyio.Event()
        return self._hold

    async def wait_for(self, count: int) -> list[CallAction]:
        while len(self.actions) < count:
            await self.changed.wait()
        return self.actions

    async def __aenter__(self) -> FakePlivoRest:
        await self._server.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._hold is not None:
            self._hold.set()
        await self._server.__aexit__(exc_type, exc, tb)

    # ---- handling -------------------------------------------------------------------------------

    async def _handle(self, request: HTTPRequest, respond: Responder) -> None:
        if self._hold is not None:
            await self._hold.wait()
        status, payload = await self._answer(request)
        if status >= 400:
            self.rejected.append((status, str(payload.get("error", ""))))
            self._notify()
        if status == 204:
            await respond.send(204)
        else:
            await respond.send_json(status, payload)

    async def _answer(self, request: HTTPRequest) -> tuple[int, dict[str, Any]]:
        api_id = str(uuid.uuid4())
        if not self._authorized(request.headers.get("authorization", "")):
            return 401, {"api_id": api_id, "error": "Authentication failed"}
        if self._faults:
            fault = self._faults.pop(0)
            return fault.status, {"api_id": api_id, "error": fault.error}
        parts = request.path.split("/")
        # "", "v1", "Account", auth_id, "Call", uuid, ["DTMF"], ""
        if len(parts) not in (7, 8) or parts[:3] != ["", "v1", "Account"] or parts[4] != "Call" or parts[-1]:
            return 404, {"api_id": api_id, "error": "not found (Plivo paths end with a slash)"}
        if parts[3] != self.auth_id:
            return 401, {"api_id": api_id, "error": "auth_id in the path is not the authenticated one"}
        call_uuid, dtmf = parts[5], len(parts) == 8
        if dtmf and parts[6] != "DTMF":
            return 404, {"api_id": api_id, "error": "not found"}
        if call_uuid not in self.live_calls:
            return 404, {"api_id": api_id, "error": "call not found"}
        try:
            body = _body(request)
        except ValueError as exc:
            return 400, {"api_id": api_id, "error": str(exc)}
        if request.method == "DELETE" and not dtmf:
            self.live_calls.discard(call_uuid)
            self._record(CallAction("hangup", call_uuid, body))
            return 204, {}
        if request.method != "POST":
            return 405, {"api_id": api_id, "error": f"method {request.method} not allowed"}
        if dtmf:
            digits = body.get("digits")
            if not isinstance(digits, str) or not digits or not set(digits) <= DTMF_DIGITS | set("wW"):
                return 400, {"api_id": api_id, "error": "digits parameter is missing or invalid"}
            if body.get("leg", "aleg") not in ("aleg", "bleg"):
                return 400, {"api_id": api_id, "error": "leg must be aleg or bleg"}
            self._record(CallAction("dtmf", call_uuid, body))
            return 202, {"api_id": api_id, "message": "digits sent"}
        return await self._transfer(api_id, call_uuid, body)

    async def _transfer(
        self, api_id: str, call_uuid: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        legs = body.get("legs")
        if legs not in ("aleg", "bleg", "both"):
            return 400, {"api_id": api_id, "error": "legs must be aleg, bleg or both"}
        url = body.get("aleg_url") if legs in ("aleg", "both") else body.get("bleg_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return 400, {"api_id": api_id, "error": f"{legs} transfer needs an http(s) aleg_url/bleg_url"}
        method = body.get("aleg_method", "POST") if legs != "bleg" else body.get("bleg_method", "POST")
        if method not in ("GET", "POST"):
            return 400, {"api_id": api_id, "error": "aleg_method must be GET or POST"}
        xml = await self._fetch(url, method, call_uuid) if self.fetch_transfer_urls else None
        self._record(CallAction("transfer", call_uuid, body, xml))
        return 202, {"api_id": api_id, "message": "call transferred"}

    async def _fetch(self, url: str, method: str, call_uuid: str) -> str | None:
        # As Plivo does: request the URL (with the call's parameters) and read the XML it answers.
        params = {"CallUUID": call_uuid}
        try:
            with anyio.fail_after(5):
                async with httpx2.AsyncClient() as client:
                    if method == "GET":
                        response = await client.get(url, params=params)
                    else:
                        response = await client.post(url, data=params)
        except (TimeoutError, httpx2.HTTPError):
            return None
        return response.text if response.status_code == 200 else None

    def _authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return False
        return decoded == f"{self.auth_id}:{self.auth_token}"

    def _record(self, action: CallAction) -> None:
        self.actions.append(action)
        self._notify()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


def _body(request: HTTPRequest) -> dict[str, Any]:
    if not request.body:
        return {}
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            doc = json.loads(request.body)
        except (ValueError, RecursionError):
            raise ValueError("body is not valid JSON") from None
        if not isinstance(doc, dict):
            raise ValueError("body must be a JSON object")
        return doc
    if kind == "application/x-www-form-urlencoded":
        return {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
    raise ValueError(f"unsupported content type {kind!r}")
