"""TelnyxStreamAuth: the documented x-telnyx-streaming-auth-token header (or a URL token for TeXML)
must match; anything else is refused with a reason that never contains the secret."""

from __future__ import annotations

import pytest

from voiceagent.adapters.telnyx import STREAM_AUTH_HEADER, TelnyxStreamAuth
from voiceagent.telephony import UpgradeAuth, UpgradeRequest

TOKEN = "stream-secret-7f3a9c"


def _request(path: str = "/media", **headers: str) -> UpgradeRequest:
    pairs = [("Host", "bot.example.com"), *((k.replace("_", "-"), v) for k, v in headers.items())]
    return UpgradeRequest(path=path, headers=tuple(pairs))


def _header(value: str) -> UpgradeRequest:
    return UpgradeRequest("/media", (("Host", "h"), (STREAM_AUTH_HEADER, value)))


def test_the_header_token_is_accepted_in_any_case_of_the_name() -> None:
    auth: UpgradeAuth = TelnyxStreamAuth(TOKEN)
    assert auth.check(_header(TOKEN)) is None
    assert auth.check(UpgradeRequest("/media", (("X-Telnyx-Streaming-Auth-Token", TOKEN),))) is None


@pytest.mark.parametrize(
    "request_",
    [
        _request(),
        _header(TOKEN + "x"),
        _header(TOKEN[:-1]),
        _header(""),
        _header("Bearer " + TOKEN),
        UpgradeRequest("/media", ((STREAM_AUTH_HEADER, TOKEN), (STREAM_AUTH_HEADER, TOKEN))),
        _request(f"/media?token={TOKEN}"),  # the query is only read when asked for
    ],
)
def test_anything_else_is_refused_without_echoing_the_secret(request_: UpgradeRequest) -> None:
    reason = TelnyxStreamAuth(TOKEN).check(request_)
    assert reason is not None and TOKEN not in reason


def test_texml_streams_can_carry_the_token_in_the_url() -> None:
    auth = TelnyxStreamAuth(TOKEN, query_param="token")
    assert auth.check(_request(f"/media?token={TOKEN}")) is None
    assert auth.check(_request(f"/media?call=1&token={TOKEN}")) is None
    for path in ("/media", "/media?token=", f"/media?token={TOKEN}&token={TOKEN}", "/media?token=nope"):
        reason = auth.check(_request(path))
        assert reason is not None and TOKEN not in reason
    assert auth.check(_header("wrong")) is not None  # a present header wins over the query
    assert auth.check(UpgradeRequest(f"/media?token={TOKEN}", ((STREAM_AUTH_HEADER, TOKEN),))) is None


def test_the_token_must_be_usable() -> None:
    with pytest.raises(ValueError):
        TelnyxStreamAuth("")
    with pytest.raises(ValueError):
        TelnyxStreamAuth("x" * 4001)
