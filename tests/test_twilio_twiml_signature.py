from __future__ import annotations

import base64
import hashlib
import hmac
import xml.etree.ElementTree as ET

import pytest

from voiceagent.adapters.twilio import (
    compute_signature,
    connect_stream_twiml,
    validate_json_signature,
    validate_signature,
)

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}


def independent(token: str, url: str, params: dict[str, list[str]]) -> str:
    data = url + "".join(name + value for name in sorted(params) for value in sorted(set(params[name])))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def test_twiml_connect_stream_with_escaped_parameters() -> None:
    xml = connect_stream_twiml(
        "wss://example.com/media",
        {"caller": 'A&B <"x">', "lang": "en"},
        name="bot",
        status_callback="https://example.com/status?x=1&y=2",
    )
    root = ET.fromstring(xml)
    stream = root.find("./Connect/Stream")
    assert root.tag == "Response" and stream is not None
    assert stream.get("url") == "wss://example.com/media"
    assert stream.get("name") == "bot"
    assert stream.get("statusCallback") == "https://example.com/status?x=1&y=2"
    assert [(p.get("name"), p.get("value")) for p in stream.findall("Parameter")] == [
        ("caller", 'A&B <"x">'),
        ("lang", "en"),
    ]
    assert "&amp;" in xml and "&lt;" in xml


@pytest.mark.parametrize(
    "url",
    [
        "ws://example.com/media",
        "https://example.com/media",
        "wss://example.com/media?token=1",
        "wss://example.com:8443/media",
        "wss:///nohost",
    ],
)
def test_twiml_rejects_urls_twilio_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        connect_stream_twiml(url)


def test_signature_matches_an_independent_computation() -> None:
    expected = independent(TOKEN, URL, {k: [v] for k, v in PARAMS.items()})
    assert compute_signature(TOKEN, URL, PARAMS) == expected
    assert validate_signature(TOKEN, URL, PARAMS, expected)
    assert not validate_signature(TOKEN, URL, {**PARAMS, "Digits": "1235"}, expected)
    assert not validate_signature("other", URL, PARAMS, expected)
    assert not validate_signature(TOKEN, URL, PARAMS, expected[:-2])
    assert not validate_signature(TOKEN, URL, PARAMS, "")


def test_signature_sorts_multi_valued_params() -> None:
    params = {"b": ["2", "1"], "a": "z"}
    expected = independent(TOKEN, "https://x.test/hook", {"a": ["z"], "b": ["1", "2"]})
    assert compute_signature(TOKEN, "https://x.test/hook", params) == expected


def test_signature_is_tried_with_and_without_the_default_port() -> None:
    signed_with_port = independent(TOKEN, "https://mycompany.com:443/myapp", {})
    signed_without_port = independent(TOKEN, "https://mycompany.com/myapp", {})
    assert validate_signature(TOKEN, "https://mycompany.com/myapp", {}, signed_with_port)
    assert validate_signature(TOKEN, "https://mycompany.com:443/myapp", {}, signed_without_port)
    assert validate_signature(
        TOKEN, "wss://mycompany.com/media", {}, independent(TOKEN, "wss://mycompany.com:443/media", {})
    )


def test_json_body_signature_checks_body_hash() -> None:
    body = '{"property": "value", "boolean": true}'
    url = "https://mycompany.com/myapp?bodySHA256=" + hashlib.sha256(body.encode()).hexdigest()
    signature = independent(TOKEN, url, {})
    assert validate_json_signature(TOKEN, url, body, signature)
    assert not validate_json_signature(TOKEN, url, body + " ", signature)
    assert not validate_json_signature(
        TOKEN, "https://mycompany.com/myapp", body, independent(TOKEN, "https://mycompany.com/myapp", {})
    )


def test_cross_check_with_twilio_request_validator() -> None:
    request_validator = pytest.importorskip("twilio.request_validator")
    validator = request_validator.RequestValidator(TOKEN)
    for url, params in [
        (URL, PARAMS),
        ("https://mycompany.com:443/x", {}),
        ("https://a.test/p", {"n": "é ü"}),
    ]:
        ours = compute_signature(TOKEN, url, params)
        assert ours == validator.compute_signature(url, params)
        assert validator.validate(url, params, ours) and validate_signature(TOKEN, url, params, ours)
    body = '{"a": 1}'
    url = "https://mycompany.com/myapp?bodySHA256=" + hashlib.sha256(body.encode()).hexdigest()
    signature = compute_signature(TOKEN, url)
    assert validator.validate(url, body, signature) and validate_json_signature(TOKEN, url, body, signature)
    sha256_sig = compute_signature(TOKEN, URL, PARAMS, algorithm="HMAC_SHA256")
    assert sha256_sig == validator.compute_signature(URL, PARAMS, "HMAC_SHA256")
