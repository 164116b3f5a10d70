"""Twilio call control over REST: our client against the fake Twilio REST API on loopback, and the
official ``twilio`` SDK against the same fake (the reality check: both send the same request, and the
SDK reads the fake's answers and error shapes as it reads Twilio's)."""

from __future__ import annotations

import base64
import functools
import logging
from typing import Any
from urllib.parse import parse_qs
from xml.etree import ElementTree

import anyio
import anyio.to_thread
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from voiceagent.adapters.twilio.fake_rest import FakeTwilioREST
from voiceagent.adapters.twilio.rest import (
    TwilioCallControl,
    TwilioRestError,
    dial_twiml,
    twilio_control_factory,
    validate_destination,
)
from voiceagent.logs import get_logger
from voiceagent.telephony import AudioFormat, CallControl, CallControlError, StreamStart
from voiceagent.testing.loopback_http import HTTPRequest, LoopbackHTTPServer, Responder

pytestmark = pytest.mark.anyio

ACCOUNT = "AC00000000000000000000000000000001"
TOKEN = "test-auth-token-0123456789"
CALL = "CA00000000000000000000000000000009"


def control(rest: FakeTwilioREST, **options: Any) -> TwilioCallControl:
    return TwilioCallControl(
        ACCOUNT, options.pop("token", TOKEN), options.pop("call", CALL), base_url=rest.base_url, **options
    )


def form(body: bytes) -> dict[str, list[str]]:
    return parse_qs(body.decode(), keep_blank_values=True)


async def test_hang_up_posts_status_completed_with_basic_auth() -> None:
    async with FakeTwilioREST(account_sid=ACCOUNT, auth_token=TOKEN) as rest:
        rest.add_call(CALL)
        ours = control(rest)
        assert isinstance(ours, CallControl)
        with anyio.fail_after(10):
            await ours.hang_up()
        (request,) = rest.requests
        assert (request.method, request.path, request.status) == (
            "POST",
            f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json",
            200,
        )
        expected = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
        assert request.headers["authorization"] == expected
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        assert form(request.body) == {"Status": ["completed"]}
        assert rest.calls[CALL]["status"] == "completed"
        assert [dict(u.params) for u in rest.updates] == [{"Status": "completed"}]


async def test_transfer_posts_dial_twiml_and_the_number_is_escaped_and_validated() -> None:
    async with FakeTwilioREST(account_sid=ACCOUNT, auth_token=TOKEN) as rest:
        rest.add_call(CALL)
        with anyio.fail_after(10):
            await control(rest, dial_caller_id="+15005550006").transfer("+15551234567")
            await control(rest).transfer("sip:alice@example.com;transport=tls")
        first, second = (form(r.body)["Twiml"][0] for r in rest.requests)
        dial = ElementTree.fromstring(first).find("Dial")
        assert dial is not None and dial.get("callerId") == "+15005550006"
        assert [(n.tag, n.text) for n in dial] == [("Number", "+15551234567")]
        sip = ElementTree.fromstring(second).find("Dial/Sip")
        assert sip is not None and sip.text == "sip:alice@example.com;transport=tls"
        for bad in ("5551234567", "+0123", "+1555<Hangup/>", "tel:+1555", "sip:a b@x", "sip:a&b@x", ""):
            with pytest.raises(CallControlError):
                await control(rest).transfer(bad)
        assert len(rest.requests) == 2  # nothing invalid was sent


def test_dial_twiml_is_well_formed() -> None:
    assert dial_twiml("+15551234567") == "<Response><Dial><Number>+15551234567</Number></Dial></Response>"
    assert validate_destination("sips:bob@example.com") == "sips:bob@example.com"
    with pytest.raises(ValueError, match="timeout"):
        dial_twiml("+15551234567", timeout=1)


async def test_twilio_errors_are_typed_with_status_code_and_message() -> None:
    async with FakeTwilioREST(account_sid=ACCOUNT, auth_token=TOKEN) as rest:
        rest.add_call(CALL)
        with anyio.fail_after(10):
            with pytest.raises(TwilioRestError) as bad_auth:
                await control(rest, token="not-the-token").hang_up()
            with pytest.raises(TwilioRestError) as no_call:
                await control(rest, call="CA00000000000000000000000000000404").hang_up()
            await control(rest).hang_up()
            with pytest.raises(TwilioRestError) as ended:
                await control(rest).transfer("+15551234567")
        assert (bad_auth.value.status_code, bad_auth.value.code) == (401, 20003)
        assert (no_call.value.status_code, no_call.value.code) == (404, 20404)
        assert (ended.value.status_code, ended.value.code) == (400, 21220)
        assert "not in-progress" in ended.value.reason
        assert ended.value.more_info == "https://www.twilio.com/docs/errors/21220"
        assert [r.status for r in rest.requests] == [401, 404, 200, 400]


async def test_the_token_is_never_logged_nor_in_errors(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sekrit-token-that-must-not-leak"
    caplog.set_level(logging.DEBUG)
    async with FakeTwilioREST(account_sid=ACCOUNT, auth_token=TOKEN) as rest:
        rest.add_call(CALL)
        ours = control(rest, token=secret)
        with anyio.fail_after(10), pytest.raises(TwilioRestError) as caught:
            await ours.hang_up()
    # An app that logs the failure, the control and (by mistake) the token through voiceagent's logging:
    get_logger("voiceagent.test").error("control %r failed: %s (%s)", ours, caught.value, secret)
    credentials = base64.b64encode(f"{ACCOUNT}:{secret}".encode()).decode()
    assert secret not in caplog.text and credentials not in caplog.text
    assert secret not in repr(ours) and secret not in str(caught.value)
    assert "update Status" in caplog.text


async def test_a_twilio_that_never_answers_is_a_bounded_error() -> None:
    async def hang(request: HTTPRequest, respond: Responder) -> None:
        await anyio.sleep_forever()

    async with LoopbackHTTPServer(hang) as server:
        ours = TwilioCallControl(ACCOUNT, TOKEN, CALL, base_url=server.url, timeout=0.3)
        with anyio.fail_after(10), pytest.raises(CallControlError, match="no answer within"):
            await ours.hang_up()


async def test_send_dtmf_says_why_twilio_cannot() -> None:
    ours = TwilioCallControl(ACCOUNT, TOKEN, CALL)
    with pytest.raises(CallControlError, match="no outbound DTMF"):
        await ours.send_dtmf("123")


def test_bad_sids_and_settings_are_refused() -> None:
    for sid in ("", "CA/../../x", "CA 1"):
        with pytest.raises(ValueError, match="call_sid"):
            TwilioCallControl(ACCOUNT, TOKEN, sid)
    with pytest.raises(ValueError, match="auth_token"):
        TwilioCallControl(ACCOUNT, "", CALL)


def test_the_control_factory_makes_one_control_per_call_from_its_start() -> None:
    make = twilio_control_factory(ACCOUNT, TOKEN, base_url="http://127.0.0.1:9")
    fmt = AudioFormat("pcmu", 8000)
    made = make(StreamStart("MZ1", CALL, fmt, fmt, account_id=ACCOUNT))
    assert made.call_sid == CALL and made.url.startswith("http://127.0.0.1:9/2010-04-01/")


# ---- the reality check: the official SDK against the same fake -----------------------------------


class LoopbackHttpClient(TwilioHttpClient):
    """The SDK's own HTTP client, sending to the fake instead of api.twilio.com (the SDK builds the
    request: URL path, form body, auth, headers; only the host is changed)."""

    def __init__(self, base_url: str) -> None:
        super().__init__(timeout=10)
        self.base_url = base_url

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        assert url.startswith("https://api.twilio.com/")
        return super().request(
            method, self.base_url + url.removeprefix("https://api.twilio.com"), *args, **kwargs
        )


async def test_the_twilio_sdk_and_our_client_send_equivalent_updates() -> None:
    async with FakeTwilioREST(account_sid=ACCOUNT, auth_token=TOKEN) as rest:
        rest.add_call(CALL)
        sdk = Client(ACCOUNT, TOKEN, http_client=LoopbackHttpClient(rest.base_url))
        twiml = dial_twiml("+15551234567")
        with anyio.fail_after(30):
            await control(rest).transfer("+15551234567")
            call = await anyio.to_thread.run_sync(lambda: sdk.calls(CALL).update(twiml=twiml))
            await control(rest).hang_up()
            rest.calls[CALL]["status"] = "in-progress"  # hang it up again, with the SDK
            await anyio.to_thread.run_sync(lambda: sdk.calls(CALL).update(status="completed"))
        assert call.sid == CALL and call.status == "in-progress"  # the SDK reads the fake's call resource
        ours_dial, sdk_dial, ours_end, sdk_end = rest.requests
        for ours, theirs in ((ours_dial, sdk_dial), (ours_end, sdk_end)):
            assert (ours.method, ours.path, ours.status) == (theirs.method, theirs.path, theirs.status)
            assert form(ours.body) == form(theirs.body)
            for header in ("authorization", "content-type"):
                assert ours.headers[header] == theirs.headers[header]
        assert form(sdk_dial.body) == {"Twiml": [twiml]}
        assert form(sdk_end.body) == {"Status": ["completed"]}


async def test_the_sdk_reads_the_fakes_error_shapes_as_twilios() -> None:
    async with FakeTwilioREST(account_sid=ACCOUNT, auth_token=TOKEN) as rest:
        rest.add_call(CALL)
        wrong = Client(ACCOUNT, "wrong-token", http_client=LoopbackHttpClient(rest.base_url))
        right = Client(ACCOUNT, TOKEN, http_client=LoopbackHttpClient(rest.base_url))
        errors: list[TwilioRestException] = []
        for client, sid in ((wrong, CALL), (right, "CA00000000000000000000000000000404")):
            try:
                update = functools.partial(client.calls(sid).update, status="completed")
                await anyio.to_thread.run_sync(update)
            except TwilioRestException as exc:
                errors.append(exc)
        assert [(e.status, e.code) for e in errors] == [(401, 20003), (404, 20404)]
        assert "was not found" in errors[1].msg


# ---- API key auth (Twilio's recommendation for production) ---------------------------------------

KEY_SID = "SK00000000000000000000000000000042"
KEY_SECRET = "api-key-secret-0123456789abcdef"


async def test_an_api_key_authenticates_our_client_as_it_does_the_sdk() -> None:
    """Basic auth with the key's SID and secret, the Account SID still in the URL: the official SDK's
    ``Client(api_key_sid, api_key_secret, account_sid)`` and ours send the same request; the fake takes
    both, and refuses a wrong secret from either the same way."""
    async with FakeTwilioREST(account_sid=ACCOUNT, auth_token=TOKEN, api_keys={KEY_SID: KEY_SECRET}) as rest:
        rest.add_call(CALL)
        ours = TwilioCallControl(
            ACCOUNT, None, CALL, api_key_sid=KEY_SID, api_key_secret=KEY_SECRET, base_url=rest.base_url
        )
        sdk = Client(KEY_SID, KEY_SECRET, ACCOUNT, http_client=LoopbackHttpClient(rest.base_url))
        with anyio.fail_after(30):
            await ours.transfer("+15551234567")
            await anyio.to_thread.run_sync(lambda: sdk.calls(CALL).update(twiml=dial_twiml("+15551234567")))
        ours_request, sdk_request = rest.requests
        basic = "Basic " + base64.b64encode(f"{KEY_SID}:{KEY_SECRET}".encode()).decode()
        assert ours_request.headers["authorization"] == sdk_request.headers["authorization"] == basic
        assert ours_request.path == sdk_request.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json"
        assert [(u.call_sid, u.username) for u in rest.updates] == [(CALL, KEY_SID), (CALL, KEY_SID)]

        wrong_ours = TwilioCallControl(
            ACCOUNT, None, CALL, api_key_sid=KEY_SID, api_key_secret="wrong", base_url=rest.base_url
        )
        wrong_sdk = Client(KEY_SID, "wrong", ACCOUNT, http_client=LoopbackHttpClient(rest.base_url))
        with anyio.fail_after(30), pytest.raises(TwilioRestError) as ours_error:
            await wrong_ours.hang_up()
        with pytest.raises(TwilioRestException) as sdk_error:
            await anyio.to_thread.run_sync(lambda: wrong_sdk.calls(CALL).update(status="completed"))
        assert (ours_error.value.status_code, ours_error.value.code) == (401, 20003)
        assert (sdk_error.value.status, sdk_error.value.code) == (401, 20003)
        assert len(rest.updates) == 2


async def test_the_control_factory_takes_an_api_key_and_checks_the_pair_when_built() -> None:
    start = StreamStart(
        stream_id="MZ00000000000000000000000000000001",
        call_id=CALL,
        inbound_format=AudioFormat("pcmu", 8000),
        outbound_format=AudioFormat("pcmu", 8000),
    )
    async with FakeTwilioREST(account_sid=ACCOUNT, auth_token=TOKEN, api_keys={KEY_SID: KEY_SECRET}) as rest:
        rest.add_call(CALL)
        make = twilio_control_factory(
            ACCOUNT, api_key_sid=KEY_SID, api_key_secret=KEY_SECRET, base_url=rest.base_url
        )
        with anyio.fail_after(10):
            await make(start).hang_up()
        assert [(dict(u.params), u.username) for u in rest.updates] == [({"Status": "completed"}, KEY_SID)]
        assert KEY_SECRET not in repr(make(start))
    for bad, match in (
        ({"api_key_sid": KEY_SID}, "both api_key_sid"),
        ({"api_key_secret": KEY_SECRET}, "both api_key_sid"),
        ({"api_key_sid": "SK/../x", "api_key_secret": KEY_SECRET}, "api_key_sid must be a Twilio SID"),
    ):
        with pytest.raises(ValueError, match=match):
            twilio_control_factory(ACCOUNT, **bad)
    with pytest.raises(ValueError, match="not both"):
        twilio_control_factory(ACCOUNT, TOKEN, api_key_sid=KEY_SID, api_key_secret=KEY_SECRET)
    with pytest.raises(ValueError, match="auth_token is required"):
        twilio_control_factory(ACCOUNT)
