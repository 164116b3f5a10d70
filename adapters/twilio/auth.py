"""``TwilioSignatureAuth``: Twilio signs the ``wss://`` URL it dials with your Auth Token."""

from __future__ import annotations

from voiceagent.logs import register_secret
from voiceagent.telephony import UpgradeRequest

from .signature import SIGNATURE_HEADER, validate_signature


class TwilioSignatureAuth:
    """An ``UpgradeAuth``: exactly one ``X-Twilio-Signature``, the HMAC-SHA1 of the dialed URL (the
    server's ``public_url``, else ``wss://`` + the one Host header + the path) keyed with the token."""

    def __init__(self, auth_token: str) -> None:
        if not auth_token:
            raise ValueError("TwilioSignatureAuth needs your Twilio Auth Token")
        self._auth_token = auth_token
        register_secret(auth_token)  # never in a log line

    def check(self, request: UpgradeRequest) -> str | None:
        signatures = request.get_all(SIGNATURE_HEADER)
        if len(signatures) != 1:
            return f"{len(signatures)} {SIGNATURE_HEADER} headers"
        if request.public_url is None and len(request.get_all("Host")) != 1:
            return "no single Host"
        url = request.url
        if not validate_signature(self._auth_token, url, {}, signatures[0]):
            return f"bad {SIGNATURE_HEADER} for {url[:200]}"
        return None
