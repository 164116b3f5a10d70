"""The JSON envelope every provider's media-stream frame shares: size cap, JSON object, string ``event``.

Each provider's ``messages.parse_inbound`` starts here and dispatches on the event; ``error`` is the
provider's own ``MediaStreamProtocolError`` subclass, so a codec still raises only its own error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from .errors import MediaStreamProtocolError

_DETAIL_CHARS = 80  # of the JSON decoder's message: enough to locate the fault, never a frame's worth


def load_event(
    raw: str | bytes, *, max_bytes: int, error: Callable[[str], MediaStreamProtocolError]
) -> tuple[Mapping[str, Any], str]:
    """The frame as a JSON object and its ``event`` name. Raises ``error(reason)`` and nothing else."""
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise error(f"frame of {size} bytes exceeds the {max_bytes}-byte limit")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise error(f"frame is not valid JSON: {str(exc)[:_DETAIL_CHARS]}") from None
    if not isinstance(doc, dict):
        raise error(f"frame is a JSON {type(doc).__name__}, not an object")
    event = doc.get("event")
    if not isinstance(event, str):
        raise error("frame has no string 'event' field")
    return doc, event
