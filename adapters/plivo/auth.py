"""``PlivoSignatureAuth``: the ``UpgradeAuth`` that checks Plivo's signature on a stream's WebSocket upgrade.

Plivo "signs all HTTP requests from its servers to your application server"
(https://www.plivo.com/docs/voice/concepts/signature-validation) with ``X-Plivo-Signature-V3`` (the
account's Auth Token; ``X-Plivo-Signature-Ma-V3`` with the main account's) and a per-request
``X-Plivo-Signature-V3-Nonce``; the upgrade is a GET of the ``<Stream>`` URL. Plivo's own stream SDK
for Node (github.com/plivo/plivo-stream-sdk-node, ``validateSignature``) checks exactly that on the
upgrade, with the URL written ``https://`` + Host + path; the URL Plivo was given is ``wss://``. Both
spellings are tried, so either way of signing is accepted.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from voiceagent.logs import register_secret
from voiceagent.telephony.auth import UpgradeAuth, UpgradeRequest
from voiceagent.telephony.credentials import FROM_ENV, upgrade_secret

from .signature import MAIN_ACCOUNT_SIGNATURE_HEADER, NONCE_HEADER, SIGNATURE_HEADER, validate_signature_v3

AUTH_TOKEN_ENV = "PLIVO_AUTH_TOKEN"
# Real nonces are ~20 characters and a header holds one or two 44-character signatures; anything far
# longer is refused before any HMAC is computed.
MAX_NONCE_CHARS = 256
MAX_SIGNATURE_CHARS = 1024
_TWIN_SCHEMES = {"wss": "https", "https": "wss", "ws": "http", "http": "ws"}


class PlivoSignatureAuth:
    """Accepts an upgrade whose V3 (or main-account V3) signature matches ``auth_token``.

    ``public_url`` is the ``wss://`` URL in your ``<Stream>`` XML; without it the URL is ``wss://`` +
    the request's Host + path, right behind a proxy that keeps Host.
    """

    def __init__(self, auth_token: str, *, public_url: str | None = None) -> None:
        if not auth_token:
            raise ValueError("PlivoSignatureAuth needs your Plivo Auth Token")
        if public_url is not None and not public_url.startswith(("wss://", "ws://")):
            raise ValueError(f"public_url must be the wss:// URL in your <Stream> XML: {public_url!r}")
        self._auth_token = auth_token
        register_secret(auth_token)  # never in a log line
        self.public_url = public_url

    def check(self, request: UpgradeRequest) -> str | None:
        nonces = request.get_all(NONCE_HEADER)
        if len(nonces) != 1 or not nonces[0] or len(nonces[0]) > MAX_NONCE_CHARS:
            return f"missing, repeated or oversized {NONCE_HEADER}"
        signatures = request.get_all(SIGNATURE_HEADER) + request.get_all(MAIN_ACCOUNT_SIGNATURE_HEADER)
        if not signatures:
            return f"no {SIGNATURE_HEADER} header"
        if len(signatures) > 2 or any(len(s) > MAX_SIGNATURE_CHARS for s in signatures):
            return "repeated or oversized signature headers"
        url = request.public_url or self.public_url or request.url
        for candidate in _spellings(url):
            for signature in signatures:
                if validate_signature_v3(self._auth_token, candidate, nonces[0], signature):
                    return None
        return f"{SIGNATURE_HEADER} does not match the stream URL"


def plivo_upgrade_auth(
    auth_token: str | None = FROM_ENV, *, public_url: str | None = None, allow_unsigned: bool = False
) -> UpgradeAuth | None:
    """The auth a Plivo stream server uses: ``PlivoSignatureAuth`` with ``auth_token`` (default
    ``$PLIVO_AUTH_TOKEN``). Without a token this refuses, unless ``allow_unsigned=True`` (then it is
    ``None``: anyone who learns the URL can run up your STT, LLM and TTS bills)."""
    token = upgrade_secret(
        auth_token,
        AUTH_TOKEN_ENV,
        allow_unsigned=allow_unsigned,
        refusal=f"a Plivo stream server needs your Plivo Auth Token to check {SIGNATURE_HEADER}: pass "
        f"auth_token= or set {AUTH_TOKEN_ENV}. To accept unsigned upgrades (anyone who learns the URL "
        "can then place calls on your bill) pass allow_unsigned=True.",
    )
    return None if token is None else PlivoSignatureAuth(token, public_url=public_url)


def _spellings(url: str) -> list[str]:
    parts = urlsplit(url)
    twin = _TWIN_SCHEMES.get(parts.scheme)
    return [url] if twin is None else [url, urlunsplit(parts._replace(scheme=twin))]
