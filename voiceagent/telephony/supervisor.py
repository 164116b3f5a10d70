"""``CallSupervisor``: one call's call control, run by its ``Session`` inside the session's task group.

It owns the built-in tools (``end_call``, ``transfer_call``), DTMF in, the idle prompts, the maximum
duration and the answering-machine hook (``CallSettings`` says which are on). Every way a call ends
goes through one sequence, ``_finish``: no new turns, the running turn says its last words, the
closing line is said and HEARD (the output's mark ledger: ``wait_played``), then the transport hangs
up (``CallControl.hang_up``/``transfer``) and the session ends. Each step is bounded
(``finish_timeout``, ``hang_up_timeout``); a hang-up that fails is logged and the session ends anyway.

The tools only ask: a tool runs inside the turn, and the turn must finish (its reply to the tool
result is the bot's last words) before the goodbye, so the request is carried out by ``run``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from voiceagent.logs import get_logger
from voiceagent.tools import Tool, tool

from .amd import AnsweringMachineResult
from .control import CallControl, CallControlError
from .dtmf import DtmfCollector, ReceivesDtmf
from .settings import CallSettings, dtmf_turn_text

if TYPE_CHECKING:
    from voiceagent.session import Session

log = get_logger(__name__)

EndReason = Literal["end_call", "transfer", "idle", "max_duration", "answering_machine", "app"]
_REQUESTS = 16  # pending requests (tool calls, AMD results) before more are refused


@dataclass(frozen=True, slots=True)
class _End:
    why: EndReason
    line: str | None
    transfer_to: str | None = None


@dataclass(frozen=True, slots=True)
class _Machine:
    result: AnsweringMachineResult


class CallSupervisor:
    def __init__(self, settings: CallSettings, session: Session) -> None:
        self.settings = settings
        self._session = session
        self._requests: tuple[
            MemoryObjectSendStream[_End | _Machine], MemoryObjectReceiveStream[_End | _Machine]
        ]
        self._requests = anyio.create_memory_object_stream[_End | _Machine](_REQUESTS)
        self._changed = anyio.Event()
        self._caller_activity = 0
        self.ending = False
        self.ended_by: EndReason | None = None
        self.idle_prompts_said = 0
        self.dtmf_entries: list[str] = []
        self.transfers_failed = 0
        self.answering_machine: AnsweringMachineResult | None = None

    # ---- what the bot (its tools, its DTMF handler, its AMD hook) can ask -------------------------

    def end(self, line: str | None = None, *, why: EndReason = "app") -> None:
        """End the call: ``line`` is said and heard to its end, then the call is hung up."""
        self._ask(_End(why, line))

    def transfer(self, to: str, line: str | None = None) -> None:
        """Transfer the caller to ``to`` after ``line`` has been heard (``CallControl.transfer``)."""
        self._ask(_End("transfer", line, transfer_to=to))

    async def send_dtmf(self, digits: str) -> None:
        """Play DTMF tones to the far end now (e.g. to drive an IVR), where the provider can: Plivo on
        its stream, Telnyx through Call Control. Raises ``CallControlError`` with the reason otherwise
        (Twilio's streams carry none; a transport without call control)."""
        transport = self._session.transport
        if not isinstance(transport, CallControl):
            raise CallControlError("this transport has no call control: it cannot send DTMF")
        await transport.send_dtmf(digits)

    def tools(self) -> list[Tool]:
        """The built-in tools ``settings`` turns on, bound to this call."""
        made: list[Tool] = []
        if self.settings.end_call:
            made.append(self._end_call_tool())
        if self.settings.transfer_to:
            made.append(self._transfer_tool())
        return made

    # ---- what the session tells us ----------------------------------------------------------------

    def caller_active(self) -> None:
        """The caller spoke or pressed a key: the idle count starts over."""
        self._caller_activity += 1
        self.notify()

    def notify(self) -> None:
        """Something changed (a turn started or ended, speech was heard)."""
        self._changed.set()
        self._changed = anyio.Event()

    def deliver_answering_machine(self, result: AnsweringMachineResult) -> None:
        self._ask(_Machine(result))

    # ---- running ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run in the session's task group until the call ends (the session cancels it)."""
        async with anyio.create_task_group() as tg:
            transport = self._session.transport
            if self.settings.dtmf is not None and isinstance(transport, ReceivesDtmf):
                tg.start_soon(self._dtmf, transport.dtmf)
            if self.settings.idle_after is not None:
                tg.start_soon(self._idle, self.settings.idle_after)
            if self.settings.max_duration is not None:
                tg.start_soon(self._duration, self.settings.max_duration)
            await self._serve_requests(tg)

    def _ask(self, request: _End | _Machine) -> None:
        try:
            self._requests[0].send_nowait(request)
        except anyio.WouldBlock:
            log.warning("call-control request dropped: %d already pending", _REQUESTS)

    async def _serve_requests(self, tg: TaskGroup) -> None:
        async for request in self._requests[1]:
            if self.ending:
                continue
            if isinstance(request, _Machine):
                await self._on_machine(request.result)
            elif request.transfer_to is not None:
                await self._transfer(request.transfer_to, request.line)
            else:
                await self._finish(request.why, request.line, within=self.settings.finish_timeout)

    # ---- ending the call --------------------------------------------------------------------------

    async def _finish(self, why: EndReason, line: str | None, *, within: float) -> None:
        """No new turns; the turn in flight ends; ``line`` is heard; hang up; the session ends."""
        if self.ending:
            return
        self.ending, self.ended_by = True, why
        log.info("ending the call (%s)", why)
        await self._last_words(line, within)
        transport = self._session.transport
        close = getattr(transport, "close", None)
        with anyio.move_on_after(self.settings.hang_up_timeout) as bound:
            try:
                if isinstance(transport, CallControl):
                    await transport.hang_up()
                elif callable(close):
                    # A media stream without call control: closing it ends the <Connect><Stream>;
                    # with no TwiML after it, the provider hangs up.
                    await close()
                else:
                    log.warning("the transport cannot hang up: the session ends, the line may stay up")
            except Exception as exc:  # the call is ending either way: a failed hang-up only logs
                log.warning("hang-up failed: %r; the session ends anyway", exc)
        if bound.cancelled_caught:
            log.warning("hang-up took over %.1f s; the session ends anyway", self.settings.hang_up_timeout)
        self._session.end()

    async def _last_words(self, line: str | None, within: float) -> None:
        session = self._session
        with anyio.move_on_after(within) as bound:
            await session.stop_turns()
            if line:
                await session.say(line)
        if bound.cancelled_caught:
            log.warning("the call's last words took over %.1f s: hanging up regardless", within)

    async def _transfer(self, to: str, line: str | None) -> None:
        control = self._session.transport
        if not isinstance(control, CallControl):
            log.warning("transfer to %s asked, but the transport has no call control", to)
            return
        self.ending, self.ended_by = True, "transfer"
        await self._last_words(line, self.settings.finish_timeout)
        try:
            with anyio.fail_after(self.settings.hang_up_timeout):
                await control.transfer(to)
        except (CallControlError, TimeoutError) as exc:
            reason = exc.reason if isinstance(exc, CallControlError) else "no answer in time"
            log.warning("transfer to %s failed: %s; the call goes on", to, reason)
            self.transfers_failed += 1
            self.ending, self.ended_by = False, None
            self._session.resume_turns()
            if self.settings.transfer_failed_line:
                await self._session.say(self.settings.transfer_failed_line)
            return
        log.info("call transferred to %s", to)
        self._session.end()

    async def _on_machine(self, result: AnsweringMachineResult) -> None:
        self.answering_machine = result
        log.info("answered by %s", result.answered_by)
        hook = self.settings.on_answering_machine
        if hook is not None:
            await hook(result, self)
        elif result.answered_by == "fax":
            await self._finish("answering_machine", None, within=self.settings.finish_timeout)
        elif result.is_machine:
            self._session.interrupt("an answering machine picked up")
            await self._finish(
                "answering_machine", self.settings.voicemail, within=self.settings.finish_timeout
            )

    # ---- idle, duration ---------------------------------------------------------------------------

    async def _wait_change(self, until: Callable[[], bool]) -> None:
        while not until():
            await self._changed.wait()

    async def _idle(self, idle_after: float) -> None:
        unanswered = 0
        answered = self._caller_activity  # the caller's activity count at the last prompt
        session = self._session
        while not self.ending:
            await self._wait_change(lambda: session.quiet)
            # The silence counts from the moment the bot's audio was heard to its end.
            if session.output is not None:
                await session.output.wait_played()
            if not session.quiet:
                continue
            if self._caller_activity != answered:  # the caller said something since (even mid-prompt)
                unanswered, answered = 0, self._caller_activity
            seen = self._caller_activity

            def spoken(seen: int = seen) -> bool:
                return self._caller_activity != seen or not session.quiet

            with anyio.move_on_after(idle_after):
                await self._wait_change(spoken)
            if spoken():
                continue  # not silence: the caller or the bot spoke
            if unanswered >= self.settings.idle_prompts:
                self.end(self.settings.idle_goodbye, why="idle")
                return
            unanswered += 1
            answered = self._caller_activity
            self.idle_prompts_said += 1
            log.info("idle for %.1f s: prompt %d of %d", idle_after, unanswered, self.settings.idle_prompts)
            await session.say(self.settings.idle_prompt)

    async def _duration(self, max_duration: float) -> None:
        await anyio.sleep(max_duration)
        if self.ending:
            return
        log.info("the call reached its maximum duration (%.0f s)", max_duration)
        # The hard cap: whatever is still going on after the grace, the call is hung up.
        await self._finish(
            "max_duration", self.settings.closing_line, within=self.settings.max_duration_grace
        )

    # ---- DTMF -------------------------------------------------------------------------------------

    async def _dtmf(self, keys: Callable[[], AsyncIterator[str]]) -> None:
        settings = self.settings.dtmf
        assert settings is not None
        collector = DtmfCollector(
            terminator=settings.terminator,
            inter_digit_timeout=settings.inter_digit_timeout,
            max_digits=settings.max_digits,
        )
        presses_tx, presses_rx = anyio.create_memory_object_stream[str](64)

        async def read() -> None:
            async with presses_tx:
                async for digit in keys():
                    try:
                        presses_tx.send_nowait(digit)
                    except anyio.WouldBlock:
                        log.warning("DTMF keys arrive faster than they are handled; dropping %r", digit[:4])

        async with anyio.create_task_group() as tg, presses_rx:
            tg.start_soon(read)
            while True:
                deadline = collector.deadline
                wait = math.inf if deadline is None else max(0.0, deadline - anyio.current_time())
                entry: str | None = None
                with anyio.move_on_after(wait):
                    try:
                        digit = await presses_rx.receive()
                    except anyio.EndOfStream:
                        return
                    self.caller_active()
                    entry = collector.add(digit, anyio.current_time())
                if entry is None:
                    entry = collector.expire(anyio.current_time())
                if entry:
                    await self._on_entry(entry)

    async def _on_entry(self, digits: str) -> None:
        settings = self.settings.dtmf
        assert settings is not None
        self.dtmf_entries.append(digits)
        log.info("DTMF entry of %d key(s)", len(digits))
        text: str | None = dtmf_turn_text(digits)
        if settings.on_digits is not None:
            text = None
            with anyio.move_on_after(settings.handler_timeout) as bound:
                try:
                    text = await settings.on_digits(digits, self)
                except Exception as exc:  # the bot's handler failing must not end the call
                    log.warning("the DTMF handler failed: %r", exc)
            if bound.cancelled_caught:
                log.warning(
                    "the DTMF handler took over %.1f s; the entry is dropped", settings.handler_timeout
                )
        if text and not self.ending:
            self._session.take_turn(text)

    # ---- the tools --------------------------------------------------------------------------------

    def _end_call_tool(self) -> Tool:
        def end_call() -> str:
            """End the phone call, once the conversation is over."""
            self.end(self.settings.goodbye, why="end_call")
            return "The call ends after this reply."

        return tool(end_call)

    def _transfer_tool(self) -> Tool:
        numbers = self.settings.transfer_to

        def transfer_call(number: str) -> str:
            """Transfer the caller to a person at one of the allowed numbers."""
            if number not in numbers:  # the schema's enum already says so; the model may not listen
                return f"Error: {number[:40]!r} is not a number calls may be transferred to."
            self.transfer(number, self.settings.transfer_line)
            return "The caller is transferred after this reply."

        transfer_call.__annotations__ = {"number": _literal(numbers), "return": str}
        return tool(transfer_call)


def _literal(values: tuple[str, ...]) -> object:
    return Literal.__getitem__(values)  # type: ignore[attr-defined]
