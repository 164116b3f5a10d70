"""`voiceagent demo` offline: the shipped recording, the real pipeline, espeak-ng into a playable WAV."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from voiceagent.audio import read_wav, rms
from voiceagent.replay import Cassette, ReplayServer

WEATHER = Path(__file__).resolve().parents[1] / "examples" / "cassettes" / "weather.jsonl"

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k != "SMALLEST_API_KEY"
    }  # offline, whatever the machine has
    return subprocess.run(
        [sys.executable, "-m", "voiceagent.cli", "demo", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip


def test_demo_runs_a_real_turn_and_writes_speech(tmp_path: Path) -> None:
    done = run_demo(tmp_path, "--speed", "0")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "caller: What's the weather in Paris right now?" in out
    assert "bot:    Let me check the weather for you. It's 18 degrees and sunny in Paris" in out
    assert "tool start  get_weather" in out and "cached 160" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.wav"]  # in the folder it ran in
    assert_speech(tmp_path / "demo.wav")


def assert_speech(path: Path) -> None:
    pcm, rate = read_wav(path)
    assert rate == 16000
    assert len(pcm) / 2 / rate > 3.0  # seconds of speech, not a stub
    assert rms(pcm) > 500


def test_demo_talks_to_the_server_given_by_base_url(tmp_path: Path) -> None:
    # Any OpenAI-compatible server: here the recorded session, served from its own thread.
    with ReplayServer(WEATHER, speed=0).in_thread() as server:
        done = run_demo(tmp_path, "--base-url", server.base_url, "--out", "out/live.wav")
        assert done.returncode == 0, done.stderr
        server.assert_complete()  # both rounds were asked of that server, exactly as recorded
    assert f"weather bot, live {server.base_url} + espeak-ng" in done.stdout
    assert "It's 18 degrees and sunny in Paris" in done.stdout
    assert_speech(tmp_path / "out" / "live.wav")


def test_demo_records_the_live_turn_once(tmp_path: Path) -> None:
    with ReplayServer(WEATHER, speed=0).in_thread() as server:
        done = run_demo(tmp_path, "--base-url", server.base_url, "--record", "rec.jsonl")
        assert done.returncode == 0, done.stderr
    recording = Cassette.load(tmp_path / "rec.jsonl")
    assert recording.source_version == 2
    assert [t.turn for t in recording.turns] == [1]  # one summary (it was written twice)
    assert [(t.turn, t.call.name) for t in recording.tools] == [(1, "get_weather")]
    assert {r.turn for r in recording.speech} == {1}


def test_demo_reports_a_broken_cassette_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "header", "version": 99}\n')
    done = run_demo(tmp_path, "--speed", "0", "--cassette", str(bad))
    assert done.returncode == 1
    assert "error:" in done.stderr and "bad.jsonl" in done.stderr
    assert not (tmp_path / "demo.wav").exists()  # nothing half-written


def test_demo_says_when_espeak_is_missing(tmp_path: Path) -> None:
    python_only = tmp_path / "bin"
    python_only.mkdir()
    (python_only / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != "SMALLEST_API_KEY"} | {"PATH": str(python_only)}
    done = subprocess.run(
        [sys.executable, "-m", "voiceagent.cli", "demo", "--speed", "0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "espeak-ng" in done.stderr and "apt-get install espeak-ng" in done.stderr
    assert "Traceback" not in done.stderr
