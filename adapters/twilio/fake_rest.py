"""A fake of Twilio's REST API for live calls, on 127.0.0.1 (the Call resource, after Twilio's docs).

``GET`` and ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with HTTP Basic auth
(Account SID : Auth Token, or an API key's SID : secret given in ``api_keys``). A POST is a call
update: a form body (``application/x-www-form-urlencoded``)
with ``Status`` (``completed``/``canceled``) or ``Twiml`` (at most 4,000 characters, a ``<Response>``
document) or ``Url``. It answers as Twilio does: the call resource as JSON, or an error
``{"code", "message", "more_info", "status"}`` (401 code 20003 with ``WWW-Authenticate``, 404 code
20404, 400 code 21220 when the call is no longer in progress, 12100 when the TwiML does not parse).

Every request is recorded (``requests``, and the accepted updates in ``updates``). ``link(phone)``
ties a ``FakeTwilioCall`` to its call: an update that ends the call's TwiML (``Status=completed``, new
``Twiml`` or ``Url``) sends the stream's ``stop``, as Twilio does when the ``<Connect><Stream>`` ends.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from types import MappingProxyType, TracebackType
from typing import Any
from urllib.parse import parse_qs
from xml.etree import ElementTree

import anyio

from voiceagent.testing.loopback_http import HTTPRequest, LoopbackHTTPServer, Responder

from .fake_call import FakeTwilioCall

__all__ = ["CallUpdate", "FakeTwilioREST", "RecordedRequest"]

_PATH = re.compile(r"/2010-04-01/Accounts/([^/]+)/Calls/([^/]+)\.json")
MAX_TWIML = 4000  # Twilio's documented limit for the Twiml parameter
_MORE_INFO = "https://www.twilio.com/docs/errors/{code}"


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # lowercased names
    body: bytes
    status: int  # what the fake answered


@dataclass(frozen=True, slots=True)
class CallUpdate:
    """One accepted call update: the call and its form fields."""

    call_sid: str
    params: Mapping[str, str]
    username: str  # the Basic auth user name (the Account SID, or the API key SID)


class FakeTwilioREST:
    def __init__(
        self,
        *,
        account_sid: str = "AC00000000000000000000000000000001",
        auth_token: str = "test-auth-token",
        on_update: Callable[[CallUpdate], Awaitable[None]] | None = None,
        api_keys: Mapping[str, str] | None = None,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        # API keys of this account (key SID -> secret): Basic auth with one of them is accepted too, the
        # Account SID staying in the URL, as Twilio does.
        self.api_keys = dict(api_keys or {})
        self.on_update = on_update  # runs before the answer is sent (a test snapshots the call here)
        self.calls: dict[str, dict[str, Any]] = {}
        self.requests: list[RecordedRequest] = []
        self.updates: list[CallUpdate] = []
        self._phones: dict[str, FakeTwilioCall] = {}
        self._server = LoopbackHTTPServer(self._handle)
        self._changed = anyio.Event()

    @property
    def base_url(self) -> str:
        return self._server.url

    async def __aenter__(self) -> FakeTwilioREST:
        await self._server.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._server.__aexit__(exc_type, exc, tb)

    # ---- calls ------------------------------------------------------------------------------------

    def add_call(
        self,
        call_sid: str,
        *,
        status: str = "in-progress",
        from_: str = "+15005550006",
        to: str = "+15005550001",
    ) -> dict[str, Any]:
        now = formatdate(usegmt=True).replace("GMT", "+0000")
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Calls/{call_sid}.json"
        self.calls[call_sid] = {
            "account_sid": self.account_sid,
            "answered_by": None,
            "api_version": "2010-04-01",
            "caller_name": None,
            "date_created": now,
            "date_updated": now,
            "direction": "inbound",
            "duration": None,
            "end_time": None,
            "forwarded_from": None,
            "from": from_,
            "from_formatted": from_,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": "PN00000000000000000000000000000001",
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": call_sid,
            "start_time": now,
            "status": status,
            "subresource_uris": {},
            "to": to,
            "to_formatted": to,
            "trunk_sid": None,
            "uri": uri,
        }
        return self.calls[call_sid]

    def link(self, phone: FakeTwilioCall) -> None:
        """Serve ``phone``'s call; an update that ends its TwiML sends the stream's ``stop``."""
        self.add_call(phone.call_sid)
        self._phones[phone.call_sid] = phone

    async def wait_for_updates(self, count: int) -> None:
        while len(self.updates) < count:
            changed = self._changed
            await changed.wait()

    # ---- HTTP -------------------------------------------------------------------------------------

    async def _handle(self, request: HTTPRequest, respond: Responder) -> None:
        status = await self._answer(request, respond)
        self.requests.append(
            RecordedRequest(request.method, request.target, dict(request.headers), request.body, status)
        )
        self._changed.set()
        self._changed = anyio.Event()

    async def _answer(self, request: HTTPRequest, respond: Responder) -> int:
        match = _PATH.fullmatch(request.path)
        if match is None:
            return await self._error(
                respond, 404, 20404, f"The requested resource {request.path} was not found"
            )
        user = self._authenticated(request.headers.get("authorization", ""))
        if user is None:
            await respond.send_json(
                401,
                {
                    "code": 20003,
                    "detail": "Your AccountSid or AuthToken was incorrect.",
                    "message": "Authenticate",
                    "more_info": _MORE_INFO.format(code=20003),
                    "status": 401,
                },
                {"WWW-Authenticate": 'Basic realm="Twilio API"'},
            )
            return 401
        account, call_sid = match.groups()
        call = self.calls.get(call_sid)
        if account != self.account_sid or call is None:
            return await self._error(
                respond, 404, 20404, f"The requested resource {request.path} was not found"
            )
        if request.method == "GET":
            await respond.send_json(200, call)
            return 200
        if request.method != "POST":
            return await self._error(respond, 405, 20004, "Method not allowed")
        params, problem = _form(request)
        if problem is not None:
            return await self._error(respond, 400, 20001, problem)
        problem, code = self._check_update(call, params)
        if problem is not None:
            return await self._error(respond, 400, code, problem)
        update = CallUpdate(call_sid, MappingProxyType(params), user)
        self._apply(call, params)
        self.updates.append(update)
        if self.on_update is not None:
            await self.on_update(update)
        phone = self._phones.get(call_sid)
        if phone is not None and ("Twiml" in params or "Url" in params or call["status"] == "completed"):
            await phone.stop()  # the <Connect><Stream> ended: Twilio stops the stream
        await respond.send_json(200, call)
        return 200

    def _authenticated(self, header: str) -> str | None:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        ok_user = hmac.compare_digest(user.encode(), self.account_sid.encode())
        ok_password = hmac.compare_digest(password.encode(), self.auth_token.encode())
        if ok_user and ok_password:
            return user
        secret = self.api_keys.get(user)
        if secret is not None and hmac.compare_digest(password.encode(), secret.encode()):
            return user
        return None

    @staticmethod
    def _check_update(call: Mapping[str, Any], params: Mapping[str, str]) -> tuple[str | None, int]:
        known = {"Status", "Twiml", "Url", "Method", "FallbackUrl", "FallbackMethod", "StatusCallback",
                 "StatusCallbackMethod", "TimeLimit"}  # fmt: skip
        unknown = sorted(set(params) - known)
        if unknown:
            return f"Unknown parameter(s): {', '.join(unknown)}", 20001
        status = params.get("Status")
        if status is not None and status not in ("completed", "canceled"):
            return f"Invalid Status {status[:40]!r}: must be completed or canceled", 20001
        if "Twiml" in params:
            twiml = params["Twiml"]
            if len(twiml) > MAX_TWIML:
                return f"Twiml is {len(twiml)} characters, more than {MAX_TWIML}", 20001
            try:
                root = ElementTree.fromstring(twiml)
            except ElementTree.ParseError:
                return "Document parse failure", 12100
            if root.tag != "Response":
                return "Document parse failure: the root element must be <Response>", 12100
        if call["status"] != "in-progress" and ("Twiml" in params or "Url" in params):
            return "Unable to update record. Call is not in-progress. Cannot redirect.", 21220
        if not params:
            return "No parameters to update", 20001
        return None, 0

    @staticmethod
    def _apply(call: dict[str, Any], params: Mapping[str, str]) -> None:
        call["date_updated"] = formatdate(usegmt=True).replace("GMT", "+0000")
        if params.get("Status") == "completed" and call["status"] == "in-progress":
            call["status"] = "completed"
            call["end_time"] = call["date_updated"]
        # Status=canceled only cancels a queued or ringing call; an answered one is left alone.

    @staticmethod
    async def _error(respond: Responder, status: int, code: int, message: str) -> int:
        payload = {
            "code": code,
            "message": message,
            "more_info": _MORE_INFO.format(code=code),
            "status": status,
        }
        await respond.send_json(status, payload)
        return status


def _form(request: HTTPRequest) -> tuple[dict[str, str], str | None]:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}, f"Content-Type must be application/x-www-form-urlencoded, got {content_type[:60]!r}"
    try:
        fields = parse_qs(
            request.body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(request.body)
        )
    except (UnicodeDecodeError, ValueError) as exc:
        return {}, f"Bad form body: {exc}"
    repeated = sorted(name for name, values in fields.items() if len(values) != 1)
    if repeated:
        return {}, f"Parameter(s) given more than once: {', '.join(repeated)}"
    return {name: values[0] for name, values in fields.items()}, None
