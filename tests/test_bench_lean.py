"""The lean-path bench rows (#17): the first-text harness runs end to end, and the report prints the
read-path decision and the first-text verdict. Shapes only: no timing assertions."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's bench/ package

from bench.first_text import CLAUSES, STREAMING, FirstTextResult, first_chunk_index, measure_first_text
from bench.overhead import CONTENDERS, STREAM, STREAM_AIO, TURN, TURN_AIO, OverheadResult
from bench.run import QUICK, Report, render
from bench.stats import summarize


def test_first_text_harness_measures_both_ways() -> None:
    assert first_chunk_index() > 3  # the first speakable chunk is several words long
    result = measure_first_text(reps=1)
    assert set(result.first_text_ms) == {STREAMING, CLAUSES}
    assert all(math.isfinite(s.median) and s.count == 1 for s in result.first_text_ms.values())
    assert result.clause_end_ms.count == 2


def test_report_prints_the_read_path_decision_and_the_first_text_verdict() -> None:
    one = summarize([1.0])
    ratios = dict.fromkeys((*CONTENDERS, STREAM_AIO, TURN_AIO), one)
    ratios |= {TURN: summarize([1.6]), STREAM: summarize([1.3])}
    ratios |= {TURN_AIO: summarize([2.0]), STREAM_AIO: summarize([1.7])}
    paced = OverheadResult("paced", 0.004, 300, 1, dict.fromkeys(ratios, one), ratios)
    report = Report(QUICK, "test machine", (0.0, 0.0, 0.0), "not installed")
    report.overhead = [paced]
    report.first_text = FirstTextResult(
        1, {STREAMING: summarize([1.0]), CLAUSES: summarize([180.0])}, summarize([179.0])
    )
    text = render(report)
    row = next(line for line in text.splitlines() if line.startswith("| 1r |"))
    assert "h1: full turn 1.60x" in row and "aiohttp: full turn 2.00x" in row
    assert row.endswith("| gap large: h1 stays the default |")
    first = next(line for line in text.splitlines() if line.startswith("| 5 |"))
    assert first.endswith("| yes |")
