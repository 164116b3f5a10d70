"""``TelnyxCallControl``: hang up, transfer and send DTMF over Telnyx's Call Control v2 REST API.

Each is one ``POST {base_url}/calls/{call_control_id}/actions/{action}`` with a JSON body and
``Authorization: Bearer <API key>`` (https://developers.telnyx.com/docs/voice/programmable-voice/sending-commands):
``hangup`` (https://developers.telnyx.com/api-reference/call-commands/hangup-call), ``transfer``
``{"to": ...}`` (an E.164 number or a SIP URI,
https://developers.telnyx.com/api-reference/call-commands/transfer-call) and ``send_dtmf``
``{"digits": ...}`` (0-9, A-D, * and #, with ``w``/``W`` for 0.5 s / 1 s pauses,
https://developers.telnyx.com/api-reference/call-commands/send-dtmf). Telnyx answers 200 with
``{"data": {"result": "ok"}}``, errors with ``{"errors": [{"code", "title", "detail"}]}``.

A hang-up of a call that has already ended (422, error 90018) counts as done: the call is gone either
way. Any other failure raises ``CallControlError`` with the HTTP status (``None`` for a transport
failure or a timeout); each request is bounded by ``timeout`` seconds in all, and a response body is
read up to 64 KiB.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import anyio
import httpx2

from voiceagent.logs import get_logger, register_secret
from voiceagent.telephony.control import CallControlError
from voiceagent.telephony.events import StreamStart

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_BASE_URL",
    "TelnyxCallControl",
    "telnyx_control_factory",
]

logger = get_logger(__name__)

DEFAULT_BASE_URL = "https://api.telnyx.com/v2"
API_KEY_ENV = "TELNYX_API_KEY"
CALL_ENDED = "90018"  # "Call has already ended" (https://developers.telnyx.com/api/errors/90018)
_MAX_BODY = 64 * 1024
_DIGITS = re.compile(r"[0-9A-D*#wW]{1,64}")
_SEGMENT_SAFE = "!$&'()*+,;=:@"  # RFC 3986 pchar, what Telnyx's own SDK leaves unescaped in a path


class TelnyxCallControl:
    """``CallControl`` for one Telnyx call leg (its ``call_control_id``, from the stream's start)."""

    def __init__(
        self,
        call_control_id: str,
        *,
        api_key: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        client: httpx2.AsyncClient | None = None,
    ) -> None:
        if not call_control_id or call_control_id in (".", ".."):
            raise ValueError("call_control_id must be a non-empty id")
        api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if not api_key:
            raise ValueError(f"TelnyxCallControl needs a Telnyx API key: pass api_key= or set {API_KEY_ENV}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        register_secret(api_key)
        self.call_control_id = call_control_id
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._client = client

    def action_url(self, action: str) -> str:
        return f"{self._base_url}/calls/{quote(self.call_control_id, safe=_SEGMENT_SAFE)}/actions/{action}"

    async def hang_up(self) -> None:
        try:
            await self._action("hangup", {})
        except _CallEnded:
            logger.info("telnyx hang-up: the call had already ended")

    async def transfer(self, to: str) -> None:
        if not isinstance(to, str) or not to.strip() or len(to) > 512:
            raise CallControlError("transfer needs a destination: an E.164 number or a SIP URI")
        await self._action("transfer", {"to": to.strip()})

    async def send_dtmf(self, digits: str) -> None:
        if not isinstance(digits, str) or not _DIGITS.fullmatch(digits):
            raise CallControlError("DTMF digits must be 1 to 64 of 0-9, A-D, *, # (w and W pause)")
        await self._action("send_dtmf", {"digits": digits})

    async def _action(self, action: str, body: Mapping[str, Any]) -> None:
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        try:
            with anyio.fail_after(self._timeout):
                if self._client is not None:
                    status, raw = await _post(self._client, self.action_url(action), headers, body)
                else:
                    async with httpx2.AsyncClient(timeout=self._timeout) as client:
                        status, raw = await _post(client, self.action_url(action), headers, body)
        except TimeoutError:
            raise CallControlError(f"telnyx {action}: no answer within {self._timeout:g} s") from None
        except httpx2.HTTPError as exc:
            raise CallControlError(f"telnyx {action}: {type(exc).__name__}: {str(exc)[:120]}") from None
        if 200 <= status < 300:
            return
        codes, message = _errors(raw)
        if action == "hangup" and status == 422 and CALL_ENDED in codes:
            raise _CallEnded
        raise CallControlError(f"telnyx {action} failed ({status}): {message}", status_code=status)


class _CallEnded(Exception):
    pass


async def _post(
    client: httpx2.AsyncClient, url: str, headers: Mapping[str, str], body: Mapping[str, Any]
) -> tuple[int, bytes]:
    data = bytearray()
    async with client.stream("POST", url, headers=headers, content=json.dumps(body).encode()) as response:
        async for chunk in response.aiter_bytes():
            data += chunk[: _MAX_BODY - len(data)]
            if len(data) >= _MAX_BODY:
                break
        return response.status_code, bytes(data)


def _errors(raw: bytes) -> tuple[set[str], str]:
    """Telnyx's error codes and a short message from its ``{"errors": [...]}`` body."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return set(), raw[:120].decode("utf-8", "replace") or "no body"
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return set(), "unexpected error body"
    codes: set[str] = set()
    parts: list[str] = []
    for error in errors[:5]:
        if isinstance(error, dict):
            codes.add(str(error.get("code", "")))
            parts.append(f"{error.get('code', '?')} {error.get('title', '')}: {error.get('detail', '')}")
    return codes, "; ".join(parts)[:240] or "no error detail"


def telnyx_control_factory(
    *, api_key: str | None = None, base_url: str = DEFAULT_BASE_URL, timeout: float = 10.0
) -> Callable[[StreamStart], TelnyxCallControl]:
    """A ``control_factory`` for a media-stream server: the call control of each stream's call."""
    api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    if not api_key:
        raise ValueError(f"Telnyx call control needs an API key: pass api_key= or set {API_KEY_ENV}")

    def factory(start: StreamStart) -> TelnyxCallControl:
        return TelnyxCallControl(start.call_id, api_key=api_key, base_url=base_url, timeout=timeout)

    return factory
