"""Timelines (text, HTML, PNG) and the ``voiceagent replay`` command."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from voiceagent.cli import main
from voiceagent.events import SpeechQueued, TurnEvent, Usage
from voiceagent.replay.cassette import Cassette
from voiceagent.replay.session import replay_session
from voiceagent.replay.timeline import SpeechMark, Timeline
from voiceagent.results import RoundRecord, TurnResult
from voiceagent.testing.pytest_plugin import ReplayFactory
from voiceagent.testing.tone_sink import ToneSink

ROOT = Path(__file__).resolve().parents[1]
CASSETTES = ROOT / "examples" / "cassettes"
WEATHER = CASSETTES / "weather.jsonl"


def test_timeline_from_a_cassette_has_rounds_chunks_tools_usage_and_request_ids() -> None:
    cassette = Cassette.load(WEATHER)
    [turn] = Timeline.from_cassette(cassette).turns
    assert [r.request_id for r in turn.rounds] == [e.request_id for e in cassette.exchanges]
    assert [r.usage.cached_tokens for r in turn.rounds if r.usage] == [0, 160]
    assert len(turn.rounds[0].chunks) == len(cassette.exchanges[0].chunks)
    [tool] = turn.tools
    assert tool.name == "get_weather" and tool.ready_at <= tool.started_at <= tool.finished_at
    assert turn.rounds[0].started <= tool.ready_at <= turn.rounds[0].finished  # started while streaming
    assert turn.time_to_first_token is not None and turn.time_to_first_token > 0.2  # Electron-like ~250 ms
    text = Timeline.from_cassette(cassette).format_text()
    assert "content 'Let'" in text
    assert "tool ready  get_weather" in text and "tool finish get_weather" in text
    # Each round's own usage line, numbers in their places (not just "cached 160" somewhere).
    assert "usage prompt 163 (cached 0) + completion 11" in text
    assert "usage prompt 246 (cached 160) + completion 15" in text
    assert (
        text.index("round 1:") < text.index("prompt 163") < text.index("round 2:") < text.index("prompt 246")
    )
    assert cassette.exchanges[1].request_id in text


@pytest.mark.anyio
async def test_timeline_from_a_result_and_its_events(replay: ReplayFactory) -> None:
    server = await replay(WEATHER, speed=0)
    weather_bot = _weather_bot()
    events: list[TurnEvent] = []
    agent = weather_bot.build_agent(server.client(), ToneSink())
    result = await agent.respond("What's the weather in Paris right now?", on_event=events.append)
    timeline = Timeline.from_result(result, events)
    [turn] = timeline.turns
    assert [r.request_id for r in turn.rounds] == list(result.request_ids)
    assert turn.speech[0].text == "Let me check the weather for you."
    text = timeline.format_text()
    assert "speak  'Let me check the weather for you.'" in text
    assert "r1 first chunk" in text  # no chunk detail in a TurnResult: one line per round


def test_html_is_self_contained_and_escaped() -> None:
    page = Timeline.from_cassette(Cassette.load(WEATHER)).to_html(title="<weather>")
    assert page.startswith("<!doctype html>") and "<svg" in page and "&lt;weather&gt;" in page
    assert "get_weather" in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")


def test_png_needs_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    timeline = Timeline.from_cassette(Cassette.load(WEATHER))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as on a machine without the [timeline] extra
    with pytest.raises(RuntimeError, match="pip install 'voiceagent\\[timeline\\]'"):
        timeline.to_png(tmp_path / "t.png")


# The lanes of the weather cassette's one turn, top to bottom, with their colours in timeline._rows.
WEATHER_LANES = [
    ("round 1", (0x4C, 0x78, 0xA8)),
    ("r1 streaming", (0x72, 0xB7, 0xB2)),
    ("round 2", (0x4C, 0x78, 0xA8)),
    ("r2 streaming", (0x72, 0xB7, 0xB2)),
    ("speech queued", (0x54, 0xA2, 0x4B)),
    ("audio played", (0xB2, 0x79, 0xA2)),
    ("get_weather", (0xF5, 0x85, 0x18)),
]
TOOL_ERROR_SWATCH = (0xE4, 0x57, 0x56)  # only in the legend here: no tool of this cassette fails


def test_png_is_rendered_with_one_lane_per_round_stream_speech_playback_and_tool(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is in [dev]: pip install -e '.[dev]'")
    import matplotlib.image

    out = tmp_path / "t.png"
    Timeline.from_cassette(Cassette.load(WEATHER)).to_png(out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    # figsize (11, 0.45 * lanes + 1.8) inches at 120 dpi (the legend sits below the lanes)
    assert (width, height) == (1320, round((0.45 * len(WEATHER_LANES) + 1.8) * 120))
    pixels = matplotlib.image.imread(str(out))  # decodes the whole file: a truncated PNG fails here
    assert pixels.shape[:2] == (height, width)
    rows = [{tuple(int(c * 255 + 0.5) for c in px[:3]) for px in row[::2]} for row in pixels]
    # The legend shows every colour: look for each lane above it (its first row is the tool-error swatch's).
    legend_top = min(y for y, colours in enumerate(rows) if TOOL_ERROR_SWATCH in colours)
    above = set().union(*rows[:legend_top])
    for name, colour in WEATHER_LANES:
        assert colour in above, f"no {name} lane drawn"


def test_cli_replays_a_cassette_through_the_agent_and_prints_the_timeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html = tmp_path / "w.html"
    assert main(["replay", str(WEATHER), "--speed", "0", "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert "replayed with voiceagent.examples.weather_bot:build_agent" in out
    assert 'Turn 1: "What\'s the weather in Paris right now?"' in out
    assert "tool start  get_weather" in out and "(cached 160)" in out
    # 163 + 246 prompt tokens, 160 of them cached; 11 + 15 generated; every spoken character heard
    assert "cost  tokens fresh 249, cached 160, completion 26; TTS chars synthesized 107, heard 107" in out
    assert "<svg" in html.read_text()


def test_cli_shows_the_barge_in_cut(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(CASSETTES / "barge_in.jsonl"), "--speed", "0", "--no-chunks"]) == 0
    out = capsys.readouterr().out
    assert "INTERRUPTED (barge-in)" in out and "stream over (cancelled)" in out
    assert "Turn 2: 'Actually, what about London?'" in out


def test_cli_raw_and_recorded_modes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(WEATHER), "--raw", "--speed", "0"]) == 0
    raw = capsys.readouterr().out
    assert "the recorded requests (no agent)" in raw and "content 'Let'" in raw
    assert 'Turn 1: "What\'s the weather in Paris right now?"' in raw  # each request under its turn
    assert main(["replay", str(WEATHER), "--recorded"]) == 0
    assert "as recorded" in capsys.readouterr().out


def test_cli_fails_on_a_mismatch_and_on_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = WEATHER.read_text().splitlines()
    edited = []
    for line in lines:
        record = json.loads(line)
        if record["type"] == "request" and record["n"] == 1:
            record["body"]["messages"][0]["content"] = "You are a pirate."
        edited.append(json.dumps(record))
    changed = tmp_path / "changed.jsonl"
    changed.write_text("\n".join(edited) + "\n")
    assert main(["replay", str(changed), "--speed", "0"]) == 1
    err = capsys.readouterr().err
    assert "REPLAY MISMATCH" in err and '-      "content": "You are a pirate."' in err

    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n{oops\n")
    assert main(["replay", str(bad)]) == 2
    assert "line 2: not valid JSON" in capsys.readouterr().err


def _weather_bot() -> Any:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("examples.weather_bot")


# ---- what the caller heard (issue 18): played lane, barge-in marker, tools under the filler, legend ----


def test_the_played_lane_shows_the_tool_running_under_the_filler_and_the_barge_in_cut() -> None:
    first, second = Timeline.from_cassette(Cassette.load(CASSETTES / "barge_in.jsonl")).turns
    filler, answer = first.played
    [tool] = first.tools
    assert filler.text == "Let me check the weather for you." and not filler.cut
    assert filler.start <= tool.started_at <= tool.finished_at <= filler.end  # ran while the filler played
    assert first.barge_in is not None and answer.cut and answer.end == first.barge_in
    assert answer.start >= filler.end  # one playhead: the answer starts after the filler has played
    assert second.barge_in is None and not any(p.cut for p in second.played)
    text = Timeline.from_cassette(Cassette.load(CASSETTES / "barge_in.jsonl")).format_text(chunks=False)
    assert "BARGE-IN" in text and "(cut)" in text and "played 'Let me check the weather for you.'" in text


def test_the_playhead_lays_audio_end_to_end_and_stops_at_the_cut() -> None:
    from voiceagent.replay.timeline import PlayedSpan, _playhead

    spoken = [(0.0, 1.0, "a"), (0.5, 1.0, "b"), (3.0, None, "no audio"), (3.0, 1.0, "c"), (5.0, 1.0, "d")]
    assert _playhead(spoken, None) == (
        PlayedSpan(0.0, 1.0, "a"),
        PlayedSpan(1.0, 2.0, "b"),  # queued while "a" played: it waits for the playhead
        PlayedSpan(3.0, 4.0, "c"),
        PlayedSpan(5.0, 6.0, "d"),
    )
    assert _playhead(spoken, 3.5) == (
        PlayedSpan(0.0, 1.0, "a"),
        PlayedSpan(1.0, 2.0, "b"),
        PlayedSpan(3.0, 3.5, "c", cut=True),
    )


def test_the_html_has_the_played_lane_a_barge_in_line_and_a_legend() -> None:
    page = Timeline.from_cassette(Cassette.load(CASSETTES / "barge_in.jsonl")).to_html()
    assert "T1 audio played" in page and "barge-in at" in page
    for name in ("speech queued", "audio played (heard)", "tool", "barge-in"):
        assert f">{name}</text>" in page


def test_png_draws_the_barge_in_cassette(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "b.png"
    Timeline.from_cassette(Cassette.load(CASSETTES / "barge_in.jsonl")).to_png(out)
    assert out.read_bytes().startswith(b"\x89PNG")


@pytest.mark.anyio
async def test_a_result_and_its_recording_give_the_same_timeline(replay: ReplayFactory) -> None:
    """One source: a result's timeline is built from the records a recorder writes for it."""
    server = await replay(CASSETTES / "barge_in.jsonl", speed=0)
    run = await replay_session(server, _weather_bot().build_agent)
    live = Timeline.from_results(run.results, run.events).turns
    recorded = Timeline.from_cassette(run.recording).turns
    assert len(live) == len(recorded) == 2
    for a, b in zip(live, recorded, strict=True):
        assert a.tools == b.tools and a.tools
        assert [(r.round, r.request_id, r.finish_reason, r.usage, r.started) for r in a.rounds] == [
            (r.round, r.request_id, r.finish_reason, r.usage, r.started) for r in b.rounds
        ]
        assert [s.text for s in a.speech] == [s.text for s in b.speech]
        assert (a.user_text, a.heard_text, a.interrupted, a.total) == (
            b.user_text,
            b.heard_text,
            b.interrupted,
            b.total,
        )
    assert live[0].barge_in is not None and recorded[0].barge_in is not None


def test_a_results_filler_is_marked_in_its_timeline() -> None:
    rounds = (RoundRecord(1, "r1", 1, Usage(1, 1), "stop", "", (), 0.0, 0.1, 0.1, 0.2),)
    result = TurnResult("u", "One moment.", "One moment.", rounds, (), 0.1, 0.2, 0.3)
    events = [SpeechQueued(1, "One moment.", 0.1, filler=True)]
    [turn] = Timeline.from_result(result, events).turns
    assert turn.speech == (SpeechMark(0.1, "One moment.", True),)
    assert "(filler)" in Timeline.from_result(result, events).format_text()
