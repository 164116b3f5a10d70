"""X-Twilio-Signature validation (Twilio's webhook security docs, after twilio-python's RequestValidator).

The signed string is the full URL (with its query string) followed, for form POSTs, by every
parameter as ``name + value`` sorted by name (several values of one name sorted, duplicates once, as
the reference validator does). HMAC-SHA1 keyed with the Auth Token, base64, compared in constant
time. Twilio is inconsistent about the default port, so the URL is tried with and without it. For
JSON bodies Twilio appends ``?bodySHA256=<hex sha256 of the body>`` and signs the URL alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qs, urlsplit, urlunsplit

SIGNATURE_HEADER = "X-Twilio-Signature"
_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}
_ALGORITHMS = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}

FormParams = Mapping[str, str | Sequence[str]]


def compute_signature(
    auth_token: str, url: str, params: FormParams | None = None, *, algorithm: str = "HMAC_SHA1"
) -> str:
    digest = _ALGORITHMS.get(algorithm.upper())
    if digest is None:
        raise ValueError(f"unsupported signature algorithm {algorithm!r}")
    signed = url
    for name in sorted(params or {}):
        values = (params or {})[name]
        for value in sorted({values} if isinstance(values, str) else set(values)):
            signed += name + value
    mac = hmac.new(auth_token.encode("utf-8"), signed.encode("utf-8"), digest)
    return base64.b64encode(mac.digest()).decode("ascii")


def validate_signature(
    auth_token: str, url: str, params: FormParams | None, signature: str, *, algorithm: str = "HMAC_SHA1"
) -> bool:
    """Validate a form-encoded (or parameterless) request: False on any mismatch, never raises."""
    if algorithm.upper() not in _ALGORITHMS:
        return False
    candidates = {_with_default_port(url), _without_port(url)}
    expected = signature.encode("utf-8", "surrogatepass")
    return any(
        hmac.compare_digest(
            compute_signature(auth_token, candidate, params, algorithm=algorithm).encode(), expected
        )
        for candidate in candidates
    )


def validate_json_signature(
    auth_token: str, url: str, body: bytes | str, signature: str, *, algorithm: str = "HMAC_SHA1"
) -> bool:
    """Validate a JSON-body request: ``bodySHA256`` in the URL must hash the body; the URL alone is signed."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    declared = parse_qs(urlsplit(url).query).get("bodySHA256")
    if not declared:
        return False
    body_ok = hmac.compare_digest(hashlib.sha256(raw).hexdigest().encode(), declared[0].encode())
    return validate_signature(auth_token, url, None, signature, algorithm=algorithm) and body_ok


def _with_default_port(url: str) -> str:
    parts = urlsplit(url)
    if parts.port is not None or parts.scheme not in _DEFAULT_PORTS:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.netloc}:{_DEFAULT_PORTS[parts.scheme]}"))


def _without_port(url: str) -> str:
    parts = urlsplit(url)
    if parts.port is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]))
