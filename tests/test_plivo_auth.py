"""X-Plivo-Signature-V3: our signer against the official SDK's validate_v3_signature, and the upgrade auth."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plivo.utils import validate_v3_signature as sdk_validate

from voiceagent.adapters.plivo import (
    MAIN_ACCOUNT_SIGNATURE_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    PlivoSignatureAuth,
    compute_signature_v3,
    plivo_upgrade_auth,
    validate_signature_v3,
)
from voiceagent.adapters.plivo.signature import signed_string
from voiceagent.telephony import UpgradeRequest

TOKEN = "plivo-test-auth-token"
URL = "wss://bot.example.com/plivo/stream"


def test_the_documented_example_string() -> None:
    """https://www.plivo.com/docs/voice/concepts/signature-validation: URL, '.', sorted POST params."""
    params = {
        "Digits": "1234",
        "To": "+15555555555",
        "From": "+15551111111",
        "CallUUID": "4vbcpem8-0u46-x1ha-9af1-438vc92bf374",
    }
    assert signed_string("POST", "https://example.com/abcd?foo=bar", params) == (
        "https://example.com/abcd?foo=bar.CallUUID4vbcpem8-0u46-x1ha-9af1-438vc92bf374"
        "Digits1234From+15551111111To+15555555555"
    )
    assert signed_string("GET", "wss://h/p?b=2&a=1&a=0") == "wss://h/p?a=0&a=1&b=2"


def test_signatures_validate_with_the_official_sdk() -> None:
    for method, params in (("GET", None), ("POST", {"CallUUID": "c1", "To": "+1555"})):
        signature = compute_signature_v3(
            TOKEN, "https://bot.example.com/answer?x=1", "n0nce", method=method, params=params
        )
        assert sdk_validate(
            method, "https://bot.example.com/answer?x=1", "n0nce", TOKEN, signature, dict(params or {})
        )
        assert not sdk_validate(
            method, "https://bot.example.com/answer?x=2", "n0nce", TOKEN, signature, dict(params or {})
        )


_safe = st.text(string.ascii_letters + string.digits + "-_.~", min_size=1, max_size=8)
_query = st.lists(
    st.tuples(_safe, st.text(string.ascii_letters + string.digits + "-_", max_size=6)), max_size=4
)


@settings(max_examples=200)
@given(
    st.sampled_from(["https", "http"]),  # the SDK's validator takes http(s) URLs only
    st.lists(_safe, max_size=3),
    _query,
    st.sampled_from(["GET", "POST"]),
    st.dictionaries(
        _safe,
        st.text(string.printable.strip(), max_size=10) | st.lists(_safe, min_size=1, max_size=3),
        max_size=4,
    ),
    _safe,
    st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=30),
)
def test_fuzz_our_signature_is_the_sdks(
    scheme: str,
    path: list[str],
    query: list[tuple[str, str]],
    method: str,
    params: dict[str, str | list[str]],
    nonce: str,
    token: str,
) -> None:
    url = f"{scheme}://bot.example.com/{'/'.join(path)}" + (
        "?" + "&".join(f"{k}={v}" for k, v in query) if query else ""
    )
    signature = compute_signature_v3(token, url, nonce, method=method, params=params)
    assert sdk_validate(method, url, nonce, token, signature, dict(params)) is True
    assert validate_signature_v3(token, url, nonce, f"junk,{signature}", method=method, params=params)
    wrong = compute_signature_v3(token + "x", url, nonce, method=method, params=params)
    assert sdk_validate(method, url, nonce, token, wrong, dict(params)) is False
    assert not validate_signature_v3(token, url, nonce, wrong, method=method, params=params)


def _request(
    headers: dict[str, str] | list[tuple[str, str]],
    path: str = "/plivo/stream",
    host: str = "bot.example.com",
) -> UpgradeRequest:
    pairs = list(headers.items()) if isinstance(headers, dict) else headers
    return UpgradeRequest(path=path, headers=(("Host", host), *pairs))


def test_upgrade_auth_accepts_plivos_signatures() -> None:
    auth = PlivoSignatureAuth(TOKEN)
    signature = compute_signature_v3(TOKEN, URL, "abc123")
    assert auth.check(_request({SIGNATURE_HEADER: signature, NONCE_HEADER: "abc123"})) is None
    # The main-account header, several signatures in one header, and the https:// spelling of the URL
    # (how Plivo's Node stream SDK reconstructs it) are all Plivo's.
    assert auth.check(_request({MAIN_ACCOUNT_SIGNATURE_HEADER: signature, NONCE_HEADER: "abc123"})) is None
    assert auth.check(_request({SIGNATURE_HEADER: f"other,{signature}", NONCE_HEADER: "abc123"})) is None
    https = compute_signature_v3(TOKEN, "https://bot.example.com/plivo/stream?a=1", "n")
    assert (
        auth.check(_request({SIGNATURE_HEADER: https, NONCE_HEADER: "n"}, path="/plivo/stream?a=1")) is None
    )
    public = PlivoSignatureAuth(TOKEN, public_url="wss://public.example.com/s")
    signed = compute_signature_v3(TOKEN, "wss://public.example.com/s", "n")
    assert public.check(_request({SIGNATURE_HEADER: signed, NONCE_HEADER: "n"}, path="/internal")) is None


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, NONCE_HEADER),
        ({NONCE_HEADER: "n"}, f"no {SIGNATURE_HEADER}"),
        (
            {NONCE_HEADER: "n", SIGNATURE_HEADER: compute_signature_v3("other-token", URL, "n")},
            "does not match",
        ),
        ({NONCE_HEADER: "m", SIGNATURE_HEADER: compute_signature_v3(TOKEN, URL, "n")}, "does not match"),
        (
            {NONCE_HEADER: "n", SIGNATURE_HEADER: compute_signature_v3(TOKEN, URL + "/x", "n")},
            "does not match",
        ),
        ({NONCE_HEADER: "n" * 300, SIGNATURE_HEADER: "x"}, "oversized"),
        ({NONCE_HEADER: "n", SIGNATURE_HEADER: "x" * 2000}, "oversized"),
        (
            [
                (NONCE_HEADER, "n"),
                (NONCE_HEADER, "n"),
                (SIGNATURE_HEADER, compute_signature_v3(TOKEN, URL, "n")),
            ],
            "repeated",
        ),
    ],
)
def test_upgrade_auth_refuses_with_a_reason(
    headers: dict[str, str] | list[tuple[str, str]], reason: str
) -> None:
    refusal = PlivoSignatureAuth(TOKEN).check(_request(headers))
    assert refusal is not None and reason in refusal and TOKEN not in refusal


def test_servers_refuse_to_start_unsigned_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLIVO_AUTH_TOKEN", raising=False)
    with pytest.raises(ValueError, match="allow_unsigned=True"):
        plivo_upgrade_auth()
    assert plivo_upgrade_auth(allow_unsigned=True) is None
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", TOKEN)
    auth = plivo_upgrade_auth()
    assert isinstance(auth, PlivoSignatureAuth)
    assert (
        auth.check(_request({SIGNATURE_HEADER: compute_signature_v3(TOKEN, URL, "n"), NONCE_HEADER: "n"}))
        is None
    )
    with pytest.raises(ValueError, match="wss://"):
        PlivoSignatureAuth(TOKEN, public_url="https://x/y")
