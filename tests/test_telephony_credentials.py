"""voiceagent.telephony.credentials: the one rule for a provider credential given or read from the
environment, and the refusal to run a media-stream server that checks nothing."""

from __future__ import annotations

import pytest

from voiceagent.adapters.plivo import PlivoServer
from voiceagent.adapters.telnyx import TelnyxServer
from voiceagent.adapters.twilio import TwilioServer
from voiceagent.telephony.credentials import FROM_ENV, credential, upgrade_secret

ENV = "VOICEAGENT_TEST_SECRET"


async def _handler(stream: object) -> None:
    pass


def test_a_credential_is_taken_as_given_or_read_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert credential(FROM_ENV, ENV) is None
    monkeypatch.setenv(ENV, "")
    assert credential(FROM_ENV, ENV) is None  # empty counts as unset
    monkeypatch.setenv(ENV, "s3cret")
    assert credential(FROM_ENV, ENV) == "s3cret"
    assert credential("given", ENV) == "given" and credential(None, ENV) is None  # None: none, not the env


def test_no_upgrade_secret_is_refused_unless_unsigned_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(ValueError, match=r"^no secret$"):
        upgrade_secret(FROM_ENV, ENV, allow_unsigned=False, refusal="no secret")
    with pytest.raises(ValueError, match=r"^no secret$"):
        upgrade_secret(None, ENV, allow_unsigned=False, refusal="no secret")
    assert upgrade_secret(None, ENV, allow_unsigned=True, refusal="no secret") is None
    monkeypatch.setenv(ENV, "tok")
    assert upgrade_secret(FROM_ENV, ENV, allow_unsigned=False, refusal="no secret") == "tok"


@pytest.mark.parametrize(
    ("server", "env", "argument"),
    [
        (TwilioServer, "TWILIO_AUTH_TOKEN", "auth_token"),
        (TelnyxServer, "TELNYX_STREAM_AUTH_TOKEN", "stream_auth_token"),
        (PlivoServer, "PLIVO_AUTH_TOKEN", "auth_token"),
    ],
)
def test_each_providers_server_reads_its_secret_from_its_variable_and_refuses_none(
    monkeypatch: pytest.MonkeyPatch, server: type, env: str, argument: str
) -> None:
    monkeypatch.delenv(env, raising=False)
    with pytest.raises(ValueError, match=env):
        server(_handler)
    with pytest.raises(ValueError, match="allow_unsigned=True"):
        server(_handler, **{argument: None})
    server(_handler, allow_unsigned=True)
    monkeypatch.setenv(env, "from-the-environment")
    server(_handler)
