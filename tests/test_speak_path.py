"""The per-chunk speak path (issue #17): what its lean form must still do at each point it skips work.

The lane wakes its speaker with a bare loop future, the Speaker makes no event per speak (a cancel makes
the one it waits on), builds its cancel scope's class directly, and the ledger settles a silent text
inline. Each test pins the behaviour one of those shortcuts could lose.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import pytest

from voiceagent.audio_output import CollectingOutput
from voiceagent.playback import PlaybackLedger
from voiceagent.speaker import Speaker
from voiceagent.speech_lane import SpeechLane
from voiceagent.testing.sinks import RATE, PacedEngine, RecordingSink
from voiceagent.transcript import TurnTranscript
from voiceagent.tts import AudioChunk

pytestmark = pytest.mark.anyio


class _HeldEngine:
    """Yields one piece of audio, then waits for ``go``; stopped there, it takes a loop pass to clean up
    (a vendor closing its request), logging when done: a speak provably in progress, and its end."""

    sample_rate = RATE

    def __init__(self, log: list[str]) -> None:
        self.go = anyio.Event()
        self.started = anyio.Event()
        self.texts: list[str] = []
        self.interrupts = 0
        self.log = log

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.texts.append(text)
        yield bytes(200)
        self.started.set()
        try:
            await self.go.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.lowlevel.checkpoint()
            self.log.append(f"engine done: {text}")
        yield bytes(200)

    async def interrupt(self) -> None:
        self.interrupts += 1


def _lane(sink: RecordingSink) -> SpeechLane:
    released = anyio.Event()
    released.set()
    return SpeechLane(sink, TurnTranscript(), queue_size=10, released=released, on_failure=lambda: None)


async def test_two_cancels_wait_for_the_speak_in_progress_and_the_next_speak_is_not_cancelled() -> None:
    log: list[str] = []
    engine = _HeldEngine(log)
    out = CollectingOutput(RATE)
    speaker = Speaker(engine, out)

    async def cancel(name: str) -> None:
        await speaker.cancel()
        log.append(f"cancel {name} returned")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(speaker.speak, "First text.")
            await engine.started.wait()
            tg.start_soon(cancel, "a")
            tg.start_soon(cancel, "b")
        # Each cancel returned only after the speak ended (its engine cleaned up), so nothing can be
        # written after the clear.
        assert log[0] == "engine done: First text." and sorted(log[1:]) == [
            "cancel a returned",
            "cancel b returned",
        ]
        assert engine.interrupts == 2 and len(out.chunks) == 1
        await speaker.cancel()  # no speak in progress: returns at once
        engine.go.set()
        await speaker.speak("Second text.")  # a fresh scope: the earlier cancels do not reach it
    assert engine.texts == ["First text.", "Second text."]
    assert speaker.spoken_spans[-1].text == "Second text." and speaker.spoken_spans[-1].complete


async def test_a_speak_in_a_cancelled_scope_does_nothing() -> None:
    # The instant engine never yields: only the check at the start of speak stops it.
    sink = RecordingSink()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await sink.speak("Never heard.")
    assert isinstance(sink.engine, PacedEngine) and sink.engine.texts == []
    assert sink.played_chars == 0 and sink.spoken_spans == []


async def test_a_chunk_queued_as_the_turn_stops_is_not_spoken() -> None:
    # The wake-up is already resolved when the scope is cancelled, so the speaker resumes normally: the
    # lane's check after waking is what keeps the stopped turn silent (no speak_start either).
    sink = RecordingSink()
    lane = _lane(sink)
    with anyio.fail_after(10):
        with anyio.CancelScope() as turn:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lane.speak_all)
                await anyio.wait_all_tasks_blocked()  # the speaker waits for an item
                lane.say(0, "Too late.")
                turn.cancel()
    assert sink.calls == []


async def test_a_chunk_queued_after_the_waiting_speaker_was_cancelled_is_dropped_quietly() -> None:
    # The speaker's wait was cancelled (its future is done) but the speaker has not run yet: queueing
    # must not try to wake it again.
    sink = RecordingSink()
    lane = _lane(sink)
    with anyio.fail_after(10):
        with anyio.CancelScope() as turn:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lane.speak_all)
                await anyio.wait_all_tasks_blocked()
                turn.cancel()
                lane.say(0, "Too late.")
    assert sink.calls == []


async def test_a_waiting_speaker_wakes_for_each_chunk_and_ends_on_close() -> None:
    sink = RecordingSink()
    lane = _lane(sink)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lane.speak_all)
            for text in ("One.", " Two.", " Three."):
                await anyio.wait_all_tasks_blocked()
                lane.say(0, text)
            await anyio.wait_all_tasks_blocked()
            lane.close()
    assert sink.spoken == ["One.", " Two.", " Three."]
    assert [c.kind for c in sink.calls][-1] == "flush"


async def test_a_silent_text_is_credited_only_once_the_playhead_reaches_it() -> None:
    out = CollectingOutput(RATE, auto_play=False)
    ledger = PlaybackLedger(out)
    ledger.begin("Spoken.")
    chunk = AudioChunk(bytes(2 * RATE), RATE, "Spoken.")  # one second
    await out.write(chunk)
    ledger.add_audio(chunk.duration)
    ledger.finish()
    ledger.begin(" ", complete=True)  # silent, at 1.0 s on the timeline
    out.play(0.5)
    ledger.settle()
    assert ledger.played_chars == 0  # half of "Spoken." is not a whole word; the space is not reached
    assert [(s.text, s.audio_seconds, s.played_seconds, s.complete) for s in ledger.spoken_spans] == [
        ("Spoken.", 1.0, 0.5, True),
        (" ", 0.0, 0.0, True),
    ]
    ledger.begin(" ", complete=True)  # a silent text the playhead has reached counts whole
    out.play()
    ledger.settle()
    assert ledger.played_chars == 1
