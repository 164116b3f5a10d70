"""Plivo XML for a bot's calls: the answer that starts the audio stream, and the ``<Dial>`` of a transfer.

``stream_xml`` follows the ``<Stream>`` element (https://www.plivo.com/docs/voice/xml/audiostream):
bidirectional (the bot talks back), ``keepCallAlive`` (the stream runs alone; the call ends with it),
``audio/x-mulaw;rate=8000`` by default. ``dial_xml`` is what a transfer's ``aleg_url`` serves
(https://www.plivo.com/docs/voice/xml/dial): ``<Number>`` for a phone number, ``<User>`` for a SIP URI.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

from .messages import CONTENT_TYPES

MAX_EXTRA_HEADERS_BYTES = 512  # documented limit of extraHeaders
_ALNUM = re.compile(r"[A-Za-z0-9]+")
_E164 = re.compile(r"\+?[1-9][0-9]{6,14}")
_SIP = re.compile(r"sips?:[^\s<>&\"']{3,200}")


def stream_xml(
    url: str,
    *,
    content_type: str = "audio/x-mulaw;rate=8000",
    extra_headers: Mapping[str, str] | None = None,
    stream_timeout: int | None = None,
    status_callback_url: str | None = None,
) -> str:
    """A Plivo XML answer that streams the call to ``url`` (your ``wss://`` stream URL) both ways.

    ``extra_headers`` reach the bot as ``StreamStart.custom_parameters``; Plivo allows only letters and
    digits in them, 512 bytes in all.
    """
    if not url.startswith(("wss://", "ws://")):
        raise ValueError(f"the stream URL must be wss:// (ws:// for local tests): {url!r}")
    kind, _, rate = content_type.partition(";rate=")
    if not rate.isdecimal() or (kind, int(rate)) not in CONTENT_TYPES:
        raise ValueError(f"contentType must be one of Plivo's stream formats, not {content_type!r}")
    attrs = {"bidirectional": "true", "keepCallAlive": "true", "contentType": content_type}
    if extra_headers:
        if not all(_ALNUM.fullmatch(k) and _ALNUM.fullmatch(v) for k, v in extra_headers.items()):
            raise ValueError("Plivo allows only letters and digits in extraHeaders names and values")
        joined = ",".join(f"{k}={v}" for k, v in extra_headers.items())
        if len(joined) > MAX_EXTRA_HEADERS_BYTES:
            raise ValueError(f"extraHeaders exceed Plivo's {MAX_EXTRA_HEADERS_BYTES} bytes")
        attrs["extraHeaders"] = joined
    if stream_timeout is not None:
        if stream_timeout <= 0:
            raise ValueError("stream_timeout must be a positive number of seconds")
        attrs["streamTimeout"] = str(int(stream_timeout))
    if status_callback_url is not None:
        attrs["statusCallbackUrl"] = status_callback_url
    rendered = " ".join(f"{name}={quoteattr(value)}" for name, value in attrs.items())
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Stream {rendered}>{escape(url)}</Stream></Response>"
    )


def dial_xml(to: str, *, caller_id: str | None = None) -> str:
    """The Plivo XML that connects the caller to ``to`` (E.164 number or ``sip:`` URI)."""
    target = transfer_target(to)
    tag = "User" if target.startswith(("sip:", "sips:")) else "Number"
    caller = f" callerId={quoteattr(transfer_target(caller_id))}" if caller_id else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Dial{caller}><{tag}>{escape(target)}</{tag}></Dial></Response>"
    )


def transfer_target(to: str) -> str:
    """``to`` when it is an E.164 number or a SIP URI; otherwise ``ValueError`` (never sent anywhere)."""
    cleaned = to.strip() if isinstance(to, str) else ""
    if _E164.fullmatch(cleaned) or _SIP.fullmatch(cleaned):
        return cleaned
    raise ValueError(f"transfer target must be an E.164 number or a sip: URI, got {str(to)[:40]!r}")
