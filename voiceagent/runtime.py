"""Event-loop settings for long-running servers: uvloop when it is installed (``voiceagent[fast]``).

uvloop makes each loop iteration cheaper, which a voice server pays once or twice per streamed token per
call (bench/read_paths.py: the full turn's CPU per token ~0.8x of asyncio's loop). It is optional: without
it, or with ``VOICEAGENT_UVLOOP=0``, the standard asyncio loop runs. Pass the result to ``anyio.run``:
``anyio.run(serve, backend_options=server_loop_options())``.

``settle_gc()``, once after start-up: the collector's settings for a long-running server (see there).
"""

from __future__ import annotations

import gc
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


def settle_gc(*, gen0: int | None = None) -> tuple[int, int, int]:
    """Call once after start-up (imports, config, warm-up), before taking calls.

    Collects, then ``gc.freeze()``s what is left: the ~100k objects of the imported modules (the openai
    SDK's types, pydantic's) leave the collector's view, so a full collection no longer walks them and
    stalls every call in the process (bench/scale.py saw 50-140 ms pauses on a 2-core machine without
    it). ``gen0``: also set the young generation's threshold (CPython's default is 700); bench/scale.py
    found no gain from 7,000 at up to 200 sessions, so it is left alone unless asked. Returns the
    previous thresholds, for ``gc.set_threshold(*previous)``.
    """
    if gen0 is not None and gen0 < 1:
        raise ValueError(f"gen0 must be positive, got {gen0}")
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    if gen0 is not None:
        gc.set_threshold(gen0, previous[1], previous[2])
    return previous


__all__ = ["server_loop_options", "settle_gc", "uvloop_available"]
