"""TwiML for a bidirectional Media Stream: ``<Connect><Stream>`` (Twilio's TwiML <Stream> docs)."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit
from xml.sax.saxutils import quoteattr


def connect_stream_twiml(
    url: str,
    parameters: Mapping[str, str] | None = None,
    *,
    name: str | None = None,
    status_callback: str | None = None,
    status_callback_method: str | None = None,
) -> str:
    """``<Response><Connect><Stream url=...><Parameter .../></Stream></Connect></Response>``.

    Twilio requires a ``wss://`` URL without a query string (errors 31920/31922): values the call
    handler needs go in ``parameters`` and arrive in ``start.customParameters``.
    """
    parts = urlsplit(url)
    if parts.scheme != "wss" or not parts.hostname:
        raise ValueError(f"Media Stream URL must be wss://host/...: {url!r}")
    if parts.query or "?" in url:
        raise ValueError("Media Stream URL must not have a query string; pass values as parameters instead")
    if parts.port not in (None, 443):
        raise ValueError("Media Stream URL must use port 443")
    if status_callback_method not in (None, "GET", "POST"):
        raise ValueError("status_callback_method must be GET or POST")
    attrs = f"url={quoteattr(url)}"
    if name is not None:
        attrs += f" name={quoteattr(name)}"
    if status_callback is not None:
        attrs += f" statusCallback={quoteattr(status_callback)}"
    if status_callback_method is not None:
        attrs += f" statusCallbackMethod={quoteattr(status_callback_method)}"
    params = "".join(
        f"<Parameter name={quoteattr(str(key))} value={quoteattr(str(value))}/>"
        for key, value in (parameters or {}).items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream {attrs}>{params}</Stream></Connect></Response>"
    )
