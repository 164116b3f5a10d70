"""``CallControl``: what a bot can do to the phone call itself, beyond its audio.

Each provider implements it over its REST API (Twilio's call update, Telnyx's Call Control actions,
Plivo's Call API). A transport that carries a phone call implements it too (``MediaStream`` delegates
to the provider's control and, without one, hangs up by closing the stream); the built-in
``end_call``/``transfer_call`` tools and ``Session``'s idle and duration limits find it with
``isinstance(transport, CallControl)``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from voiceagent.errors import VoiceAgentError


class CallControlError(VoiceAgentError):
    """A call-control request failed or is not supported by this provider; ``reason`` says which."""

    def __init__(self, reason: str, *, status_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


@runtime_checkable
class CallControl(Protocol):
    async def hang_up(self) -> None:
        """End the call for everyone on it."""
        ...

    async def transfer(self, to: str) -> None:
        """Hand the caller to ``to`` (an E.164 number or a SIP URI); the bot leaves the call."""
        ...

    async def send_dtmf(self, digits: str) -> None:
        """Play DTMF tones to the far end (e.g. to drive an IVR). Raises ``CallControlError`` where the
        provider cannot."""
        ...
