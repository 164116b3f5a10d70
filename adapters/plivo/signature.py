"""X-Plivo-Signature-V3: Plivo's request signing (https://www.plivo.com/docs/voice/concepts/signature-validation).

The signed string is the request URL, then, for a GET, every query parameter sorted by name as
``name=value`` joined by ``&`` (values decoded, several values of one name sorted); for a POST, the
URL's own sorted query, a ``.`` when there are both, and every POST parameter as ``namevalue`` sorted
by name. Then ``.`` and the ``X-Plivo-Signature-V3-Nonce``. HMAC-SHA256 keyed with the Auth Token,
base64. The header may hold several signatures separated by commas; any one matching is enough. This
follows the official SDK's ``plivo.utils.validate_v3_signature`` step by step (the tests check every
case against it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qs, urlparse, urlunparse

SIGNATURE_HEADER = "X-Plivo-Signature-V3"
MAIN_ACCOUNT_SIGNATURE_HEADER = "X-Plivo-Signature-Ma-V3"  # signed with the main account's token
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"

Params = Mapping[str, str | Sequence[str]]


def signed_string(method: str, url: str, params: Params | None = None) -> str:
    """The string Plivo signs for ``method`` ``url`` (before the nonce)."""
    params = dict(params or {})
    parts = urlparse(url)
    base = urlunparse((parts.scheme, parts.netloc, parts.path, "", "", ""))
    if method.upper() == "GET":
        merged: dict[str, str | Sequence[str]] = {**params, **parse_qs(parts.query, keep_blank_values=True)}
        query = _sorted_query(merged)
        return base + ("?" + query if query else "")
    query = _sorted_query(dict(parse_qs(parts.query, keep_blank_values=True)))
    if query or params:
        base += "?" + query
    if query and params:
        base += "."
    return base + "".join(
        name + value if isinstance(value, str) else "".join(name + v for v in sorted(value))
        for name, value in sorted(params.items())
    )


def compute_signature_v3(
    auth_token: str, url: str, nonce: str, *, method: str = "GET", params: Params | None = None
) -> str:
    message = f"{signed_string(method, url, params)}.{nonce}".encode()
    mac = hmac.new(auth_token.encode("utf-8"), message, hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def validate_signature_v3(
    auth_token: str,
    url: str,
    nonce: str,
    signature: str,
    *,
    method: str = "GET",
    params: Params | None = None,
) -> bool:
    """True when one of the comma-separated ``signature``s is the V3 signature; never raises."""
    expected = compute_signature_v3(auth_token, url, nonce, method=method, params=params).encode()
    candidates = signature.encode("utf-8", "surrogatepass").split(b",")
    # Compare with every candidate (constant time each) so the position of a match leaks nothing.
    return sum(hmac.compare_digest(expected, candidate) for candidate in candidates) > 0


def _sorted_query(params: Mapping[str, str | Sequence[str]]) -> str:
    pieces = []
    for name in sorted(params):
        value = params[name]
        if isinstance(value, str):
            pieces.append(f"{name}={value}")
        else:
            pieces.append("&".join(f"{name}={v}" for v in sorted(value)))
    return "&".join(pieces)
