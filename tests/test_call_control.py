"""Call control end to end: a fake Twilio caller over a real WebSocket -> TwilioServer -> Session (with
``CallSettings``) -> the agent on the fake OpenAI server -> espeak-ng audio into the call's output, marks
echoed by the fake caller; hang-ups and transfers go through ``TwilioCallControl`` to the fake Twilio
REST API, which checks their Basic auth and ends the media stream as Twilio does.

The caller's words come from ``PushSTT`` (the test says them): the STT adapters are tested elsewhere;
here what matters is what call control does with a turn.

The server gets ``control_factory=twilio_control_factory(...)``: each call's stream is then a
``CallControl`` whose hang-up and transfer are REST calls to the fake.
"""

from __future__ import annotations

import base64
import json
import math
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import anyio
import pytest
from twilio.request_validator import RequestValidator

from voiceagent import Agent, LLMClient
from voiceagent.adapters.twilio import TwilioMediaStream, TwilioServer
from voiceagent.adapters.twilio.amd import TwilioAmdWebhook
from voiceagent.adapters.twilio.fake_call import FakeTwilioCall
from voiceagent.adapters.twilio.fake_rest import FakeTwilioREST
from voiceagent.adapters.twilio.rest import TwilioCallControl, dial_twiml, twilio_control_factory
from voiceagent.endpointing import EndpointingDetector
from voiceagent.session import Session
from voiceagent.stt import SpeechEnded, SpeechStarted, STTEvent, Transcript
from voiceagent.telephony import CallControl
from voiceagent.telephony.amd import AnsweringMachineResult, CallRegistry
from voiceagent.telephony.dtmf import DtmfCollector
from voiceagent.telephony.settings import CallSettings, DtmfSettings
from voiceagent.telephony.supervisor import CallSupervisor
from voiceagent.testing.loopback_http import HTTPRequest, LoopbackHTTPServer, Responder
from voiceagent.testing.openai_server import (
    FakeOpenAIServer,
    Reply,
    drip_reply,
    text_reply,
    tool_reply,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]

ACCOUNT = "AC00000000000000000000000000000001"
TOKEN = "test-auth-token"
CALL_SID = "CA00000000000000000000000000000001"
AGENT_NUMBER = "+15551234567"


class PushSTT:
    """An STT source the test speaks through: ``say(text)`` is one utterance, final at once."""

    vad_events = True

    def __init__(self) -> None:
        self._tx, self._rx = anyio.create_memory_object_stream[STTEvent](64)

    async def send_audio(self, pcm: bytes) -> None:
        pass

    async def events(self) -> AsyncIterator[STTEvent]:
        async with self._rx:
            async for event in self._rx:
                yield event

    async def aclose(self) -> None:
        self._tx.close()

    def say(self, text: str) -> None:
        for event in (SpeechStarted(), Transcript(text, is_final=True, end_of_turn=True), SpeechEnded()):
            self._tx.send_nowait(event)


@dataclass
class Call:
    phone: FakeTwilioCall
    rest: FakeTwilioREST
    llm: FakeOpenAIServer
    sessions: list[Session] = field(default_factory=list)
    stts: list[PushSTT] = field(default_factory=list)
    done: anyio.Event = field(default_factory=anyio.Event)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    hold_before: set[str] = field(default_factory=set)  # lines before which playback holds (once each)

    @property
    def session(self) -> Session:
        return self.sessions[0]

    @property
    def supervisor(self) -> CallSupervisor:
        assert self.session.call is not None
        return self.session.call

    async def started(self) -> None:
        await self.wait(lambda: bool(self.sessions))

    async def wait(self, predicate: Callable[[], bool]) -> None:
        """Poll: the state read lives in the session, the phone and the fakes, with no one event."""
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.01)

    def spoken(self, text: str) -> bool:
        """The sink has delivered all of ``text``'s audio to the call."""
        sink: Any = self.session.agent.sink
        return any(
            span.text == text and span.complete and span.audio_seconds > 0 for span in sink.spoken_spans
        )

    def snapshot(self) -> dict[str, Any]:
        """What the caller had received and played: taken when the REST API sees an update."""
        return {
            "marks_sent": [m["mark"]["name"] for m in self.phone.received if m.get("event") == "mark"],
            "marks_played": [m.name for m in self.phone.echoed_marks if not m.flushed],
            "received_bytes": len(self.phone.received_mulaw),
            "played_bytes": len(self.phone.played_mulaw),
            "heard": self.session.output.heard_text if self.session.output else "",
        }


async def run_call(
    settings: CallSettings,
    script: Callable[[Call], Awaitable[None]],
    *,
    replies: tuple[Reply, ...] = (),
    greeting: str | None = None,
    start_paused: bool = False,
    registry: CallRegistry | None = None,
    rest_control: bool = True,
) -> Call:
    from voiceagent.adapters.espeak import EspeakSink

    class HoldingSink(EspeakSink):
        """Holds the caller's playback right before it speaks one of ``call.hold_before``."""

        async def speak(self, text: str) -> None:
            if text in calls[0].hold_before:
                calls[0].hold_before.discard(text)
                calls[0].phone.pause_playback()
            await super().speak(text)

    calls: list[Call] = []

    async def handler(stream: TwilioMediaStream) -> None:
        call = calls[0]
        try:
            stt = PushSTT()
            agent = Agent(
                llm=LLMClient(base_url=call.llm.base_url, api_key="sk_test"),
                sink=HoldingSink(stream.output, words_per_minute=220),
                system_prompt="You answer the phone.",
            )
            session = Session(
                agent=agent,
                transport=stream,  # a CallControl: its hang_up/transfer go to the call's REST control
                stt=stt,
                endpointing=EndpointingDetector(delay=0, final_wait=0, speculate="off"),
                greeting=greeting,
                call=settings,
            )
            call.stts.append(stt)
            call.sessions.append(session)
            if registry is not None:
                with registry.register(stream.call_sid, session):
                    await session.run()
            else:
                await session.run()
            if not rest_control:
                await stream.wait_closed()  # the session itself must have closed it
        finally:
            call.done.set()

    async with FakeOpenAIServer() as llm, FakeTwilioREST(account_sid=ACCOUNT, auth_token=TOKEN) as rest:
        llm.enqueue(*replies)
        # Each call's TwilioCallControl, made by the server from the stream's start (its CallSid).
        controls = twilio_control_factory(ACCOUNT, TOKEN, base_url=rest.base_url) if rest_control else None
        async with TwilioServer(handler, auth_token=TOKEN, control_factory=controls) as server:
            phone = FakeTwilioCall(
                server.url, auth_token=TOKEN, playback_speed=math.inf, start_paused=start_paused
            )
            call = Call(phone, rest, llm)
            calls.append(call)

            async def snapshot(update: Any) -> None:
                call.snapshots.append(call.snapshot())

            rest.on_update = snapshot
            rest.link(phone)
            with anyio.fail_after(20):
                async with phone:
                    await script(call)
                    if not phone.closed.is_set() and not call.done.is_set():
                        await phone.stop()
                    await call.done.wait()
    return call


def user_turns(llm: FakeOpenAIServer) -> list[str]:
    return [
        r.body["messages"][-1]["content"] for r in llm.requests if r.body["messages"][-1]["role"] == "user"
    ]


# ---- end_call -------------------------------------------------------------------------------------


async def test_end_call_says_goodbye_waits_until_it_was_heard_then_hangs_up_over_rest() -> None:
    goodbye = "Thank you for calling, goodbye."
    settings = CallSettings(end_call=True, goodbye=goodbye)

    async def script(call: Call) -> None:
        await call.started()
        call.hold_before.add(goodbye)
        call.stts[0].say("That is all, thank you.")
        # Playback holds at the goodbye: it reaches the caller but is not heard yet, so no hang-up yet.
        await call.wait(lambda: call.spoken(goodbye))
        assert call.rest.updates == [] and call.supervisor.ending
        call.phone.resume_playback()
        await call.done.wait()

    replies = (tool_reply([("end_call", {})], filler="Alright."), text_reply("Take care."))
    call = await run_call(settings, script, replies=replies)
    (update,) = call.rest.updates
    assert (update.call_sid, dict(update.params), update.username) == (
        CALL_SID,
        {"Status": "completed"},
        ACCOUNT,
    )
    (at_hang_up,) = call.snapshots
    assert at_hang_up["marks_sent"] and at_hang_up["marks_played"] == at_hang_up["marks_sent"]
    assert at_hang_up["played_bytes"] == at_hang_up["received_bytes"] > 0
    assert at_hang_up["heard"] == "Alright. Take care." + goodbye
    assert call.supervisor.ended_by == "end_call"
    assert call.phone.errors == []
    tools = call.llm.requests[0].body["tools"]
    assert json.dumps(tools) == json.dumps(
        [
            {
                "type": "function",
                "function": {
                    "name": "end_call",
                    "description": "End the phone call, once the conversation is over.",
                    "parameters": {
                        "type": "object",
                        "properties": {},
                        "required": [],
                        "additionalProperties": False,
                    },
                },
            }
        ]
    )


async def test_without_call_control_end_call_closes_the_stream_once_the_goodbye_was_heard() -> None:
    goodbye = "Goodbye then."
    settings = CallSettings(end_call=True, goodbye=goodbye)

    async def script(call: Call) -> None:
        await call.started()
        call.stts[0].say("Bye.")
        await call.done.wait()
        await call.phone.closed.wait()

    replies = (tool_reply([("end_call", {})], filler="Okay."), text_reply("Bye now."))
    call = await run_call(settings, script, replies=replies, rest_control=False)
    assert call.rest.requests == []  # no REST credentials: the stream itself is closed
    assert call.phone.close_code == 1000
    assert call.session.output is not None and call.session.output.heard_text.endswith(goodbye)
    assert call.supervisor.ended_by == "end_call"


# ---- transfer_call --------------------------------------------------------------------------------


async def test_transfer_call_posts_dial_twiml_with_auth_after_the_hold_line_was_heard() -> None:
    line = "Please hold while I transfer you."
    settings = CallSettings(transfer_to=(AGENT_NUMBER,), transfer_line=line)

    async def script(call: Call) -> None:
        await call.started()
        call.stts[0].say("I want to talk to a person.")
        await call.done.wait()

    call = await run_call(
        settings,
        script,
        replies=(tool_reply([("transfer_call", {"number": AGENT_NUMBER})]), text_reply("Sure.")),
    )
    (update,) = call.rest.updates
    assert dict(update.params) == {"Twiml": dial_twiml(AGENT_NUMBER)} and update.username == ACCOUNT
    (request,) = [r for r in call.rest.requests if r.method == "POST"]
    basic = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    assert request.status == 200 and request.headers["authorization"] == basic
    (at_transfer,) = call.snapshots
    assert at_transfer["heard"].endswith(line) and at_transfer["marks_played"] == at_transfer["marks_sent"]
    assert call.supervisor.ended_by == "transfer"
    schema = call.llm.requests[0].body["tools"][0]["function"]["parameters"]
    assert schema["properties"] == {"number": {"type": "string", "enum": [AGENT_NUMBER]}}
    tool_result = call.llm.requests[1].body["messages"][-1]
    assert tool_result["role"] == "tool" and "transferred" in tool_result["content"]


async def test_a_failed_transfer_says_so_and_the_call_goes_on() -> None:
    failed = "Sorry, that did not work."
    settings = CallSettings(transfer_to=(AGENT_NUMBER,), transfer_line=None, transfer_failed_line=failed)

    async def script(call: Call) -> None:
        await call.started()
        call.rest.calls[CALL_SID]["status"] = "completed"  # Twilio refuses: the call is not in progress
        call.stts[0].say("Put me through.")
        await call.wait(lambda: call.supervisor.transfers_failed == 1 and call.spoken(failed))
        call.stts[0].say("Never mind then.")
        await call.wait(lambda: len(call.session.results) == 2)

    call = await run_call(
        settings,
        script,
        replies=(
            tool_reply([("transfer_call", {"number": AGENT_NUMBER})]),
            text_reply(""),
            text_reply("Is there anything else?"),
        ),
    )
    assert call.rest.updates == [] and [r.status for r in call.rest.requests] == [400]
    assert call.supervisor.ended_by is None and not call.supervisor.ending
    assert user_turns(call.llm) == ["Put me through.", "Never mind then."]


async def test_the_transfer_tool_refuses_numbers_not_on_the_allowlist() -> None:
    supervisor = CallSupervisor(CallSettings(transfer_to=(AGENT_NUMBER,)), session=None)  # type: ignore[arg-type]
    (transfer,) = supervisor.tools()
    assert transfer.fn(number="+19005550000").startswith("Error:")
    with pytest.raises(ValueError, match="transfer_to must hold"):
        CallSettings(transfer_to=("555-1234",))


# ---- DTMF -----------------------------------------------------------------------------------------


async def test_press_1_reaches_the_bot_as_a_dtmf_turn() -> None:
    settings = CallSettings(dtmf=DtmfSettings(terminator="#", inter_digit_timeout=None))

    async def script(call: Call) -> None:
        await call.started()
        for key in "1#":
            await call.phone.send_dtmf(key)
        await call.wait(lambda: len(call.session.results) == 1)
        for key in "42#":
            await call.phone.send_dtmf(key)
        await call.wait(lambda: len(call.session.results) == 2)

    call = await run_call(settings, script, replies=(text_reply("Sales, hello."), text_reply("Order 42.")))
    assert user_turns(call.llm) == ["[DTMF] 1", "[DTMF] 4 2"]
    assert call.supervisor.dtmf_entries == ["1", "42"]


async def test_a_dtmf_handler_gets_the_digits_and_can_transfer() -> None:
    seen: list[str] = []

    async def on_digits(digits: str, call: CallSupervisor) -> str | None:
        seen.append(digits)
        if digits == "0":
            call.transfer(AGENT_NUMBER)
            return None
        return f"The caller chose option {digits}."

    settings = CallSettings(dtmf=DtmfSettings(on_digits=on_digits, terminator=None, max_digits=1))

    async def script(call: Call) -> None:
        await call.started()
        await call.phone.send_dtmf("2")
        await call.wait(lambda: len(call.session.results) == 1)
        await call.phone.send_dtmf("0")
        await call.done.wait()

    call = await run_call(settings, script, replies=(text_reply("Option two."),))
    assert seen == ["2", "0"]
    assert user_turns(call.llm) == ["The caller chose option 2."]
    assert [dict(u.params) for u in call.rest.updates] == [{"Twiml": dial_twiml(AGENT_NUMBER)}]


async def test_a_dtmf_handler_that_fails_or_hangs_loses_its_entry_and_the_call_goes_on() -> None:
    release = anyio.Event()

    async def on_digits(digits: str, call: CallSupervisor) -> str | None:
        if digits == "9":
            raise RuntimeError("the bot's own bug")
        if digits == "8":
            await release.wait()  # stuck: handler_timeout ends it
        return f"Option {digits}."

    dtmf = DtmfSettings(on_digits=on_digits, terminator=None, max_digits=1, handler_timeout=0.2)

    async def script(call: Call) -> None:
        await call.started()
        for key in "981":
            await call.phone.send_dtmf(key)
        await call.wait(lambda: len(call.session.results) == 1)

    call = await run_call(CallSettings(dtmf=dtmf), script, replies=(text_reply("One."),))
    assert call.supervisor.dtmf_entries == ["9", "8", "1"]
    assert user_turns(call.llm) == ["Option 1."]


def test_dtmf_collector_ends_an_entry_on_terminator_max_digits_or_timeout() -> None:
    keys = DtmfCollector(terminator="#", inter_digit_timeout=2.0, max_digits=3)
    assert [keys.add(d, t) for d, t in (("1", 0.0), ("2", 1.0))] == [None, None]
    assert keys.deadline == 3.0 and keys.expire(2.9) is None and keys.expire(3.0) == "12"
    assert keys.add("#", 4.0) == "#"  # the terminator alone is an entry of its own
    assert [keys.add(d, 5.0) for d in "987"] == [None, None, "987"]
    assert keys.add("x", 6.0) is None and keys.ignored == 1 and keys.pending == ""
    with pytest.raises(ValueError, match="needs an end"):
        DtmfCollector(terminator=None, inter_digit_timeout=None)


# ---- idle prompts ---------------------------------------------------------------------------------


async def test_idle_prompts_then_a_polite_hang_up() -> None:
    settings = CallSettings(
        idle_after=0.05, idle_prompt="Are you still there?", idle_prompts=2, idle_goodbye="Goodbye for now."
    )

    async def script(call: Call) -> None:
        await call.done.wait()

    call = await run_call(settings, script, greeting="Hello, how can I help?")
    heard = call.snapshots[0]["heard"]
    assert heard == "Hello, how can I help?Are you still there?Are you still there?Goodbye for now."
    assert call.supervisor.idle_prompts_said == 2 and call.supervisor.ended_by == "idle"
    assert [dict(u.params) for u in call.rest.updates] == [{"Status": "completed"}]


async def test_the_idle_timer_starts_when_the_bot_was_heard_not_when_it_was_sent() -> None:
    settings = CallSettings(idle_after=0.05, idle_prompts=1)
    greeting = "Hello, how can I help?"

    async def script(call: Call) -> None:
        await call.started()
        await call.wait(lambda: call.spoken(greeting))
        # The greeting is sent but held unplayed: however long it stays unheard, no idle prompt. (This
        # wait only gives a wrong timer the chance to fire; nothing is asserted about time.)
        await anyio.sleep(0.5)
        assert call.supervisor.idle_prompts_said == 0
        call.hold_before.add("Are you still there?")  # held once: the caller answers over it
        call.phone.resume_playback()
        await call.wait(lambda: call.spoken("Are you still there?"))
        call.stts[0].say("Yes, sorry.")  # the caller answers: the count starts over
        call.phone.resume_playback()
        await call.wait(lambda: len(call.session.results) == 1)
        await call.done.wait()

    call = await run_call(
        settings, script, greeting=greeting, start_paused=True, replies=(text_reply("Okay."),)
    )
    assert user_turns(call.llm) == ["Yes, sorry."]
    assert call.supervisor.idle_prompts_said == 2  # one before the answer, one after it
    assert call.supervisor.ended_by == "idle"


# ---- maximum duration -----------------------------------------------------------------------------


async def test_max_duration_says_the_closing_line_then_hangs_up() -> None:
    settings = CallSettings(max_duration=0.2, closing_line="Our time is up, goodbye.")

    async def script(call: Call) -> None:
        await call.done.wait()

    call = await run_call(settings, script)
    assert call.supervisor.ended_by == "max_duration"
    (at_hang_up,) = call.snapshots
    assert at_hang_up["heard"] == "Our time is up, goodbye."
    assert [dict(u.params) for u in call.rest.updates] == [{"Status": "completed"}]


async def test_the_hard_cap_hangs_up_on_a_turn_that_never_ends() -> None:
    settings = CallSettings(max_duration=0.2, max_duration_grace=0.5, closing_line="Never said.")

    async def script(call: Call) -> None:
        await call.started()
        call.stts[0].say("Tell me a story that never ends.")
        await call.done.wait()

    # A stream that drips blank lines forever: only the turn's own 30 s round deadline would end it.
    call = await run_call(settings, script, replies=(drip_reply(0.05),))
    assert call.supervisor.ended_by == "max_duration"
    assert [dict(u.params) for u in call.rest.updates] == [{"Status": "completed"}]
    assert "Never said." not in call.snapshots[0]["heard"]


# ---- answering machine ----------------------------------------------------------------------------


def amd_form(answered_by: str, call_sid: str = CALL_SID) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT,
        "AnsweredBy": answered_by,
        "CallSid": call_sid,
        "MachineDetectionDuration": "2400",
    }


async def post_amd(
    server: LoopbackHTTPServer, public_url: str, form: dict[str, str], *, token: str = TOKEN
) -> int:
    """POST the callback as Twilio does, signed with the official SDK's RequestValidator."""
    import httpx2

    signature = RequestValidator(token).compute_signature(public_url, form)
    async with httpx2.AsyncClient() as client:
        response = await client.post(
            server.url + "/amd",
            content=urlencode(form),
            headers={
                "X-Twilio-Signature": signature,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
    return response.status_code


async def test_an_answering_machine_gets_the_voicemail_line_then_the_call_hangs_up() -> None:
    registry = CallRegistry()
    webhook = TwilioAmdWebhook(TOKEN, registry)
    public_url = "https://bot.example.com/amd"

    async def serve(request: HTTPRequest, respond: Responder) -> None:
        answer = webhook.handle(request.method, public_url, request.headers, request.body)
        await respond.send(answer.status, answer.body.encode())

    voicemail = "Hi, this is the clinic. Please call us back."
    settings = CallSettings(voicemail=voicemail)

    async with LoopbackHTTPServer(serve) as server:

        async def script(call: Call) -> None:
            await call.started()
            assert (
                await post_amd(server, public_url, amd_form("machine_end_beep"), token="wrong-token") == 403
            )
            assert (
                await post_amd(server, public_url, amd_form("human", "CA00000000000000000000000000000404"))
                == 404
            )
            assert webhook.delivered == []
            assert await post_amd(server, public_url, amd_form("machine_end_beep")) == 204
            await call.done.wait()

        call = await run_call(settings, script, registry=registry)
    assert webhook.delivered == [AnsweringMachineResult(CALL_SID, "machine_end_beep", 2400)]
    assert call.supervisor.ended_by == "answering_machine"
    (at_hang_up,) = call.snapshots
    assert at_hang_up["heard"] == voicemail
    assert [dict(u.params) for u in call.rest.updates] == [{"Status": "completed"}]
    assert len(registry) == 0  # the call left the registry when it ended


async def test_a_human_answer_changes_nothing_and_a_hook_decides_when_given() -> None:
    results: list[AnsweringMachineResult] = []

    async def hook(result: AnsweringMachineResult, call: CallSupervisor) -> None:
        results.append(result)
        if result.is_machine:
            call.end("Custom voicemail.", why="answering_machine")

    settings = CallSettings(on_answering_machine=hook)

    async def script(call: Call) -> None:
        await call.started()
        call.session.answering_machine(AnsweringMachineResult(CALL_SID, "human"))
        await call.wait(lambda: len(results) == 1)
        assert not call.supervisor.ending
        call.session.answering_machine(AnsweringMachineResult(CALL_SID, "machine_start"))
        await call.done.wait()

    call = await run_call(settings, script)
    assert [r.answered_by for r in results] == ["human", "machine_start"]
    assert call.snapshots[0]["heard"] == "Custom voicemail."


def test_the_rest_control_is_a_call_control() -> None:
    assert isinstance(TwilioCallControl(ACCOUNT, TOKEN, CALL_SID), CallControl)


class Recorder:
    def __init__(self) -> None:
        self.results: list[AnsweringMachineResult] = []

    def answering_machine(self, result: AnsweringMachineResult) -> None:
        self.results.append(result)


def test_the_amd_webhook_refuses_what_twilio_would_not_send() -> None:
    registry = CallRegistry()
    webhook = TwilioAmdWebhook(TOKEN, registry)
    url = "https://bot.example.com/amd?tenant=7"
    recorder = Recorder()

    def signed(form: dict[str, str], *, sign_url: str = url) -> dict[str, str]:
        return {"x-twilio-signature": RequestValidator(TOKEN).compute_signature(sign_url, form)}

    good = amd_form("fax")
    with registry.register(CALL_SID, recorder):
        with pytest.raises(ValueError, match="already registered"), registry.register(CALL_SID, recorder):
            pass
        assert webhook.handle("GET", url, signed(good), urlencode(good).encode()).status == 405
        assert webhook.handle("POST", url, {}, urlencode(good).encode()).status == 403
        moved = signed(good, sign_url="https://bot.example.com/amd")  # signed for another URL
        assert webhook.handle("POST", url, moved, urlencode(good).encode()).status == 403
        odd = {**good, "AnsweredBy": "robot"}
        assert webhook.handle("POST", url, signed(odd), urlencode(odd).encode()).status == 400
        huge = b"x" * 20_000
        assert webhook.handle("POST", url, signed(good), huge).status == 413
        assert recorder.results == [] and webhook.rejected == 4  # (a GET is not a refused callback)
        assert webhook.handle("POST", url, signed(good), urlencode(good).encode()).status == 204
    assert recorder.results == [AnsweringMachineResult(CALL_SID, "fax", 2400)]
    assert CALL_SID not in registry
    with pytest.raises(ValueError, match="auth_token"):
        TwilioAmdWebhook("", registry)


# ---- the same settings on another provider --------------------------------------------------------


async def test_end_call_on_plivo_hangs_up_through_plivos_call_api_and_the_goodbye_is_heard() -> None:
    """The same CallSettings, unchanged, on a Plivo stream: the goodbye is heard (Plivo's checkpoints) and
    Plivo's Call API gets the hang-up (the fake checks auth and the call's id). The strict order is
    asserted on Twilio above."""
    from voiceagent.adapters.espeak import EspeakSink
    from voiceagent.adapters.plivo import PlivoCallControl, PlivoServer
    from voiceagent.adapters.plivo.fake import FakePlivoCall
    from voiceagent.adapters.plivo.fake_rest import FakePlivoRest
    from voiceagent.telephony import MediaStream

    goodbye = "Goodbye from Plivo."
    sessions: list[Session] = []
    stts: list[PushSTT] = []
    heard_at_hang_up: list[str] = []

    async def handler(stream: MediaStream) -> None:
        stt = PushSTT()
        agent = Agent(
            llm=LLMClient(base_url=llm.base_url, api_key="sk_test"),
            sink=EspeakSink(stream.output, words_per_minute=220),
            system_prompt="You answer the phone.",
        )
        session = Session(
            agent=agent,
            transport=stream,
            stt=stt,
            endpointing=EndpointingDetector(delay=0, final_wait=0, speculate="off"),
            call=CallSettings(end_call=True, goodbye=goodbye),
        )
        stts.append(stt)
        sessions.append(session)
        await session.run()

    async with FakeOpenAIServer() as llm, FakePlivoRest() as rest:
        llm.enqueue(tool_reply([("end_call", {})], filler="Alright."), text_reply("Bye."))
        factory = PlivoCallControl.factory(auth_token=rest.auth_token, base_url=rest.base_url)
        with anyio.fail_after(30):
            async with PlivoServer(handler, auth_token=TOKEN, control_factory=factory) as server:
                async with FakePlivoCall(
                    server.url, auth_token=TOKEN, account_id=rest.auth_id, playback_speed=math.inf
                ) as phone:
                    rest.add_call(phone.call_id)
                    while not stts:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                    stts[0].say("That is all.")
                    await rest.wait_for(1)
                    output = sessions[0].output
                    heard_at_hang_up.append(output.heard_text if output is not None else "")
                    await phone.hang_up()
    assert [(a.kind, a.call_uuid) for a in rest.actions] == [("hangup", phone.call_id)]
    assert heard_at_hang_up == ["Alright. Bye." + goodbye]
    assert rest.rejected == [] and phone.errors == []
