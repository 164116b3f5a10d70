"""Moved: the replay server, tool runner, STT source and session driver are ``voiceagent.replay``
(``player``, ``tools``, ``stt``, ``session``). This module re-exports them so older imports keep working.
"""

from voiceagent.replay.mismatch import ReplayMismatch
from voiceagent.replay.player import ReplayServer, request_diff, request_view
from voiceagent.replay.session import AgentFactory, ReplayRun, assert_speech_matches, replay_session
from voiceagent.replay.stt import ReplaySTTSource
from voiceagent.replay.tools import ReplayToolRunner, recorded_tool_results

__all__ = [
    "AgentFactory",
    "ReplayMismatch",
    "ReplayRun",
    "ReplaySTTSource",
    "ReplayServer",
    "ReplayToolRunner",
    "assert_speech_matches",
    "recorded_tool_results",
    "replay_session",
    "request_diff",
    "request_view",
]
