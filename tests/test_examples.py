"""The phone and web example bots' self-tests: one offline call each, run as a user would run them (from
an empty folder: the bots ship in the package as voiceagent.examples)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from voiceagent.adapters.web.chromium import find_chromium
from voiceagent.examples.phone_bot import PROVIDERS
from voiceagent.telephony import AudioFormat, CallControl, StreamStart

ANSWER = "It's 18 degrees and sunny in Paris right now"
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def selftest(module: str, folder: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SMALLEST_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", module, "--selftest", *args],
        cwd=folder, capture_output=True, text=True, timeout=150, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return done.stdout


@needs_espeak
def test_twilio_phone_bot_selftest_answers_the_caller(tmp_path: Path) -> None:
    out = selftest("voiceagent.examples.twilio_phone_bot", tmp_path)
    assert "caller asked: What's the weather in Paris right now?" in out
    assert ANSWER in out
    seconds = float(out.split("audio played to the caller: ")[1].split(" s")[0])
    assert seconds > 2.0


@needs_espeak
@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_one_phone_bot_answers_the_caller_over_each_provider(tmp_path: Path, provider: str) -> None:
    out = selftest("voiceagent.examples.phone_bot", tmp_path, "--provider", provider)
    assert f"[{provider}] caller asked: What's the weather in Paris right now?" in out
    assert f"[{provider}] caller heard: Let me check the weather for you. {ANSWER}" in out
    seconds = float(out.split(f"[{provider}] audio played to the caller: ")[1].split(" s")[0])
    assert seconds > 2.0  # decoded from what the provider's fake played, at its outbound rate
    # Then the caller says goodbye; the model calls end_call; the goodbye is heard; the bot hangs up.
    assert f"[{provider}] caller said: That's all, thank you. Bye!" in out
    assert f"[{provider}] bot answered: You're welcome! Enjoy the sunshine." in out
    hung_up = "the bot hung up (end_call, close code 1000) once the caller had heard: "
    assert f"[{provider}] {hung_up}Thank you for calling. Goodbye." in out
    assert [line.split("]")[0] for line in out.splitlines()] == [f"[{provider}"] * 6  # that provider only


def test_the_phone_bot_table_has_the_providers_and_serving_needs_one(tmp_path: Path) -> None:
    assert set(PROVIDERS) == {"twilio", "telnyx", "plivo"}
    for name, provider in PROVIDERS.items():
        assert provider.name == name
        assert "wss://bot.example.com/media" in provider.answer("wss://bot.example.com/media")
    env = {k: v for k, v in os.environ.items() if k != "SMALLEST_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "voiceagent.examples.phone_bot", "--port", "0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert done.returncode != 0 and "--provider is required to serve" in done.stderr


# The credentials each provider's call control reads; without them the stream hangs up by closing itself.
CONTROL_ENV = {
    "twilio": {"TWILIO_ACCOUNT_SID": "AC00000000000000000000000000000001", "TWILIO_AUTH_TOKEN": "t"},
    "telnyx": {"TELNYX_API_KEY": "KEY-test"},
    "plivo": {"PLIVO_AUTH_TOKEN": "plivo-token", "PLIVO_AUTH_ID": "MAFAKEAUTHID00000001"},
}


@pytest.mark.parametrize("provider", sorted(CONTROL_ENV))
def test_the_phone_bot_takes_each_providers_call_control_from_the_environment(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for names in CONTROL_ENV.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)
    assert PROVIDERS[provider].control() is None
    for name, value in CONTROL_ENV[provider].items():
        monkeypatch.setenv(name, value)
    factory = PROVIDERS[provider].control()
    assert factory is not None
    pcmu = AudioFormat("pcmu", 8000)
    call_id = "CA00000000000000000000000000000001"  # a Twilio CallSid; any id for the others
    control = factory(StreamStart("stream-1", call_id, pcmu, pcmu, account_id="MAFAKEAUTHID00000001"))
    assert isinstance(control, CallControl)
    assert type(control).__module__.startswith(f"voiceagent.adapters.{provider}")


@needs_espeak
@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_web_bot_selftest_answers_in_the_browser(tmp_path: Path) -> None:
    out = selftest("voiceagent.examples.web_bot", tmp_path)
    assert ANSWER in out
    seconds = float(out.split("confirmed by its mark echoes): ")[1].split(" s")[0])
    assert seconds > 2.0
