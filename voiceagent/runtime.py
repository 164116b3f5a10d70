"""Event-loop settings for long-running servers: uvloop when it is installed (``voiceagent[fast]``).

uvloop makes each loop iteration cheaper, which a voice server pays once or twice per streamed token per
call (bench/read_paths.py: the full turn's CPU per token ~0.8x of asyncio's loop). It is optional: without
it, or with ``VOICEAGENT_UVLOOP=0``, the standard asyncio loop runs. Pass the result to ``anyio.run``:
``anyio.run(serve, backend_options=server_loop_options())``.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any


def uvloop_available() -> bool:
    """uvloop is importable and not switched off with ``VOICEAGENT_UVLOOP=0``."""
    if os.environ.get("VOICEAGENT_UVLOOP", "1").strip() in ("0", "false", "no", "off"):
        return False
    return importlib.util.find_spec("uvloop") is not None


def server_loop_options() -> dict[str, Any]:
    """anyio's asyncio backend options for a server: ``{"use_uvloop": True}`` when uvloop is available."""
    return {"use_uvloop": True} if uvloop_available() else {}


__all__ = ["server_loop_options", "uvloop_available"]
