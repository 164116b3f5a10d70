"""Answering-machine detection (AMD): what answered an outbound call, and the route to its session.

Providers report it out of band (Twilio's async AMD: a signed status-callback webhook with
``AnsweredBy``), so a webhook handler looks the running call up by its id in a ``CallRegistry`` and
hands the result to that call's ``Session`` (``Session.answering_machine``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

AnsweredBy = Literal[
    "human", "machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax", "unknown"
]
ANSWERED_BY: frozenset[str] = frozenset(get_args(AnsweredBy))


@dataclass(frozen=True, slots=True)
class AnsweringMachineResult:
    call_id: str
    answered_by: AnsweredBy
    detection_ms: int | None = None  # how long the provider listened before deciding

    @property
    def is_machine(self) -> bool:
        return self.answered_by.startswith("machine_")

    @property
    def beep_heard(self) -> bool:
        """The machine's greeting is over (Twilio's DetectMessageEnd): a message left now is recorded."""
        return self.answered_by in ("machine_end_beep", "machine_end_silence", "machine_end_other")


class TakesAnsweringMachine(Protocol):
    def answering_machine(self, result: AnsweringMachineResult) -> None:
        """Called from the webhook's task: hand over, do not block."""
        ...


class CallRegistry:
    """Running calls by id (Twilio CallSid), for webhooks that arrive beside the media stream."""

    def __init__(self) -> None:
        self._calls: dict[str, TakesAnsweringMachine] = {}

    @contextmanager
    def register(self, call_id: str, session: TakesAnsweringMachine) -> Iterator[None]:
        """``with registry.register(stream.call_sid, session): await session.run()``."""
        if call_id in self._calls:
            raise ValueError(f"call {call_id[:40]!r} is already registered")
        self._calls[call_id] = session
        try:
            yield
        finally:
            self._calls.pop(call_id, None)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._calls

    def __len__(self) -> int:
        return len(self._calls)

    def deliver(self, result: AnsweringMachineResult) -> bool:
        """Route ``result`` to its call's session; False when no such call is running here."""
        session = self._calls.get(result.call_id)
        if session is None:
            return False
        session.answering_machine(result)
        return True
