"""`voiceagent demo` offline: the shipped recording, the real pipeline, espeak-ng into a playable WAV."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from voiceagent.audio import read_wav, rms

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k != "SMALLEST_API_KEY"
    }  # offline, whatever the machine has
    return subprocess.run(
        [sys.executable, "-m", "voiceagent.cli", "demo", "--out", str(tmp_path / "demo.wav"), *args],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip


def test_demo_runs_a_real_turn_and_writes_speech(tmp_path: Path) -> None:
    done = run_demo(tmp_path, "--speed", "0")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "caller: What's the weather in Paris right now?" in out
    assert "bot:    Let me check the weather for you. It's 18 degrees and sunny in Paris" in out
    assert "tool start  get_weather" in out and "cached 160" in out
    pcm, rate = read_wav(tmp_path / "demo.wav")
    assert rate == 16000
    assert len(pcm) / 2 / rate > 3.0  # seconds of speech, not a stub
    assert rms(pcm) > 500


def test_demo_reports_a_broken_cassette_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "header", "version": 99}\n')
    done = run_demo(tmp_path, "--speed", "0", "--cassette", str(bad))
    assert done.returncode == 1
    assert "error:" in done.stderr and "bad.jsonl" in done.stderr
