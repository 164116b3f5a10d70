"""The recorder tags records with the turn and round the running Turn publishes, not the logging context."""

from __future__ import annotations

import pytest

from voiceagent.logs import log_context
from voiceagent.replay.cassette import CassetteWriter, ToolRecord
from voiceagent.replay.recorder import RecordingToolRunner
from voiceagent.tool_runner import ToolRunner
from voiceagent.tools import tool
from voiceagent.turn_position import TurnPosition, at_position, current_position

pytestmark = pytest.mark.anyio


@tool
def echo(text: str) -> str:
    """Say it back."""
    return text


def test_the_position_is_scoped_and_none_outside_a_turn() -> None:
    assert current_position() == TurnPosition(None, None)
    with at_position(2):
        assert current_position() == TurnPosition(2, None)
        with at_position(2, 3):
            assert current_position() == TurnPosition(2, 3)
        assert current_position() == TurnPosition(2, None)
    assert current_position() == TurnPosition()


async def test_a_tool_record_carries_the_turn_and_round_without_any_log_context() -> None:
    writer = CassetteWriter.memory()
    runner = RecordingToolRunner(ToolRunner([echo]), writer)
    with at_position(3, 2):
        await runner.run("c1", "echo", '{"text": "hi"}')
    with log_context(turn=9, round=9):  # a log line's context is not what tags a record
        await runner.run("c2", "echo", '{"text": "hi"}')
    first, second = [r for r in writer.cassette().records if isinstance(r, ToolRecord)]
    assert (first.turn, first.round, first.result) == (3, 2, "hi")
    assert (second.turn, second.round) == (None, None)
