"""Replaying a whole recorded session: the agent rebuilt, its turns driven, the speech compared."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from voiceagent.events import TurnEvent
from voiceagent.replay.cassette import (
    Cassette,
    CassetteWriter,
    SpeechRecord,
)
from voiceagent.replay.mismatch import ReplayMismatch
from voiceagent.replay.player import ReplayServer
from voiceagent.replay.recorder import Recorder, RecordingLLM, RecordingTTSSink
from voiceagent.replay.stt import ReplaySTTSource
from voiceagent.results import TurnResult
from voiceagent.stt import Transcript
from voiceagent.testing.tone_sink import ToneSink
from voiceagent.tts import TTSSink

if TYPE_CHECKING:
    from voiceagent.agent import Agent
    from voiceagent.chat_stream import ChatStreamer


def _speech_line(record: SpeechRecord, audio: bool) -> str:
    if not audio or record.audio_sha256 is None:
        return repr(record.text)
    return f"{record.text!r}  audio sha256={record.audio_sha256[:16]} {record.audio_seconds}s"


def assert_speech_matches(
    cassette: Cassette, spoken: RecordingTTSSink | Sequence[SpeechRecord], *, audio: bool = True
) -> None:
    """The texts handed to the sink (and, with ``audio``, their audio digests) equal the recording's."""
    got = list(spoken.records if isinstance(spoken, RecordingTTSSink) else spoken)
    want = cassette.speech
    compare_audio = audio and all(r.audio_sha256 for r in want) and all(r.audio_sha256 for r in got)
    want_lines = [_speech_line(r, compare_audio) for r in want]
    got_lines = [_speech_line(r, compare_audio) for r in got]
    if want_lines != got_lines:
        diff = "\n".join(
            difflib.unified_diff(want_lines, got_lines, "recorded speech", "replayed speech", lineterm="")
        )
        raise AssertionError(f"{cassette.name}: the spoken text differs from the recording:\n{diff}")


# ---- a whole session -------------------------------------------------------------------------------

AgentFactory = Callable[["ChatStreamer", TTSSink], "Agent"]


@dataclass
class ReplayRun:
    """What replaying a session produced; ``recording`` is the replay itself, recorded (for timelines)."""

    results: list[TurnResult]
    events: list[list[TurnEvent]]
    recording: Cassette
    sink: RecordingTTSSink
    mismatches: list[ReplayMismatch] = field(default_factory=list)


async def replay_session(
    server: ReplayServer, build_agent: AgentFactory, *, sink: TTSSink | None = None, stt_speed: float = 0.0
) -> ReplayRun:
    """Drive the recorded call through ``build_agent(llm, sink)`` against ``server``.

    User utterances come from a ``ReplaySTTSource``; a turn the recording shows interrupted is cut at the
    same point: once the server has sent the recorded chunks and the sink has spoken what was heard.
    """
    cassette = server.cassette
    recorder = Recorder(CassetteWriter.memory(meta={"replay_of": cassette.name, **cassette.meta}))
    recording_sink = recorder.wrap_sink(sink or ToneSink())
    recording_llm = recorder.wrap_llm(server.client())
    agent = build_agent(recording_llm, recording_sink)
    agent.runner = server.tool_runner(agent.runner)
    turns = cassette.turns
    utterances = [
        e.text
        async for e in ReplaySTTSource(cassette, speed=stt_speed).events()
        if isinstance(e, Transcript) and e.is_final
    ]
    results: list[TurnResult] = []
    all_events: list[list[TurnEvent]] = []
    for index, text in enumerate(utterances, start=1):
        events: list[TurnEvent] = []

        def on_event(event: TurnEvent, events: list[TurnEvent] = events) -> None:
            events.append(event)
            recorder.on_event(event)

        turn = agent.new_turn(on_event)
        recorded = turns[index - 1] if index <= len(turns) else None
        if recorded is not None and recorded.interrupted:
            result = await _run_interrupted(
                server, turn, text, recorded.turn, recording_llm, recording_sink, len(recorded.heard_text)
            )
        else:
            result = await turn.run(text)
        agent.results.append(result)
        results.append(result)
        all_events.append(events)
    return ReplayRun(results, all_events, recorder.writer.cassette(), recording_sink, list(server.mismatches))


async def _run_interrupted(
    server: ReplayServer,
    turn: Any,
    text: str,
    turn_index: int,
    llm: RecordingLLM,
    sink: RecordingTTSSink,
    heard_chars: int,
) -> TurnResult:
    """Cut where the recording was cut: the agent has every chunk the recording got before the caller
    spoke, and the sink has spoken what the caller heard."""
    cut = [
        e.n for e in server.exchanges if e.request.turn == turn_index and e.end and e.end.how == "cancelled"
    ]
    # Chunks the agent had received, over the whole session, when the caller cut in.
    chunks_at_cut = sum(len(e.chunks) for e in server.exchanges if cut and e.n <= cut[-1])
    box: list[TurnResult] = []
    chars_before = len(sink.text)

    async with anyio.create_task_group() as tg:

        async def run() -> None:
            box.append(await turn.run(text))
            tg.cancel_scope.cancel()  # ended on its own (e.g. a mismatch): nothing left to cut

        async def barge_in() -> None:
            if cut:
                await server.wait_for_cut(cut[-1])
                await llm.wait_for_chunks(chunks_at_cut)
            await sink.wait_for_chars(chars_before + heard_chars)
            turn.cancel()

        tg.start_soon(run)
        tg.start_soon(barge_in)
    return box[0]
