"""Where a call may be transferred: an E.164 number or a SIP URI, checked before anything is sent."""

from __future__ import annotations

import re

from .control import CallControlError

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# No whitespace, quotes, angle brackets or '&': the URI goes into TwiML and provider requests.
_SIP = re.compile(r"sips?:[^\s<>\"'&]{1,250}")


def is_destination(to: object) -> bool:
    return isinstance(to, str) and bool(_E164.fullmatch(to) or _SIP.fullmatch(to))


def validate_destination(to: str) -> str:
    """``to`` if it is an E.164 number (``+15551234567``) or a SIP URI (``sip:alice@example.com``);
    otherwise ``CallControlError``."""
    if is_destination(to):
        return to
    shown = to[:40] if isinstance(to, str) else type(to).__name__
    raise CallControlError(
        f"transfer target {shown!r} is neither an E.164 number (+15551234567) nor a sip: URI"
    )
