"""PlivoCallControl against the fake Plivo Call API on loopback, and the official plivo SDK against the
same fake (so the fake checks what Plivo's own client sends, not only what ours does)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest

from voiceagent.adapters.plivo import PlivoCallControl, dial_xml, stream_xml
from voiceagent.adapters.plivo.fake_rest import FakePlivoRest
from voiceagent.telephony import AudioFormat, CallControl, CallControlError, StreamStart
from voiceagent.testing.loopback_http import HTTPRequest, LoopbackHTTPServer, Responder

CALL = "c0ffee00-1234-4321-aaaa-0123456789ab"
pytestmark = pytest.mark.anyio


@pytest.fixture
async def rest() -> AsyncIterator[FakePlivoRest]:
    async with FakePlivoRest() as fake:
        fake.add_call(CALL)
        yield fake


@pytest.fixture
async def xml_server() -> AsyncIterator[LoopbackHTTPServer]:
    """The app's own server: it serves the <Dial> XML a transfer's aleg_url points at."""

    async def serve(request: HTTPRequest, respond: Responder) -> None:
        to = request.query.get("to", [""])[0]
        await respond.send(200, dial_xml(to).encode(), {"Content-Type": "application/xml"})

    async with LoopbackHTTPServer(serve) as server:
        yield server


def control(rest: FakePlivoRest, **kwargs: object) -> PlivoCallControl:
    return PlivoCallControl(
        CALL,
        auth_id=rest.auth_id,
        auth_token=str(kwargs.pop("auth_token", rest.auth_token)),
        base_url=rest.base_url,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_hang_up_deletes_the_call_and_a_second_is_harmless(rest: FakePlivoRest) -> None:
    ctl = control(rest)
    assert isinstance(ctl, CallControl)
    with anyio.fail_after(10):
        await ctl.hang_up()
        assert [(a.kind, a.call_uuid) for a in rest.actions] == [("hangup", CALL)]
        assert CALL not in rest.live_calls
        await ctl.hang_up()  # Plivo answers 404 for an ended call: it is ended, as asked
    assert rest.rejected == [(404, "call not found")]


async def test_transfer_points_the_call_at_dial_xml(
    rest: FakePlivoRest, xml_server: LoopbackHTTPServer
) -> None:
    ctl = control(rest, transfer_url=f"{xml_server.url}/transfer?to={{to}}")
    with anyio.fail_after(10):
        await ctl.transfer("+15550123")
    (action,) = rest.actions
    assert (
        action.kind == "transfer" and action.body["legs"] == "aleg" and action.body["aleg_method"] == "POST"
    )
    assert parse_qs(urlsplit(action.body["aleg_url"]).query) == {"to": ["+15550123"]}
    assert action.fetched_xml is not None and "<Dial><Number>+15550123</Number></Dial>" in action.fetched_xml
    sip = control(rest, transfer_url=lambda to: f"{xml_server.url}/transfer?to={to}")
    with anyio.fail_after(10):
        await sip.transfer("sip:agent@example.com")
    assert (
        rest.actions[1].fetched_xml is not None
        and "<User>sip:agent@example.com</User>" in rest.actions[1].fetched_xml
    )


async def test_transfer_needs_a_url_and_a_real_target(rest: FakePlivoRest) -> None:
    with pytest.raises(CallControlError, match="transfer_url"):
        await control(rest).transfer("+15550123")
    with pytest.raises(CallControlError, match=r"E\.164"):
        await control(rest, transfer_url="https://x/{to}").transfer("call my boss")
    assert rest.actions == []


async def test_send_dtmf_posts_digits(rest: FakePlivoRest) -> None:
    with anyio.fail_after(10):
        await control(rest).send_dtmf("12#")
    assert [(a.kind, a.body) for a in rest.actions] == [("dtmf", {"digits": "12#", "leg": "aleg"})]
    with pytest.raises(CallControlError, match="DTMF digits"):
        await control(rest).send_dtmf("12x")


async def test_errors_carry_the_status_and_plivos_message_not_the_token(rest: FakePlivoRest) -> None:
    with anyio.fail_after(10):
        with pytest.raises(CallControlError) as caught:
            await control(rest, auth_token="wrong-token-value").hang_up()
        assert caught.value.status_code == 401 and "Authentication failed" in caught.value.reason
        assert "wrong-token-value" not in str(caught.value)
        rest.fail_next(500, "internal error, retry later")
        with pytest.raises(CallControlError, match="HTTP 500: internal error") as caught:
            await control(rest).send_dtmf("1")
        assert caught.value.status_code == 500
        rest.live_calls.clear()
        with pytest.raises(CallControlError, match="call not found") as caught:
            await control(rest, transfer_url="https://x/{to}").transfer("+15550123")
        assert caught.value.status_code == 404


async def test_a_silent_api_is_a_bounded_error(rest: FakePlivoRest) -> None:
    release = rest.hold_requests()
    try:
        with anyio.fail_after(10), pytest.raises(CallControlError, match=r"no answer within 0\.2 s"):
            await control(rest, timeout=0.2).hang_up()
    finally:
        release.set()


async def test_the_factory_makes_one_control_per_stream(
    rest: FakePlivoRest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PLIVO_AUTH_ID", raising=False)
    make = PlivoCallControl.factory(auth_token=rest.auth_token, base_url=rest.base_url)
    start = StreamStart(
        "s1", CALL, AudioFormat("pcmu", 8000), AudioFormat("pcmu", 8000), account_id=rest.auth_id
    )
    ctl = make(start)
    assert ctl.call_uuid == CALL
    with anyio.fail_after(10):
        await ctl.hang_up()  # the stream's accountId is the Auth ID
    assert rest.actions[0].kind == "hangup"


def test_stream_xml_matches_the_official_sdks() -> None:
    from plivo import plivoxml

    ours = stream_xml("wss://bot.example.com/s?a=1&b=2", extra_headers={"lang": "en", "n": "7"})
    response = plivoxml.ResponseElement()
    response.add(
        plivoxml.StreamElement(
            "wss://bot.example.com/s?a=1&b=2",
            bidirectional=True,
            keepCallAlive=True,
            contentType="audio/x-mulaw;rate=8000",
            extraHeaders="lang=en,n=7",
        )
    )
    assert _canonical(ours) == _canonical(response.to_string())
    dial = plivoxml.ResponseElement()
    element = plivoxml.DialElement(caller_id="+15550100")
    element.add(plivoxml.NumberElement("+15550123"))
    dial.add(element)
    assert _canonical(dial_xml("+15550123", caller_id="+15550100")) == _canonical(dial.to_string())
    for bad in ({"la-ng": "en"}, {"lang": "e n"}):
        with pytest.raises(ValueError, match="letters and digits"):
            stream_xml("wss://x/s", extra_headers=bad)
    with pytest.raises(ValueError, match="contentType"):
        stream_xml("wss://x/s", content_type="audio/x-mulaw;rate=16000")


def _canonical(xml: str) -> str:
    from lxml import etree

    parser = etree.XMLParser(remove_blank_text=True)
    root = etree.fromstring(xml.encode(), parser)
    return etree.tostring(root, method="c14n").decode()


async def test_the_official_sdk_is_accepted_by_the_fake_as_we_are(
    rest: FakePlivoRest, xml_server: LoopbackHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plivo SDK's calls.delete / transfer / send_digits against the fake: the fake accepts them and
    records the same actions our client's requests make."""
    import plivo
    import plivo.rest.client as sdk_client

    monkeypatch.setattr(sdk_client, "API_VOICE_BASE_URI", f"{rest.base_url}/v1/Account")
    sdk = plivo.RestClient(rest.auth_id, rest.auth_token)
    aleg_url = f"{xml_server.url}/transfer?to=%2B15550123"
    with anyio.fail_after(30):
        await anyio.to_thread.run_sync(lambda: sdk.calls.send_digits(CALL, digits="12#", leg="aleg"))
        await anyio.to_thread.run_sync(
            lambda: sdk.calls.transfer(CALL, legs="aleg", aleg_url=aleg_url, aleg_method="POST")
        )
        await anyio.to_thread.run_sync(lambda: sdk.calls.delete(CALL))
        theirs = list(rest.actions)
        rest.actions.clear()
        rest.add_call(CALL)
        ours = control(rest, transfer_url=f"{xml_server.url}/transfer?to={{to}}")
        await ours.send_dtmf("12#")
        await ours.transfer("+15550123")
        await ours.hang_up()
    assert rest.rejected == []
    # The SDK repeats the call's UUID in every body (it is in the path too); all else is the same.
    assert [(a.kind, _without_uuid(a.body), a.fetched_xml) for a in theirs] == [
        (a.kind, a.body, a.fetched_xml) for a in rest.actions
    ]
    assert all(a.body.get("call_uuid") == CALL for a in theirs)
    with pytest.raises(plivo.exceptions.AuthenticationError):
        bad = plivo.RestClient(rest.auth_id, "not-the-token")
        await anyio.to_thread.run_sync(lambda: bad.calls.delete(CALL))


def _without_uuid(body: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in body.items() if k != "call_uuid"}


def test_the_factory_needs_a_token_up_front(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLIVO_AUTH_TOKEN", raising=False)
    with pytest.raises(ValueError, match="auth_token"):
        PlivoCallControl.factory()
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", "from-the-environment")
    start = StreamStart("s1", CALL, AudioFormat("pcmu", 8000), AudioFormat("pcmu", 8000), account_id="MA0")
    assert PlivoCallControl.factory()(start).call_uuid == CALL
