"""Call control end to end on Telnyx and Plivo, DTMF out on each provider, and one Agent's tools across
calls. Every part real: a fake Telnyx or Plivo caller (built from the provider's docs) over a WebSocket
-> TelnyxServer/PlivoServer -> Session (with ``CallSettings``) -> the agent on the fake OpenAI server ->
espeak-ng audio into the call's output, marks echoed by the fake caller; hang-ups, transfers and DTMF
go through the provider's call control to its fake REST API, which checks the auth.

The caller's words come from ``PushSTT`` (the test says them), as in test_call_control.py.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from voiceagent import Agent, LLMClient
from voiceagent.adapters.plivo import PlivoCallControl, PlivoServer
from voiceagent.adapters.plivo.fake import FakePlivoCall
from voiceagent.adapters.plivo.fake_rest import FakePlivoRest
from voiceagent.adapters.plivo.plivo_xml import dial_xml
from voiceagent.adapters.telnyx.control import telnyx_control_factory
from voiceagent.adapters.telnyx.fake import FakeTelnyxCall
from voiceagent.adapters.telnyx.fake_rest import FakeTelnyxRest, RecordedAction
from voiceagent.adapters.telnyx.server import TelnyxServer
from voiceagent.endpointing import EndpointingDetector
from voiceagent.errors import ToolDefinitionError, VoiceAgentError
from voiceagent.session import Session
from voiceagent.telephony import CallControlError, MediaStream
from voiceagent.telephony.fake_call import FakeMediaCall
from voiceagent.telephony.settings import CallSettings, DtmfSettings
from voiceagent.telephony.supervisor import CallSupervisor
from voiceagent.testing.loopback_http import HTTPRequest, LoopbackHTTPServer, Responder
from voiceagent.testing.openai_server import FakeOpenAIServer, Reply, text_reply, tool_reply
from voiceagent.tools import tool

from .test_call_control import Call, PushSTT, run_call, user_turns

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]

TOKEN = "provider-stream-token-31"
AGENT_NUMBER = "+15551234567"
CCID = "v3:fake-telnyx-call-control-id-0001"
ENDPOINTING = {"delay": 0, "final_wait": 0, "speculate": "off"}


@dataclass
class Line:
    """One call under test on Telnyx or Plivo: the phone, its sessions, and what it had heard when the
    provider's REST API got each request."""

    llm: FakeOpenAIServer
    phone: FakeMediaCall | None = None
    sessions: list[Session] = field(default_factory=list)
    stts: list[PushSTT] = field(default_factory=list)
    done: anyio.Event = field(default_factory=anyio.Event)
    hold_before: set[str] = field(default_factory=set)  # lines before which playback holds (once each)
    snapshots: list[dict[str, Any]] = field(default_factory=list)

    @property
    def session(self) -> Session:
        return self.sessions[0]

    async def wait(self, predicate: Callable[[], bool]) -> None:
        """Poll: the state read lives in the session, the phone and the fakes, with no one event."""
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.01)

    def spoken(self, text: str) -> bool:
        sink: Any = self.session.agent.sink
        return any(s.text == text and s.complete and s.audio_seconds > 0 for s in sink.spoken_spans)

    def snapshot(self) -> None:
        assert self.phone is not None
        output = self.session.output
        self.snapshots.append(
            {
                "marks_sent": [f.name for f in self.phone.frames if f.kind == "mark"],
                "marks_played": [m.name for m in self.phone.echoed_marks if not m.flushed],
                "received_bytes": len(self.phone.received_audio),
                "played_bytes": len(self.phone.played_audio),
                "heard": output.heard_text if output is not None else "",
            }
        )


def _handler(line: Line, settings: CallSettings) -> Callable[[MediaStream], Awaitable[None]]:
    from voiceagent.adapters.espeak import EspeakSink

    class HoldingSink(EspeakSink):
        """Holds the caller's playback right before it speaks one of ``line.hold_before``."""

        async def speak(self, text: str) -> None:
            if text in line.hold_before and line.phone is not None:
                line.hold_before.discard(text)
                line.phone.pause_playback()
            await super().speak(text)

    async def handler(stream: MediaStream) -> None:
        try:
            stt = PushSTT()
            agent = Agent(
                llm=LLMClient(base_url=line.llm.base_url, api_key="sk_test"),
                sink=HoldingSink(stream.output, words_per_minute=220),
                system_prompt="You answer the phone.",
            )
            session = Session(
                agent=agent,
                transport=stream,
                stt=stt,
                endpointing=EndpointingDetector(**ENDPOINTING),  # type: ignore[arg-type]
                call=settings,
            )
            line.stts.append(stt)
            line.sessions.append(session)
            await session.run()
        finally:
            line.done.set()

    return handler


async def telnyx_call(
    settings: CallSettings, script: Callable[[Line, FakeTelnyxRest], Awaitable[None]], *replies: Reply
) -> tuple[Line, FakeTelnyxRest]:
    async with FakeOpenAIServer() as llm, FakeTelnyxRest(calls=(CCID,)) as rest:
        llm.enqueue(*replies)
        line = Line(llm)
        controls = telnyx_control_factory(api_key=rest.api_key, base_url=rest.base_url)
        rest.on_action = lambda action: line.snapshot()
        with anyio.fail_after(30):
            async with TelnyxServer(
                _handler(line, settings), stream_auth_token=TOKEN, control_factory=controls
            ) as server:
                phone = FakeTelnyxCall(
                    server.url, stream_auth_token=TOKEN, call_control_id=CCID, playback_speed=math.inf
                )
                line.phone = phone
                async with phone:
                    await line.wait(lambda: bool(line.stts))
                    await script(line, rest)
                    await line.done.wait()
    assert phone.errors == []
    return line, rest


def bearer(action: RecordedAction, rest: FakeTelnyxRest) -> bool:
    return action.headers.get("authorization") == f"Bearer {rest.api_key}"


# ---- Telnyx: end_call, transfer_call --------------------------------------------------------------


async def test_end_call_on_telnyx_is_heard_to_its_end_before_call_control_hangs_up() -> None:
    goodbye = "Goodbye from Telnyx."

    async def script(line: Line, rest: FakeTelnyxRest) -> None:
        line.hold_before.add(goodbye)
        line.stts[0].say("That is all, thank you.")
        # Playback holds at the goodbye: its audio reached the caller but is not heard, so no hang-up.
        await line.wait(lambda: line.spoken(goodbye))
        assert rest.actions == [] and line.session.call is not None and line.session.call.ending
        assert line.phone is not None
        line.phone.resume_playback()
        await rest.wait_until(lambda: bool(rest.actions))

    replies = (tool_reply([("end_call", {})], filler="Alright."), text_reply("Take care."))
    line, rest = await telnyx_call(CallSettings(end_call=True, goodbye=goodbye), script, *replies)
    (action,) = rest.actions
    assert (action.call_control_id, action.action, action.body) == (CCID, "hangup", {})
    assert bearer(action, rest)
    (at_hang_up,) = line.snapshots
    assert at_hang_up["marks_sent"] and at_hang_up["marks_played"] == at_hang_up["marks_sent"]
    assert at_hang_up["played_bytes"] == at_hang_up["received_bytes"] > 0
    assert at_hang_up["heard"] == "Alright. Take care." + goodbye
    assert line.session.call is not None and line.session.call.ended_by == "end_call"
    assert rest.rejected == []


async def test_transfer_call_on_telnyx_posts_the_allowlisted_number_with_the_bearer_key() -> None:
    hold = "Please hold while I transfer you."
    settings = CallSettings(transfer_to=(AGENT_NUMBER,), transfer_line=hold)

    async def script(line: Line, rest: FakeTelnyxRest) -> None:
        line.stts[0].say("A person, please.")
        await rest.wait_until(lambda: bool(rest.actions))

    replies = (tool_reply([("transfer_call", {"number": AGENT_NUMBER})], filler="Okay."), text_reply("Sure."))
    line, rest = await telnyx_call(settings, script, *replies)
    (action,) = rest.actions
    assert (action.call_control_id, action.action, action.body) == (CCID, "transfer", {"to": AGENT_NUMBER})
    assert bearer(action, rest)
    (at_transfer,) = line.snapshots
    assert at_transfer["heard"] == "Okay. Sure." + hold
    assert at_transfer["marks_played"] == at_transfer["marks_sent"]
    assert line.session.call is not None and line.session.call.ended_by == "transfer"


# ---- Plivo: transfer_call -------------------------------------------------------------------------


async def plivo_call(
    settings: CallSettings,
    script: Callable[[Line, FakePlivoRest], Awaitable[None]],
    *replies: Reply,
    transfer_url: str | None = None,
) -> tuple[Line, FakePlivoRest, FakePlivoCall]:
    async with FakeOpenAIServer() as llm, FakePlivoRest() as rest:
        llm.enqueue(*replies)
        line = Line(llm)
        factory = PlivoCallControl.factory(
            auth_token=rest.auth_token, base_url=rest.base_url, transfer_url=transfer_url
        )
        with anyio.fail_after(30):
            async with PlivoServer(
                _handler(line, settings), auth_token=TOKEN, control_factory=factory
            ) as server:
                phone = FakePlivoCall(
                    server.url, auth_token=TOKEN, account_id=rest.auth_id, playback_speed=math.inf
                )
                line.phone = phone
                async with phone:
                    rest.add_call(phone.call_id)
                    await line.wait(lambda: bool(line.stts))
                    await script(line, rest)
                    if not line.done.is_set():
                        await phone.hang_up()
                    await line.done.wait()
    assert phone.errors == [] and rest.rejected == []
    return line, rest, phone


async def test_transfer_call_on_plivo_points_the_call_at_the_transfer_url_which_serves_dial_xml() -> None:
    hold = "Hold on, connecting you."
    fetched: list[HTTPRequest] = []

    async def serve_xml(request: HTTPRequest, respond: Responder) -> None:
        # The app's transfer URL: Plivo fetches it and runs the XML (here <Dial><Number>).
        fetched.append(request)
        (to,) = request.query["to"]
        await respond.send(200, dial_xml(to).encode(), {"Content-Type": "application/xml"})

    async def script(line: Line, rest: FakePlivoRest) -> None:
        line.stts[0].say("Put me through to a person.")
        await rest.wait_for(1)
        line.snapshot()

    replies = (
        tool_reply([("transfer_call", {"number": AGENT_NUMBER})], filler="Okay."),
        text_reply("Of course."),
    )
    settings = CallSettings(transfer_to=(AGENT_NUMBER,), transfer_line=hold)
    async with LoopbackHTTPServer(serve_xml) as xml_server:
        line, rest, phone = await plivo_call(
            settings, script, *replies, transfer_url=f"{xml_server.url}/transfer?to={{to}}"
        )
    (action,) = rest.actions
    assert (action.kind, action.call_uuid) == ("transfer", phone.call_id)
    assert action.body["legs"] == "aleg" and action.body["aleg_method"] == "POST"
    assert action.body["aleg_url"] == f"{xml_server.url}/transfer?to=%2B15551234567"
    assert action.fetched_xml == dial_xml(AGENT_NUMBER) and len(fetched) == 1
    assert line.snapshots[0]["heard"] == "Okay. Of course." + hold
    assert line.session.call is not None and line.session.call.ended_by == "transfer"


# ---- DTMF out -------------------------------------------------------------------------------------


async def press_9_sends(digits: str, call: CallSupervisor) -> str | None:
    """The bot's DTMF handler: the caller's 9 makes the bot key ``1234#`` into the far end's IVR."""
    await call.send_dtmf("1234#")
    return None


DTMF_OUT = CallSettings(dtmf=DtmfSettings(on_digits=press_9_sends, terminator=None, max_digits=1))


async def test_dtmf_out_on_plivo_goes_on_the_stream_as_send_dtmf() -> None:
    async def script(line: Line, rest: FakePlivoRest) -> None:
        assert line.phone is not None
        await line.phone.send_dtmf("9")
        await line.wait(lambda: line.phone is not None and bool(line.phone.dtmf_sent))

    line, rest, phone = await plivo_call(DTMF_OUT, script)
    assert phone.dtmf_sent == ["1234#"]
    assert [m for m in phone.received if m.get("event") == "sendDTMF"] == [
        {"event": "sendDTMF", "dtmf": "1234#"}
    ]
    assert rest.actions == []  # on the stream, not through the Call API
    assert line.session.call is not None and line.session.call.dtmf_entries == ["9"]


async def test_dtmf_out_on_telnyx_goes_through_call_control_send_dtmf() -> None:
    async def script(line: Line, rest: FakeTelnyxRest) -> None:
        assert line.phone is not None
        await line.phone.send_dtmf("9")
        await rest.wait_until(lambda: bool(rest.actions))
        await line.phone.stop()

    line, rest = await telnyx_call(DTMF_OUT, script)
    (action,) = rest.actions
    assert (action.call_control_id, action.action, action.body) == (CCID, "send_dtmf", {"digits": "1234#"})
    assert bearer(action, rest)
    assert line.phone is not None and line.phone.dtmf_sent == []  # Telnyx's stream carries none out


async def test_dtmf_out_on_twilio_fails_with_the_reason_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reasons: list[str] = []

    async def on_digits(digits: str, call: CallSupervisor) -> str | None:
        try:
            await call.send_dtmf("1234#")
        except CallControlError as exc:
            reasons.append(exc.reason)
            return f"(The keypad tones could not be sent: {exc.reason})"
        return None

    async def failing(digits: str, call: CallSupervisor) -> str | None:
        await call.send_dtmf("5")  # uncaught: the supervisor logs it, the call goes on
        return None

    async def script(call: Call) -> None:
        await call.started()
        await call.phone.send_dtmf("9")
        await call.wait(lambda: len(call.session.results) == 1)
        call.stts[0].say("Okay, never mind.")
        await call.wait(lambda: len(call.session.results) == 2)

    settings = CallSettings(dtmf=DtmfSettings(on_digits=on_digits, terminator=None, max_digits=1))
    with caplog.at_level(logging.WARNING, logger="voiceagent.telephony.supervisor"):
        call = await run_call(settings, script, replies=(text_reply("Sorry."), text_reply("Fine.")))
        (reason,) = reasons
        assert "Twilio cannot send DTMF" in reason
        assert user_turns(call.llm) == [
            f"(The keypad tones could not be sent: {reason})",
            "Okay, never mind.",
        ]
        assert call.rest.updates == []  # nothing was sent that would replace the stream's TwiML

        settings = CallSettings(dtmf=DtmfSettings(on_digits=failing, terminator=None, max_digits=1))

        async def script2(call: Call) -> None:
            await call.started()
            await call.phone.send_dtmf("9")
            await call.wait(lambda: bool(call.supervisor.dtmf_entries))
            call.stts[0].say("Hello?")
            await call.wait(lambda: len(call.session.results) == 1)

        call = await run_call(settings, script2, replies=(text_reply("Hello there."),))
    failed = [r.getMessage() for r in caplog.records if "DTMF handler failed" in r.getMessage()]
    assert len(failed) == 1 and "Twilio cannot send DTMF" in failed[0]
    assert user_turns(call.llm) == ["Hello?"]


# ---- one Agent, its tools, across calls -----------------------------------------------------------


async def test_one_agent_serves_two_calls_one_after_the_other_each_hanging_up_its_own() -> None:
    """The built-in tools are the session's own: the agent is unchanged after a call, so the next
    session on it gets end_call again, bound to ITS call."""
    from voiceagent.adapters.espeak import EspeakSink

    ids = ("v3:call-one", "v3:call-two")
    agents: list[Agent] = []
    sessions: list[Session] = []
    stts: list[PushSTT] = []

    async def handler(stream: MediaStream) -> None:
        sink = EspeakSink(stream.output, words_per_minute=220)
        if not agents:
            agents.append(
                Agent(
                    llm=LLMClient(base_url=llm.base_url, api_key="sk_test"),
                    sink=sink,
                    system_prompt="You answer the phone.",
                    tools=[tool(lookup)],
                )
            )
        agent = agents[0]
        agent.sink = sink  # the same agent, this call's audio
        stt = PushSTT()
        session = Session(
            agent=agent,
            transport=stream,
            stt=stt,
            endpointing=EndpointingDetector(**ENDPOINTING),  # type: ignore[arg-type]
            call=CallSettings(end_call=True, goodbye="Bye."),
        )
        sessions.append(session)
        stts.append(stt)
        await session.run()

    def lookup(order: str) -> str:
        """Look an order up."""
        return f"Order {order} has shipped."

    async with FakeOpenAIServer() as llm, FakeTelnyxRest(calls=ids) as rest:
        for _ in ids:
            llm.enqueue(tool_reply([("end_call", {})], filler="Okay."), text_reply("Goodbye."))
        controls = telnyx_control_factory(api_key=rest.api_key, base_url=rest.base_url)
        with anyio.fail_after(40):
            async with TelnyxServer(handler, stream_auth_token=TOKEN, control_factory=controls) as server:
                for n, ccid in enumerate(ids):
                    async with FakeTelnyxCall(
                        server.url, stream_auth_token=TOKEN, call_control_id=ccid, playback_speed=math.inf
                    ):
                        while len(stts) <= n:  # noqa: ASYNC110
                            await anyio.sleep(0.01)
                        stts[n].say("That is all.")
                        await rest.wait_until(lambda n=n: len(rest.actions) == n + 1)  # type: ignore[misc]
    assert [(a.call_control_id, a.action) for a in rest.actions] == [(ids[0], "hangup"), (ids[1], "hangup")]
    assert [s.call.ended_by for s in sessions if s.call is not None] == ["end_call", "end_call"]
    assert [t.name for t in agents[0].runner.tools] == ["lookup"]  # the agent itself is unchanged
    offered = [[t["function"]["name"] for t in r.body["tools"]] for r in llm.requests[::2]]
    assert offered == [["lookup", "end_call"], ["lookup", "end_call"]]


async def test_two_calls_at_once_on_agents_sharing_their_tools_each_end_their_own_call() -> None:
    """An agent factory with one list of tools, two calls at the same time: each session's end_call
    ends its own call (on Plivo, each hang-up for its own call uuid)."""
    from voiceagent.adapters.espeak import EspeakSink

    def lookup(order: str) -> str:
        """Look an order up."""
        return f"Order {order} has shipped."

    shared = [tool(lookup)]
    sessions: list[Session] = []
    stts: list[PushSTT] = []

    async def handler(stream: MediaStream) -> None:
        agent = Agent(
            llm=LLMClient(base_url=llm.base_url, api_key="sk_test"),
            sink=EspeakSink(stream.output, words_per_minute=220),
            system_prompt="You answer the phone.",
            tools=shared,
        )
        stt = PushSTT()
        session = Session(
            agent=agent,
            transport=stream,
            stt=stt,
            endpointing=EndpointingDetector(**ENDPOINTING),  # type: ignore[arg-type]
            call=CallSettings(end_call=True, goodbye="Bye."),
        )
        sessions.append(session)
        stts.append(stt)
        await session.run()

    def reply(body: dict[str, Any]) -> Reply:
        # Per request, not per queue position: the two calls' requests interleave.
        if body["messages"][-1]["role"] == "tool":
            return text_reply("Goodbye.")
        return tool_reply([("end_call", {})], filler="Okay.")

    async with FakeOpenAIServer() as llm, FakePlivoRest() as rest:
        llm.responder = reply
        factory = PlivoCallControl.factory(auth_token=rest.auth_token, base_url=rest.base_url)
        with anyio.fail_after(40):
            async with PlivoServer(handler, auth_token=TOKEN, control_factory=factory) as server:
                phones = [
                    FakePlivoCall(
                        server.url, auth_token=TOKEN, account_id=rest.auth_id, playback_speed=math.inf
                    )
                    for _ in range(2)
                ]
                async with phones[0], phones[1]:
                    for phone in phones:
                        rest.add_call(phone.call_id)
                    while len(stts) < 2:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                    for stt in stts:
                        stt.say("That is all.")
                    await rest.wait_for(2)
                    for phone in phones:
                        await phone.hang_up()
    assert sorted(a.call_uuid for a in rest.actions) == sorted(p.call_id for p in phones)
    assert {a.kind for a in rest.actions} == {"hangup"}
    assert [s.call.ended_by for s in sessions if s.call is not None] == ["end_call", "end_call"]


async def test_one_agent_in_two_sessions_at_once_is_refused_before_the_second_call_starts() -> None:
    """An Agent is one conversation: a second session on it while the first runs fails at its start,
    before it says anything, with a clear error; the first call goes on."""
    from voiceagent.adapters.espeak import EspeakSink

    agents: list[Agent] = []
    sessions: list[Session] = []
    stts: list[PushSTT] = []
    refused: list[VoiceAgentError] = []

    async def handler(stream: MediaStream) -> None:
        sink = EspeakSink(stream.output, words_per_minute=220)
        if not agents:
            agents.append(
                Agent(
                    llm=LLMClient(base_url=llm.base_url, api_key="sk_test"),
                    sink=sink,
                    system_prompt="You answer the phone.",
                )
            )
        stt = PushSTT()
        session = Session(
            agent=agents[0],
            transport=stream,
            stt=stt,
            endpointing=EndpointingDetector(**ENDPOINTING),  # type: ignore[arg-type]
            call=CallSettings(end_call=True),
        )
        sessions.append(session)
        stts.append(stt)
        try:
            await session.run()
        except VoiceAgentError as exc:
            refused.append(exc)

    async with FakeOpenAIServer() as llm, FakeTelnyxRest(calls=(CCID,)) as rest:
        llm.enqueue(text_reply("Hello."), text_reply("Still here."))
        controls = telnyx_control_factory(api_key=rest.api_key, base_url=rest.base_url)
        with anyio.fail_after(30):
            async with TelnyxServer(handler, stream_auth_token=TOKEN, control_factory=controls) as server:
                async with FakeTelnyxCall(
                    server.url, stream_auth_token=TOKEN, call_control_id=CCID, playback_speed=math.inf
                ) as first:
                    while not stts:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                    stts[0].say("Hi.")
                    while not sessions[0].results:  # noqa: ASYNC110  (the first session is running)
                        await anyio.sleep(0.01)
                    async with FakeTelnyxCall(
                        server.url, stream_auth_token=TOKEN, call_control_id="v3:second"
                    ) as second:
                        await second.wait_closed()
                    stts[0].say("Are you there?")
                    while len(sessions[0].results) < 2:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                    await first.stop()
    (error,) = refused
    assert "already serving a running session" in str(error) and "one Agent per call" in str(error)
    assert sessions[1].results == [] and len(llm.requests) == 2
    assert user_turns(llm) == ["Hi.", "Are you there?"]


def test_a_user_tool_named_like_a_built_in_fails_at_session_construction() -> None:
    from voiceagent.testing.sinks import RecordingSink

    def end_call() -> str:
        """The app's own."""
        return "no"

    agent = Agent(
        llm=LLMClient(base_url="http://127.0.0.1:9/v1", api_key="sk_test"),
        sink=RecordingSink(),
        system_prompt="You answer the phone.",
        tools=[tool(end_call)],
    )
    transport: Any = object()  # construction only: nothing is sent or read
    with pytest.raises(ToolDefinitionError, match="end_call"):
        Session(agent=agent, transport=transport, stt=PushSTT(), call=CallSettings(end_call=True))
    Session(agent=agent, transport=transport, stt=PushSTT(), call=CallSettings())  # no built-ins: fine
