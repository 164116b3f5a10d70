"""Twilio's async answering-machine detection: the ``AsyncAmdStatusCallback`` webhook.

Place the outbound call with ``MachineDetection=Enable`` (or ``DetectMessageEnd``), ``AsyncAmd=true``
and ``AsyncAmdStatusCallback=<this webhook's URL>``; the media stream starts at once and, when Twilio
has decided, it POSTs a form (``CallSid``, ``AccountSid``, ``AnsweredBy``, ``MachineDetectionDuration``)
signed with ``X-Twilio-Signature``. ``TwilioAmdWebhook.handle`` checks the signature over the URL and
the form, and routes the result to the running call's session by CallSid (``CallRegistry``).

It is framework-free: give it the method, the public URL Twilio posted to, the headers and the body
from any HTTP server, and send back the status and body it returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import parse_qs

from voiceagent.logs import get_logger, register_secret
from voiceagent.telephony.amd import ANSWERED_BY, AnsweredBy, AnsweringMachineResult, CallRegistry

from .signature import SIGNATURE_HEADER, validate_signature

__all__ = ["MAX_BODY", "TwilioAmdWebhook", "WebhookAnswer"]

logger = get_logger(__name__)

MAX_BODY = 16 * 1024  # an AMD callback is a few hundred bytes


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    status: int
    body: str = ""


class TwilioAmdWebhook:
    """``registry``: where running calls are found by CallSid. ``auth_token``: your Twilio Auth Token
    (requests are refused unsigned)."""

    def __init__(self, auth_token: str, registry: CallRegistry) -> None:
        if not auth_token:
            raise ValueError("auth_token is required: AMD callbacks are refused unless signed")
        register_secret(auth_token)
        self._auth_token = auth_token
        self.registry = registry
        self.delivered: list[AnsweringMachineResult] = []
        self.rejected = 0

    def handle(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> WebhookAnswer:
        """One callback. ``url``: the full URL Twilio posted to (as configured, with any query string);
        ``headers`` by any case."""
        if method.upper() != "POST":
            return WebhookAnswer(405, "POST only\n")
        if len(body) > MAX_BODY:
            return self._reject(413, f"body of {len(body)} bytes")
        lowered = {name.lower(): value for name, value in headers.items()}
        signature = lowered.get(SIGNATURE_HEADER.lower())
        if not signature:
            return self._reject(403, f"no {SIGNATURE_HEADER}")
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            return self._reject(400, "body is not a form")
        if not validate_signature(self._auth_token, url, form, signature):
            return self._reject(403, f"bad {SIGNATURE_HEADER} for {url[:200]}")
        call_sid = _one(form, "CallSid")
        answered_by = _one(form, "AnsweredBy")
        if not call_sid or answered_by not in ANSWERED_BY:
            return self._reject(400, "CallSid or AnsweredBy missing or unknown")
        duration = _one(form, "MachineDetectionDuration")
        result = AnsweringMachineResult(
            call_id=call_sid,
            answered_by=cast(AnsweredBy, answered_by),
            detection_ms=int(duration) if duration and duration.isdigit() else None,
        )
        if not self.registry.deliver(result):
            logger.warning("AMD result for call %s, which is not running here", call_sid[:40])
            return WebhookAnswer(404, "no such call\n")
        self.delivered.append(result)
        logger.info("AMD: call %s answered by %s", call_sid, answered_by)
        return WebhookAnswer(204)

    def _reject(self, status: int, why: str) -> WebhookAnswer:
        self.rejected += 1
        logger.warning("AMD callback refused (%d): %s", status, why)
        return WebhookAnswer(status, "refused\n")


def _one(form: Mapping[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values and len(values) == 1 else None
