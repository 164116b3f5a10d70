"""Record and replay: one package.

- ``cassette``: the records (one type per thing recorded) and the JSONL file that holds them.
- ``recorder``: wrappers that pass a live session through unchanged and write what went by.
- ``player``: ``ReplayServer``, a local OpenAI-compatible server that serves a recording and checks every
  request against it; ``tools`` and ``stt`` replay the tool results and the transcripts; ``session``
  drives a whole recorded call through an agent.
- ``timeline``: what happened when, and what the caller heard, built from a cassette.

Names are imported lazily, as in ``voiceagent``: importing a cassette does not start an HTTP stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voiceagent.replay.cassette import Cassette, CassetteError, CassetteWriter
    from voiceagent.replay.mismatch import ReplayMismatch
    from voiceagent.replay.player import ReplayServer, request_diff, request_view
    from voiceagent.replay.recorder import Recorder
    from voiceagent.replay.session import AgentFactory, ReplayRun, assert_speech_matches, replay_session
    from voiceagent.replay.stt import ReplaySTTSource
    from voiceagent.replay.timeline import Timeline
    from voiceagent.replay.tools import ReplayToolRunner, recorded_tool_results

_EXPORTS = {
    "Cassette": "voiceagent.replay.cassette",
    "CassetteError": "voiceagent.replay.cassette",
    "CassetteWriter": "voiceagent.replay.cassette",
    "ReplayMismatch": "voiceagent.replay.mismatch",
    "ReplayServer": "voiceagent.replay.player",
    "request_diff": "voiceagent.replay.player",
    "request_view": "voiceagent.replay.player",
    "Recorder": "voiceagent.replay.recorder",
    "AgentFactory": "voiceagent.replay.session",
    "ReplayRun": "voiceagent.replay.session",
    "assert_speech_matches": "voiceagent.replay.session",
    "replay_session": "voiceagent.replay.session",
    "ReplaySTTSource": "voiceagent.replay.stt",
    "Timeline": "voiceagent.replay.timeline",
    "ReplayToolRunner": "voiceagent.replay.tools",
    "recorded_tool_results": "voiceagent.replay.tools",
}
__all__ = [
    "AgentFactory",
    "Cassette",
    "CassetteError",
    "CassetteWriter",
    "Recorder",
    "ReplayMismatch",
    "ReplayRun",
    "ReplaySTTSource",
    "ReplayServer",
    "ReplayToolRunner",
    "Timeline",
    "assert_speech_matches",
    "recorded_tool_results",
    "replay_session",
    "request_diff",
    "request_view",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'voiceagent.replay' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
