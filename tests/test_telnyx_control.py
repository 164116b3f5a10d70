"""TelnyxCallControl against the fake Call Control REST server on loopback, and Telnyx's own Python SDK
(a reference client nobody here wrote) against the same fake: the fake accepts both and records the
same request shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
import telnyx

from voiceagent.adapters.telnyx import TelnyxCallControl, telnyx_control_factory
from voiceagent.adapters.telnyx.fake_rest import FakeTelnyxRest
from voiceagent.telephony import AudioFormat, CallControl, CallControlError, StreamStart

pytestmark = pytest.mark.anyio

CCID = "v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg"
KEY = "KEY0123456789ABCDEF_telnyx"


@pytest.fixture
async def rest() -> AsyncIterator[FakeTelnyxRest]:
    async with FakeTelnyxRest(api_key=KEY, calls=(CCID,)) as server:
        yield server


def _control(rest: FakeTelnyxRest, **kwargs: object) -> TelnyxCallControl:
    return TelnyxCallControl(CCID, api_key=KEY, base_url=rest.base_url, **kwargs)  # type: ignore[arg-type]


async def test_actions_reach_the_api_with_auth_and_bodies(rest: FakeTelnyxRest) -> None:
    control = _control(rest)
    assert isinstance(control, CallControl)
    with anyio.fail_after(10):
        await control.send_dtmf("12#w*")
        await control.transfer("+15550100123")
        await control.transfer("sip:agent@example.com")
        await control.hang_up()
    assert [(a.call_control_id, a.action, a.body) for a in rest.actions] == [
        (CCID, "send_dtmf", {"digits": "12#w*"}),
        (CCID, "transfer", {"to": "+15550100123"}),
        (CCID, "transfer", {"to": "sip:agent@example.com"}),
        (CCID, "hangup", {}),
    ]
    assert all(a.headers["authorization"] == f"Bearer {KEY}" for a in rest.actions)


async def test_a_second_hang_up_of_an_ended_call_is_done_but_other_actions_fail(rest: FakeTelnyxRest) -> None:
    control = _control(rest)
    with anyio.fail_after(10):
        await control.hang_up()
        await control.hang_up()  # 422 / 90018 "Call has already ended": the call is gone either way
        with pytest.raises(CallControlError) as info:
            await control.transfer("+15550100123")
    assert info.value.status_code == 422 and "90018" in info.value.reason
    assert rest.rejected == [(422, "90018"), (422, "90018")]


async def test_wrong_key_unknown_call_and_server_errors_are_typed(rest: FakeTelnyxRest) -> None:
    with anyio.fail_after(10):
        with pytest.raises(CallControlError) as info:
            await TelnyxCallControl(CCID, api_key="wrong-key-123", base_url=rest.base_url).hang_up()
        assert info.value.status_code == 401 and "10009" in info.value.reason
        assert "wrong-key-123" not in info.value.reason
        with pytest.raises(CallControlError) as info:
            await TelnyxCallControl("v3:nope", api_key=KEY, base_url=rest.base_url).hang_up()
        assert info.value.status_code == 404
        rest.fail_next(500)
        with pytest.raises(CallControlError) as info:
            await _control(rest).send_dtmf("1")
        assert info.value.status_code == 500
    assert rest.actions == []


async def test_bad_arguments_fail_before_any_request(rest: FakeTelnyxRest) -> None:
    control = _control(rest)
    for bad in ("", "12x", "1" * 65):
        with pytest.raises(CallControlError):
            await control.send_dtmf(bad)
    with pytest.raises(CallControlError):
        await control.transfer("  ")
    assert rest.actions == [] and rest.rejected == []


async def test_a_stalled_api_times_out_as_a_call_control_error(rest: FakeTelnyxRest) -> None:
    rest.stall = anyio.Event()
    with anyio.fail_after(10):
        with pytest.raises(CallControlError, match="no answer") as info:
            await _control(rest, timeout=0.3).hang_up()
    assert info.value.status_code is None
    rest.stall.set()


async def test_an_unreachable_api_is_a_call_control_error() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now
    with anyio.fail_after(10), pytest.raises(CallControlError) as info:
        await TelnyxCallControl(CCID, api_key=KEY, base_url=f"http://127.0.0.1:{port}/v2").hang_up()
    assert info.value.status_code is None


async def test_the_key_comes_from_the_environment_and_the_factory_uses_the_start(
    rest: FakeTelnyxRest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TELNYX_API_KEY", raising=False)
    with pytest.raises(ValueError, match="TELNYX_API_KEY"):
        TelnyxCallControl(CCID)
    monkeypatch.setenv("TELNYX_API_KEY", KEY)
    factory = telnyx_control_factory(base_url=rest.base_url)
    start = StreamStart("s1", CCID, AudioFormat("pcmu", 8000), AudioFormat("pcmu", 8000))
    control = factory(start)
    assert control.call_control_id == CCID
    with anyio.fail_after(10):
        await control.send_dtmf("9")
    assert rest.actions[-1].body == {"digits": "9"}


async def test_telnyx_sdk_requests_are_accepted_and_recorded_like_ours(rest: FakeTelnyxRest) -> None:
    async with telnyx.AsyncTelnyx(api_key=KEY, base_url=rest.base_url, max_retries=0) as client:
        with anyio.fail_after(20):
            await client.calls.actions.send_dtmf(CCID, digits="12#w*")
            await client.calls.actions.transfer(CCID, to="+15550100123")
            await client.calls.actions.hangup(CCID)
            with pytest.raises(telnyx.UnprocessableEntityError):
                await client.calls.actions.hangup(CCID)  # the fake's 90018, as the real API answers
    sdk = [(a.call_control_id, a.action, a.body) for a in rest.actions]
    rest.actions.clear()
    rest.ended_calls.clear()
    rest.add_call(CCID)
    control = _control(rest)
    with anyio.fail_after(10):
        await control.send_dtmf("12#w*")
        await control.transfer("+15550100123")
        await control.hang_up()
    assert [(a.call_control_id, a.action, a.body) for a in rest.actions] == sdk
    async with telnyx.AsyncTelnyx(api_key="not-the-key", base_url=rest.base_url, max_retries=0) as client:
        with anyio.fail_after(20), pytest.raises(telnyx.AuthenticationError):
            await client.calls.actions.hangup(CCID)
