"""``CallSettings``: the call-control features a bot turns on for a phone call.

Give them to ``Session(call=...)``. Each feature is off until set: the ``end_call`` and
``transfer_call`` tools (added to the agent's tools, schemas byte-stable), DTMF in, idle prompts, a
maximum call duration, and what to do when an answering machine picks up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .amd import AnsweringMachineResult
from .destination import is_destination
from .dtmf import DtmfCollector

if TYPE_CHECKING:
    from .supervisor import CallSupervisor

DtmfHandler = Callable[[str, "CallSupervisor"], Awaitable[str | None]]
"""``(digits, call) -> text``: the text becomes the caller's turn; ``None`` takes no turn (the handler
acted itself, e.g. ``call.transfer(...)``)."""

AnsweringMachineHook = Callable[[AnsweringMachineResult, "CallSupervisor"], Awaitable[None]]


@dataclass(frozen=True)
class DtmfSettings:
    """Keys pressed gather into one entry until ``terminator``, ``max_digits`` or ``inter_digit_timeout``
    seconds without a key. The entry goes to ``on_digits`` or, by default, becomes the caller's turn as
    ``"[DTMF] 1 2 3"``. A key press interrupts the bot, as speech does."""

    terminator: str | None = "#"
    inter_digit_timeout: float | None = 2.0
    max_digits: int = 16
    on_digits: DtmfHandler | None = None
    handler_timeout: float = 10.0

    def __post_init__(self) -> None:
        DtmfCollector(  # the same checks the collector makes, at construction
            terminator=self.terminator,
            inter_digit_timeout=self.inter_digit_timeout,
            max_digits=self.max_digits,
        )
        if not self.handler_timeout > 0:
            raise ValueError("handler_timeout must be a positive number of seconds")


def dtmf_turn_text(digits: str) -> str:
    return "[DTMF] " + " ".join(digits)


@dataclass(frozen=True)
class CallSettings:
    # end_call: a tool the model calls when the conversation is over; the caller hears ``goodbye``
    # (after the model's own last words) to its end, then the call is hung up.
    end_call: bool = False
    goodbye: str | None = "Thank you for calling. Goodbye."
    # transfer_call(number): offered only with an allowlist (the model can pick no other number).
    transfer_to: tuple[str, ...] = ()
    transfer_line: str | None = "Please hold while I transfer your call."
    transfer_failed_line: str | None = "Sorry, I could not transfer your call."
    dtmf: DtmfSettings | None = None
    # Idle: after ``idle_after`` seconds with neither the caller nor the bot speaking (counted from the
    # moment the bot's audio was heard to its end), say ``idle_prompt``; after ``idle_prompts`` prompts
    # unanswered, say ``idle_goodbye`` and hang up.
    idle_after: float | None = None
    idle_prompt: str = "Are you still there?"
    idle_prompts: int = 2
    idle_goodbye: str | None = "I haven't heard from you, so I'll hang up now. Goodbye."
    # After ``max_duration`` seconds no new turn starts: the current one finishes, ``closing_line`` is
    # said, the call hangs up. ``max_duration_grace`` later it hangs up whatever is still going on.
    max_duration: float | None = None
    closing_line: str | None = "We have reached the time limit for this call. Goodbye."
    max_duration_grace: float = 15.0
    # Answering machine (provider AMD): ``on_answering_machine`` decides; without it a machine gets
    # ``voicemail`` (if set) and the call hangs up, a fax is hung up on, a human talks to the bot.
    voicemail: str | None = None
    on_answering_machine: AnsweringMachineHook | None = None
    # Bounds: a goodbye line (and the turn before it) gets this long to be heard; then the hang-up.
    finish_timeout: float = 15.0
    hang_up_timeout: float = 10.0

    def __post_init__(self) -> None:
        bad = [n for n in self.transfer_to if not is_destination(n)]
        if bad:
            raise ValueError(f"transfer_to must hold E.164 numbers or sip: URIs, got {bad[0][:40]!r}")
        if len(set(self.transfer_to)) != len(self.transfer_to):
            raise ValueError("transfer_to lists a number twice")
        for name in ("idle_after", "max_duration"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds or None")
        if self.idle_prompts < 0:
            raise ValueError("idle_prompts must not be negative")
        for name in ("max_duration_grace", "finish_timeout", "hang_up_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds")
