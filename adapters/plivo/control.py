"""``PlivoCallControl``: ``CallControl`` over Plivo's Call API (https://www.plivo.com/docs/voice/api/call).

- hang up: ``DELETE /v1/Account/{auth_id}/Call/{call_uuid}/`` (204; a 404 means the call already ended,
  which is what was asked for);
- transfer: ``POST /v1/Account/{auth_id}/Call/{call_uuid}/`` with ``legs=aleg`` and ``aleg_url``: Plivo
  fetches that URL and runs the XML it serves, which for a transfer is ``<Dial><Number>`` (see
  ``dial_xml``). You host that URL: ``transfer_url`` is a template with ``{to}`` (the number, URL-encoded)
  or a function of the number;
- DTMF: ``POST /v1/Account/{auth_id}/Call/{call_uuid}/DTMF/`` with ``digits``
  (https://www.plivo.com/docs/voice/api/call/send-digits).

HTTP Basic auth with the Auth ID and Auth Token, JSON bodies (as the official ``plivo`` SDK sends them).
Every request has one deadline (``timeout``) and a capped response; failures are ``CallControlError``
with the HTTP status and Plivo's ``error`` text. ``base_url`` points it elsewhere (the fake, a proxy).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import anyio
import httpx2

from voiceagent.logs import get_logger, register_secret
from voiceagent.telephony.control import CallControlError
from voiceagent.telephony.credentials import FROM_ENV, credential
from voiceagent.telephony.events import StreamStart

from .messages import DTMF_DIGITS, MAX_DTMF_DIGITS
from .plivo_xml import transfer_target

logger = get_logger(__name__)

DEFAULT_BASE_URL = "https://api.plivo.com"
AUTH_ID_ENV = "PLIVO_AUTH_ID"
AUTH_TOKEN_ENV = "PLIVO_AUTH_TOKEN"
MAX_RESPONSE_BYTES = 64 * 1024
TransferUrl = str | Callable[[str], str]


class PlivoCallControl:
    """Hang up, transfer and send DTMF on one live Plivo call (``call_uuid``: the stream's ``callId``)."""

    def __init__(
        self,
        call_uuid: str,
        *,
        auth_id: str | None = FROM_ENV,
        auth_token: str | None = FROM_ENV,
        transfer_url: TransferUrl | None = None,
        transfer_method: str = "POST",
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
    ) -> None:
        auth_id = credential(auth_id, AUTH_ID_ENV)
        auth_token = credential(auth_token, AUTH_TOKEN_ENV)
        if not auth_id or not auth_token:
            raise ValueError(
                f"Plivo call control needs auth_id and auth_token (or ${AUTH_ID_ENV}, ${AUTH_TOKEN_ENV})"
            )
        if not call_uuid or "/" in call_uuid:
            raise ValueError(f"not a Plivo call UUID: {call_uuid!r}")
        if transfer_method not in ("GET", "POST"):
            raise ValueError("transfer_method must be GET or POST")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        register_secret(auth_token)
        self.call_uuid = call_uuid
        self._auth = httpx2.BasicAuth(auth_id, auth_token)
        self._call_url = (
            f"{base_url.rstrip('/')}/v1/Account/{quote(auth_id, safe='')}/Call/{quote(call_uuid, safe='')}/"
        )
        self._transfer_url = transfer_url
        self._transfer_method = transfer_method
        self._timeout = timeout

    async def hang_up(self) -> None:
        status, body = await self._request("DELETE", self._call_url, None, "hang up")
        if status == 404:
            logger.info("Plivo call %s had already ended", self.call_uuid)
            return
        self._expect(status, body, (200, 202, 204), "hang up")

    async def transfer(self, to: str) -> None:
        try:
            target = transfer_target(to)
        except ValueError as exc:
            raise CallControlError(str(exc)) from None
        if self._transfer_url is None:
            raise CallControlError(
                "Plivo transfers fetch XML from a URL you serve: pass transfer_url= (a template with {to}, "
                "or a function of the number) to PlivoCallControl, and serve dial_xml(to) there"
            )
        if callable(self._transfer_url):
            url = self._transfer_url(target)
        else:
            url = self._transfer_url.replace("{to}", quote(target, safe=""))
        if not url.startswith(("https://", "http://")):
            raise CallControlError(f"transfer_url must give an http(s) URL, got {url[:60]!r}")
        body = {"legs": "aleg", "aleg_url": url, "aleg_method": self._transfer_method}
        status, text = await self._request("POST", self._call_url, body, "transfer")
        self._expect(status, text, (200, 202, 204), "transfer")

    async def send_dtmf(self, digits: str) -> None:
        if not digits or len(digits) > MAX_DTMF_DIGITS or not set(digits) <= DTMF_DIGITS:
            raise CallControlError(f"DTMF digits must be 1-{MAX_DTMF_DIGITS} of 0-9 * # A-D")
        body = {"digits": digits, "leg": "aleg"}
        status, text = await self._request("POST", self._call_url + "DTMF/", body, "send DTMF")
        self._expect(status, text, (200, 202, 204), "send DTMF")

    @classmethod
    def factory(
        cls,
        *,
        auth_id: str | None = None,
        auth_token: str | None = FROM_ENV,
        transfer_url: TransferUrl | None = None,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
    ) -> Callable[[StreamStart], PlivoCallControl]:
        """One ``PlivoCallControl`` per stream, for its ``callId``. ``auth_id`` defaults to
        ``$PLIVO_AUTH_ID``, else the stream's ``accountId`` (the Auth ID of the account it runs on)."""

        token = credential(auth_token, AUTH_TOKEN_ENV)
        if not token:  # fail when the server is built, not on the first call
            raise ValueError(f"Plivo call control needs auth_token (or ${AUTH_TOKEN_ENV})")

        def make(start: StreamStart) -> PlivoCallControl:
            account = auth_id or os.environ.get(AUTH_ID_ENV) or start.account_id or None
            return cls(
                start.call_id,
                auth_id=account,
                auth_token=token,
                transfer_url=transfer_url,
                base_url=base_url,
                timeout=timeout,
            )

        return make

    # ---- HTTP -----------------------------------------------------------------------------------

    async def _request(
        self, method: str, url: str, body: dict[str, Any] | None, action: str
    ) -> tuple[int, bytes]:
        content = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            with anyio.fail_after(self._timeout):
                async with (
                    httpx2.AsyncClient(timeout=self._timeout, auth=self._auth) as client,
                    client.stream(method, url, content=content, headers=headers) as response,
                ):
                    received = bytearray()
                    async for piece in response.aiter_bytes():
                        received += piece
                        if len(received) > MAX_RESPONSE_BYTES:
                            break  # the status is what matters; a huge body is not read further
                    return response.status_code, bytes(received[:MAX_RESPONSE_BYTES])
        except TimeoutError:
            raise CallControlError(f"Plivo {action}: no answer within {self._timeout} s") from None
        except httpx2.HTTPError as exc:
            raise CallControlError(f"Plivo {action}: {type(exc).__name__}: {str(exc)[:200]}") from None

    def _expect(self, status: int, body: bytes, ok: tuple[int, ...], action: str) -> None:
        if status in ok:
            return
        raise CallControlError(
            f"Plivo {action} failed: HTTP {status}: {_error_text(body)}", status_code=status
        )


def _error_text(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return body[:200].decode("utf-8", "replace")
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])[:200]
    return body[:200].decode("utf-8", "replace")
