"""Call control over Twilio's REST API: one live call's ``CallControl`` (hang up, transfer).

Both are a Call resource update (Twilio's "Modify calls in progress"):
``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``, HTTP Basic auth (Account SID and
Auth Token, or an API key's SID and secret: Twilio's recommendation for production, the key can be
revoked alone; the Account SID stays in the URL), a form body: ``Status=completed`` hangs up;
``Twiml=<Response><Dial>...</Dial></Response>`` replaces the call's TwiML, so the ``<Connect><Stream>``
ends (Twilio sends ``stop``) and the caller is dialed through to the number. Twilio answers with the
call resource as JSON, or an error ``{"code", "message", "more_info", "status"}``, raised here as
``TwilioRestError``.

DTMF out: Twilio's Media Streams carry no outbound DTMF, and the only REST way (new TwiML with
``<Play digits>``) would replace the ``<Connect><Stream>`` and end the bot's stream; ``send_dtmf``
therefore raises ``CallControlError`` saying so.

Bounded: each request has a deadline (``timeout``), the error body read is capped, and the Auth Token
is registered as a secret (never in a log line or an error text).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import anyio
import httpx2

from voiceagent.logs import get_logger, register_secret
from voiceagent.telephony import CallControlError, StreamStart
from voiceagent.telephony.destination import validate_destination

__all__ = [
    "DEFAULT_API_BASE",
    "TwilioCallControl",
    "TwilioRestError",
    "dial_twiml",
    "twilio_control_factory",
    "validate_destination",
]

logger = get_logger(__name__)

DEFAULT_API_BASE = "https://api.twilio.com"
API_VERSION = "2010-04-01"
MAX_BODY = 64 * 1024  # bytes of an answer read (a call resource is ~2 KB)
_SID = re.compile(r"[A-Za-z0-9]{2,64}")  # it goes into the URL path: letters and digits only
_MAX_REASON = 300


class TwilioRestError(CallControlError):
    """Twilio refused a call update. ``status_code`` is the HTTP status; ``code``, ``message`` and
    ``more_info`` are Twilio's (``code`` 20003: bad credentials, 20404: no such call, 21220: the call is
    not in progress)."""

    def __init__(
        self, status_code: int, code: int | None, message: str, more_info: str | None = None
    ) -> None:
        detail = f"Twilio answered {status_code}" + (f" (error {code})" if code is not None else "")
        super().__init__(f"{detail}: {message}"[:_MAX_REASON], status_code=status_code)
        self.code = code
        self.message = message
        self.more_info = more_info


def dial_twiml(to: str, *, caller_id: str | None = None, timeout: int | None = None) -> str:
    """``<Response><Dial><Number>to</Number></Dial></Response>`` (``<Sip>`` for a SIP URI), escaped."""
    to = validate_destination(to)
    noun = "Sip" if to.startswith(("sip:", "sips:")) else "Number"
    attrs = ""
    if caller_id is not None:
        attrs += f" callerId={quoteattr(validate_destination(caller_id))}"
    if timeout is not None:
        if not 5 <= timeout <= 600:
            raise ValueError(f"Dial timeout must be 5..600 seconds, got {timeout}")
        attrs += f' timeout="{int(timeout)}"'
    return f"<Response><Dial{attrs}><{noun}>{escape(to)}</{noun}></Dial></Response>"


class TwilioCallControl:
    """``CallControl`` for one Twilio call (``call_sid``: the stream's ``start.callSid``).

    ``base_url``: Twilio's API (a regional edge, or a fake on loopback in tests). ``timeout``: seconds
    for each whole request. ``client``: an ``httpx2.AsyncClient`` to reuse (yours to close); without one
    each request opens and closes its own connection (a call makes one or two).
    ``api_key_sid``/``api_key_secret``: authenticate with an API key (``SK...``) instead of the Auth
    Token (then pass ``auth_token=None``); the requests still go to ``account_sid``'s calls."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str | None,
        call_sid: str,
        *,
        base_url: str = DEFAULT_API_BASE,
        timeout: float = 10.0,
        client: httpx2.AsyncClient | None = None,
        dial_caller_id: str | None = None,
        dial_timeout: int | None = None,
        api_key_sid: str | None = None,
        api_key_secret: str | None = None,
    ) -> None:
        for name, sid in (("account_sid", account_sid), ("call_sid", call_sid)):
            if not isinstance(sid, str) or not _SID.fullmatch(sid):
                raise ValueError(f"{name} must be a Twilio SID (letters and digits), got {str(sid)[:40]!r}")
        user, password = _credentials(account_sid, auth_token, api_key_sid, api_key_secret)
        if not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        if not base_url.startswith(("https://", "http://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url[:60]!r}")
        register_secret(password)  # never in a log line
        self.account_sid = account_sid
        self.call_sid = call_sid
        self.url = f"{base_url.rstrip('/')}/{API_VERSION}/Accounts/{account_sid}/Calls/{call_sid}.json"
        self.timeout = timeout
        self.dial_caller_id = dial_caller_id
        self.dial_timeout = dial_timeout
        self._auth = (user, password)
        self._client = client
        self.updates: list[dict[str, str]] = []  # the form bodies sent, in order (no credentials)

    def __repr__(self) -> str:  # the token stays out of reprs too
        return f"TwilioCallControl(account_sid={self.account_sid!r}, call_sid={self.call_sid!r})"

    # ---- CallControl ------------------------------------------------------------------------------

    async def hang_up(self) -> None:
        await self.update({"Status": "completed"})

    async def transfer(self, to: str) -> None:
        twiml = dial_twiml(to, caller_id=self.dial_caller_id, timeout=self.dial_timeout)
        await self.update({"Twiml": twiml})

    async def send_dtmf(self, digits: str) -> None:
        raise CallControlError(
            "Twilio cannot send DTMF into a live Media Stream: the stream carries no outbound DTMF, and a "
            "call update with <Play digits> would replace the <Connect><Stream> TwiML and end the stream"
        )

    # ---- the REST call ----------------------------------------------------------------------------

    async def update(self, params: Mapping[str, str]) -> dict[str, Any]:
        """POST a Call update; returns Twilio's call resource (a dict). Raises ``TwilioRestError`` for an
        error answer, ``CallControlError`` when Twilio cannot be reached in ``timeout`` seconds."""
        form = dict(params)
        self.updates.append(form)
        logger.info("twilio call %s: update %s", self.call_sid, ", ".join(sorted(form)))
        try:
            with anyio.fail_after(self.timeout):
                if self._client is not None:
                    status, body = await self._post(self._client, form)
                else:
                    async with httpx2.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
                        status, body = await self._post(client, form)
        except TimeoutError:
            raise CallControlError(
                f"Twilio call update of {self.call_sid} got no answer within {self.timeout} s"
            ) from None
        except httpx2.HTTPError as exc:
            raise CallControlError(
                f"Twilio call update of {self.call_sid} failed: {type(exc).__name__}: {str(exc)[:120]}"
            ) from None
        if not 200 <= status < 300:
            raise _error_from(status, body)
        try:
            resource = json.loads(body)
        except (ValueError, RecursionError):
            resource = None
        if not isinstance(resource, dict):
            raise CallControlError(f"Twilio answered {status} with a body that is not a JSON object")
        return resource

    async def _post(self, client: httpx2.AsyncClient, form: dict[str, str]) -> tuple[int, bytes]:
        headers = {"Accept": "application/json", "User-Agent": "voiceagent-twilio"}
        request = client.build_request("POST", self.url, data=form, headers=headers)
        response = await client.send(request, auth=httpx2.BasicAuth(*self._auth), stream=True)
        try:
            body = bytearray()
            async for piece in response.aiter_bytes():
                body += piece
                if len(body) > MAX_BODY:
                    del body[MAX_BODY:]
                    break
        finally:
            await response.aclose()
        return response.status_code, bytes(body)


def _error_from(status: int, body: bytes) -> TwilioRestError:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, dict):
        code = doc.get("code")
        message = doc.get("message")
        more = doc.get("more_info")
        return TwilioRestError(
            status,
            code if isinstance(code, int) and not isinstance(code, bool) else None,
            str(message)[:_MAX_REASON] if message is not None else "no message",
            str(more)[:200] if isinstance(more, str) else None,
        )
    text = body.decode("utf-8", "replace").strip()[:120]
    return TwilioRestError(status, None, text or "empty body")


def _credentials(
    account_sid: str, auth_token: str | None, api_key_sid: str | None, api_key_secret: str | None
) -> tuple[str, str]:
    """The Basic auth pair: the API key's when one is given, else the Account SID and Auth Token."""
    if api_key_sid is None and api_key_secret is None:
        if not auth_token:
            raise ValueError(
                "auth_token is required (your Twilio Auth Token), or api_key_sid= and api_key_secret="
            )
        return account_sid, auth_token
    if not api_key_sid or not api_key_secret:
        raise ValueError("an API key needs both api_key_sid (SK...) and api_key_secret")
    if not _SID.fullmatch(api_key_sid):
        raise ValueError(f"api_key_sid must be a Twilio SID (letters and digits), got {api_key_sid[:40]!r}")
    if auth_token:
        raise ValueError("give either auth_token or an API key (api_key_sid, api_key_secret), not both")
    return api_key_sid, api_key_secret


def twilio_control_factory(
    account_sid: str, auth_token: str | None = None, **options: Any
) -> Callable[[StreamStart], TwilioCallControl]:
    """``control_factory`` for a media-stream server: each call's ``TwilioCallControl`` from its start
    (``start.call_id`` is the CallSid). ``options`` go to ``TwilioCallControl`` (``api_key_sid`` and
    ``api_key_secret`` for API key auth instead of ``auth_token``)."""
    _credentials(account_sid, auth_token, options.get("api_key_sid"), options.get("api_key_secret"))

    def make(start: StreamStart) -> TwilioCallControl:
        return TwilioCallControl(account_sid, auth_token, start.call_id, **options)

    return make
