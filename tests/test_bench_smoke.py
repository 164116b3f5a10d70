"""The bench harness at tiny sizes: every measurement runs end to end and yields well-formed results.

No timing assertions: only shapes, counts, finiteness and that the right text reached the right place.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's bench/ package

from bench.latency import measure_latency
from bench.livekit_harness import livekit_available
from bench.overhead import CONTENDERS, FLOOR, SETUP_CONTENDERS, measure_overhead, measure_setup
from bench.pipecat_harness import pipecat_available
from bench.run import QUICK, Report, render
from bench.scale import (
    CONTENDER_METHODS,
    PREVIOUS,
    RAMP,
    SessionRunner,
    chunk_latencies,
    heap_per_session,
    measure_scale,
    run_level,
    run_ours,
)
from bench.scenarios import parse_model, scenario, token_words
from bench.server import ServerProcess, shared_clock
from bench.stats import Summary, percentile, summarize
from bench.turn_wall import (
    OURS,
    SEQUENTIAL,
    TurnWallResult,
    ideal_seconds,
    ours_streaming_engine_turn,
    ours_streaming_turn,
    ours_turn,
    sequential_turn,
)

pytestmark = pytest.mark.skipif(not shared_clock(), reason="the bench needs Linux's CLOCK_MONOTONIC")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess() as s:
        yield s


def finite(summary: Summary) -> bool:
    values = (summary.median, summary.low, summary.high)
    return all(math.isfinite(v) for v in values) and summary.low <= summary.median <= summary.high


def test_scenario_names_round_trip() -> None:
    spec = scenario("tag-1", "text", tokens=12, delay=0.5)
    assert parse_model(spec.model) == spec
    with pytest.raises(ValueError, match="not a bench model"):
        parse_model("gpt-4o")


def test_stats() -> None:
    assert summarize([3.0, 1.0, 2.0]) == Summary(2.0, 1.0, 3.0, 3)
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    with pytest.raises(ValueError):
        summarize([])


def test_chunk_latency_picks_the_token_that_completed_the_chunk() -> None:
    words = token_words(16)  # "w0 " .. "w7. " .. "w15. "
    sent = {i: float(i) for i in range(18)}  # 16 content chunks, finish, usage; one a second
    # A look-ahead chunker emits "w0..w7." once "w8" arrived (t=8); a punctuation chunker at "w7." (t=7).
    log = [(8.002, "".join(words[:8])), (17.001, "".join(words[8:]))]
    assert chunk_latencies(words, log, sent) == pytest.approx([2.0, 1.0])
    assert chunk_latencies(words, [(7.003, "".join(words[:8]))], sent) == pytest.approx([3.0])


@pytest.mark.parametrize("delay", [0.0, 0.002])
def test_overhead_harness(server: ServerProcess, delay: float) -> None:
    result = measure_overhead(server.base_url, tokens=40, reps=1, delay=delay)
    assert result.regime == ("paced" if delay else "burst")
    assert set(result.cpu_ms_per_1k) == set(CONTENDERS)
    assert result.ratio_to_floor[FLOOR].median == 1.0
    assert all(finite(s) and s.count == 1 for s in result.cpu_ms_per_1k.values())


def test_setup_harness(server: ServerProcess) -> None:
    result = measure_setup(server.base_url, calls=2, reps=1)
    assert set(result) == {*SETUP_CONTENDERS, "ours over floor"}
    assert all(finite(s) and s.count == 1 for s in result.values())


def test_latency_harness(server: ServerProcess) -> None:
    result = measure_latency(server, reps=2)
    for summary in (result.ours_text_ms, result.ours_tool_ms, result.sdk_text_ms):
        assert finite(summary) and summary.count == 2


def test_turn_wall_contenders_speak_filler_and_answer(server: ServerProcess) -> None:
    async def both() -> tuple[float, float]:
        return await ours_turn(server.base_url, "smoke-ours"), await sequential_turn(
            server.base_url, "smoke-seq"
        )

    ours, sequential = anyio.run(both)  # each raises if the wrong words were spoken
    assert ours > 0 and sequential > 0 and ideal_seconds() > 0
    assert anyio.run(ours_streaming_turn, server.base_url, "smoke-ours-streaming") > 0
    # The streaming-text engine takes the words as written and still says filler and answer in full.
    assert anyio.run(ours_streaming_engine_turn, server.base_url, "smoke-ours-streaming-engine") > 0


def test_scale_level_and_memory(server: ServerProcess) -> None:
    level = run_level(server, run_ours, "smoke", sessions=2, tokens=16)
    assert level.sessions == 2
    assert level.chunks == 4  # two sentences of 8 words per session
    assert level.p50_ms <= level.p99_ms <= level.max_ms
    assert level.client_ms_per_session_s > 0 and level.server_ms_per_session_s >= 0
    assert 0 <= level.lag_p99_ms <= level.lag_max_ms and level.projected_sessions() > 0
    # Every session's open was seen by the server; the machine's other CPU is never negative.
    assert 0 < level.open_p99_ms <= level.open_max_ms
    assert level.bench_cores > 0 and level.others_cores >= 0
    assert heap_per_session(server, run_ours, "smoke", sessions=2, tokens=8) > 0


def test_fast_server_serves_a_ramped_level() -> None:
    # The scale section's server (uvloop when installed, the draining accept loop): every session of a
    # burst opened at once is accepted and streamed in full.
    with ServerProcess(fast=True) as fast:
        level = run_level(fast, run_ours, "smoke-fast", sessions=6, tokens=16, window_s=0.0)
        ramped = run_level(fast, run_ours, "smoke-ramp", sessions=3, tokens=16, window_s=0.2)
    assert level.chunks == 12 and level.late_opens == 0 and level.window_s == 0.0
    assert ramped.chunks == 6 and ramped.window_s == 0.2 and ramped.open_p99_ms > 0


def test_scale_methods_side_by_side(server: ServerProcess) -> None:
    runners: dict[str, SessionRunner] = {"smoke-ramp": run_ours, "smoke-previous": run_ours}
    CONTENDER_METHODS["smoke-previous"] = PREVIOUS
    try:
        with ServerProcess(fast=True) as fast:
            results = measure_scale(
                server, runners, levels=(2,), memory_sessions=2, budget_s=60.0, fast_server=fast, shrink=0.1
            )
    finally:
        del CONTENDER_METHODS["smoke-previous"]
    by_name = {r.contender: r for r in results}
    assert by_name["smoke-ramp"].method == RAMP.label and by_name["smoke-previous"].method == PREVIOUS.label
    assert by_name["smoke-ramp"].tokens == 30 and by_name["smoke-previous"].tokens == 15
    assert [lv.window_s for lv in by_name["smoke-ramp"].levels] == [pytest.approx(0.5)]


# Not in [dev]: pipecat-ai[openai]==1.14.0 pulls numba, llvmlite and onnxruntime (~320 MB installed, more
# than the rest of [dev]) for one comparison test. Run it with `pip install -r bench/requirements.txt`.
@pytest.mark.skipif(
    pipecat_available() is not None,
    reason=f"{pipecat_available()} (~320 MB with numba, llvmlite, onnxruntime; not in [dev])",
)
@pytest.mark.parametrize("aggregation", ["sentence", "token"])
def test_pipecat_turn(server: ServerProcess, aggregation: str) -> None:
    from bench.turn_wall import pipecat_turn

    # Raises unless Pipecat spoke exactly the filler and the answer and ran the tool once.
    assert anyio.run(pipecat_turn, server.base_url, f"smoke-pipecat-{aggregation}", aggregation) > 0


@pytest.mark.skipif(livekit_available() is not None, reason=f"{livekit_available()} (not in [dev])")
def test_livekit_harness_shows_the_dropped_tool_call_on_electrons_shape(server: ServerProcess) -> None:
    from bench.livekit_harness import CONTENDERS as LK_CONTENDERS
    from bench.livekit_harness import measure_livekit

    result = measure_livekit(server.base_url, tokens=20, reps=1)
    assert set(result.cpu_ms_per_1k) == set(LK_CONTENDERS)
    assert all(finite(s) for s in result.cpu_ms_per_1k.values())
    seen = {(row.shape.split()[0], row.contender): row.ok for row in result.tool_rows}
    # LiveKit 1.8 loses the call when the finish chunk has no delta (Electron), keeps it with one.
    assert seen == {
        ("Electron", "LiveKit Agents 1.8"): False,
        ("Electron", "ours"): True,
        ("OpenAI", "LiveKit Agents 1.8"): True,
        ("OpenAI", "ours"): True,
    }


def test_voice_latency_harness_runs_a_call_through_the_session(server: ServerProcess) -> None:
    from bench.voice_latency import STAGES, measure_voice_latency, render_rows

    result = measure_voice_latency(server, reps=1, modes=("off",))
    (row,) = result.rows
    assert set(row.stage_ms) == set(STAGES)
    assert all(finite(s) and s.count == 1 for s in (row.total_ms, row.framework_ms, row.own_ms))
    assert all(finite(s) for s in row.stage_ms.values())
    assert len(render_rows(result)) == 3


def test_render_has_a_row_per_measurement() -> None:
    walls = {OURS: summarize([2.0]), SEQUENTIAL: summarize([3.0])}
    report = Report(QUICK, "test machine", (0.0, 0.0, 0.0), "not installed")
    report.turn_wall = TurnWallResult(1, walls, 2.1, {"Pipecat 1.14": "not installed"})
    text = render(report)
    assert "| 3 | Turn wall time" in text and "Pipecat: not run (not installed)" in text
    assert "| ours | 2.00 s (2.00–2.00) | 0.95x |" in text
    assert "| 3t | Turn wall vs Pipecat in TOKEN mode" in text and "| not measured |" in text


def test_render_gives_the_token_mode_verdict() -> None:
    from bench.turn_wall import PIPECAT, PIPECAT_TOKEN

    walls = {
        OURS: summarize([2.13]),
        SEQUENTIAL: summarize([3.0]),
        PIPECAT: summarize([2.45]),
        PIPECAT_TOKEN: summarize([2.07]),
    }
    report = Report(QUICK, "test machine", (0.0, 0.0, 0.0), None)
    report.turn_wall = TurnWallResult(1, walls, 2.15, {})
    row = next(line for line in render(report).splitlines() if line.startswith("| 3t |"))
    assert "ours − theirs +60 ms" in row and row.endswith("| < Pipecat TOKEN (#17) | **no** |")


@pytest.mark.parametrize(
    ("ours_p99", "theirs_p99", "verdict"),
    [
        ([5.0, 9.0], [5.0, 80.0], "| **no**; yes |"),  # Pipecat missed the second level, we held it
        ([5.0, 80.0], [5.0, 90.0], "| **no**; **no** |"),  # both stopped at the first level: no win
        ([5.0, 9.0], [5.0, 9.0], "| **no**; not separated: both held every level run |"),
    ],
)
def test_scale_verdict_says_when_the_levels_did_not_separate_the_contenders(
    ours_p99: list[float], theirs_p99: list[float], verdict: str
) -> None:
    from bench.scale import LevelResult, ScaleResult
    from bench.turn_wall import PIPECAT

    def result(name: str, p99s: list[float]) -> ScaleResult:
        levels = tuple(
            LevelResult(n, 10, 1.0, p99, p99, 0.0, 30.0, 0.5) for n, p99 in zip((5, 20), p99s, strict=True)
        )
        return ScaleResult(name, 30, levels, 50.0)

    report = Report(QUICK, "test machine", (0.0, 0.0, 0.0), None)
    report.scale = [result(OURS, ours_p99), result(PIPECAT, theirs_p99)]
    row = next(line for line in render(report).splitlines() if line.startswith("| 4a |"))
    assert row.endswith(verdict)


@pytest.mark.skipif(pipecat_available() is not None, reason=f"{pipecat_available()} (not in [dev])")
def test_pipecat_voice_call_reaches_the_phone(server: ServerProcess) -> None:
    from bench.pipecat_harness import quiet_pipecat_logs
    from bench.pipecat_voice import measure_pipecat_voice

    quiet_pipecat_logs()
    row = measure_pipecat_voice(server, reps=1)  # raises unless a media frame reached the fake phone
    assert all(finite(s) for s in (row.total_ms, row.framework_ms, *row.stage_ms.values()))


def test_a_session_that_said_one_moment_fails_its_level() -> None:
    from bench.scale import LevelResult

    words = token_words(8)
    sent = {i: float(i) for i in range(10)}
    # The turn's own "One moment." (its stream took over a second to open) is not timed as a chunk...
    log = [(0.5, "One moment. "), (8.001, "".join(words))]
    assert chunk_latencies(words, log, sent) == pytest.approx([1.0])
    # ...but the level that made a caller hear it misses the target, however good its p99.
    assert LevelResult(5, 5, 1.0, 2.0, 3.0, 0.0, 30.0, 0.1).ok
    assert not LevelResult(5, 5, 1.0, 2.0, 3.0, 0.0, 30.0, 0.1, late_opens=1).ok


def test_render_says_why_livekit_was_skipped() -> None:
    report = Report(QUICK, "test machine", (0.0, 0.0, 0.0), "not installed")
    report.livekit_skipped = "livekit-agents/livekit-plugins-openai are not installed"
    assert (
        "| 6 | LiveKit Agents 1.8 | — | not run: livekit-agents/livekit-plugins-openai are not installed |"
        in (render(report))
    )


def test_scale_rows_give_the_previous_method_and_the_machines_other_load() -> None:
    from bench.run import OURS_PREVIOUS, OURS_UVLOOP
    from bench.scale import LevelResult, ScaleResult

    def result(name: str, fail_at_20: bool, method: str) -> ScaleResult:
        levels = tuple(
            LevelResult(n, 10, 1.0, 2.0, 3.0, 0.0, 30.0, 0.5, late_opens=int(fail_at_20 and n == 20))
            for n in (5, 20)
        )
        shared = (replace(levels[1], others_cores=1.25, bench_cores=0.5, load1=3.0),)
        return ScaleResult(name, 30, levels[:1] + shared, 50.0, method=method)

    report = Report(QUICK, "test machine", (0.0, 0.0, 0.0), "not installed")
    report.scale = [
        result(OURS, False, RAMP.label),
        result(OURS_UVLOOP, False, RAMP.label),
        result(OURS_PREVIOUS, True, PREVIOUS.label),
    ]
    lines = render(report).splitlines()
    ramp = next(line for line in lines if line.startswith("| 4a |"))
    previous = next(line for line in lines if line.startswith("| 4a' |"))
    assert "**20**" in ramp and "failed at" not in ramp
    assert "| 5 (" in previous and "failed at 20 (1 late opens)" in previous
    assert "other processes 1.25 of 2, load 3.0" in previous and "ramp: 20" in previous
    assert f"- {OURS_PREVIOUS}: {PREVIOUS.label}" in lines
