"""The recorder tags records with the turn and round the turn's own events tell it (``RoundStarted``
carries both), not with the logging context or any other ambient state."""

from __future__ import annotations

import pytest

from voiceagent.events import RoundStarted, SpeechQueued, ToolFinished, TurnFinished, Usage
from voiceagent.logs import log_context
from voiceagent.replay.cassette import CassetteWriter, SpeechRecord, ToolRecord, TurnRecord
from voiceagent.replay.recorder import Recorder
from voiceagent.results import RoundRecord, ToolCall, TurnResult
from voiceagent.testing.tone_sink import ToneSink

pytestmark = pytest.mark.anyio


def _result(calls: tuple[ToolCall, ...]) -> TurnResult:
    rounds = (RoundRecord(1, "req-1", 1, Usage(10, 2), "stop", "hi", (), 0.0, 0.1, 0.1, 0.2),)
    return TurnResult("hello", "hi", "hi", rounds, calls, 0.1, 0.2, 0.3)


async def test_records_carry_the_turn_and_round_its_events_told_the_recorder() -> None:
    writer = CassetteWriter.memory()
    recorder = Recorder(writer)
    sink = recorder.wrap_sink(ToneSink())
    call = ToolCall(2, "c1", "echo", '{"text": "hi"}', "hi", False, 0.1, 0.1, 0.2)
    with log_context(turn=9, round=9):  # a log line's context is not what tags a record
        await sink.speak("before any turn")
        recorder.on_event(RoundStarted(1, 0.0, turn=3))
        recorder.on_event(RoundStarted(2, 0.05, turn=3))
        recorder.on_event(SpeechQueued(2, "One moment.", 0.06, filler=True))
        recorder.on_event(SpeechQueued(2, "hi", 0.1))
        await sink.speak("One moment.")
        await sink.speak("hi")
        recorder.on_event(ToolFinished(call))
        recorder.on_event(TurnFinished(_result((call,))))
        await sink.speak("after the turn")
    records = writer.cassette().records
    before, filler, during, after = [r for r in records if isinstance(r, SpeechRecord)]
    assert (filler.turn, filler.filler, during.filler) == (3, True, False)  # ours, then the model's
    [tool] = [r for r in records if isinstance(r, ToolRecord)]
    [turn] = [r for r in records if isinstance(r, TurnRecord)]
    assert (before.turn, during.turn, after.turn) == (None, 3, None)
    assert tool == ToolRecord(call, 3)  # written once, as it finished (not again with the summary)
    assert turn.turn == 3


async def test_a_call_the_turn_never_finished_is_written_with_the_summary() -> None:
    writer = CassetteWriter.memory()
    recorder = Recorder(writer)
    unfinished = ToolCall(1, "c9", "slow", "{}", "Cancelled: the user interrupted.", True, 0.1, 0.1, 0.3)
    recorder.on_event(RoundStarted(1, 0.0, turn=1))
    recorder.on_event(TurnFinished(_result((unfinished,))))
    assert [r for r in writer.cassette().records if isinstance(r, ToolRecord)] == [ToolRecord(unfinished, 1)]
