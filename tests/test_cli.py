"""The command lines as a user meets them: fast help, clear one-line errors, a quiet Ctrl-C, and replay of
a user's own bot and cassette from the current folder."""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import voiceagent
from tests.user_project import write_user_project
from voiceagent.commands import cassettes

ROOT = Path(__file__).resolve().parents[1]
WEATHER = ROOT / "examples" / "cassettes" / "weather.jsonl"
LIMIT = 60.0


def offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SMALLEST_API_KEY"}
    env.update(extra)
    return env


def voiceagent_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voiceagent.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, env=offline_env(), check=False,
    )  # fmt: skip


# ---- start-up ------------------------------------------------------------------------------------


def test_help_answers_without_importing_the_openai_sdk(tmp_path: Path) -> None:
    probe = (
        "import sys, contextlib, io\n"
        "from voiceagent.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "assert 'demo' in out.getvalue() and 'replay' in out.getvalue(), out.getvalue()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('openai', 'httpx', 'pydantic')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_lazy_package_exports_are_exactly_all() -> None:
    exports = voiceagent._EXPORTS  # type: ignore[attr-defined]
    assert sorted(exports) == sorted(voiceagent.__all__)
    for name in voiceagent.__all__:  # each resolves to the object its module defines
        assert getattr(voiceagent, name) is getattr(importlib.import_module(exports[name]), name)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        voiceagent.Nope  # type: ignore[attr-defined]  # noqa: B018


# ---- replay: what it accepts ---------------------------------------------------------------------


def test_replay_says_when_a_file_is_not_a_cassette(tmp_path: Path) -> None:
    (tmp_path / "speech.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\xff\xfe")
    (tmp_path / "notes.json").write_text('{"hello": "world"}\n')
    (tmp_path / "words.txt").write_text("just words\n")
    (tmp_path / "empty.jsonl").write_text("")
    expected = {
        "speech.wav": "it is not text",
        "notes.json": "its first line is not a cassette header",
        "words.txt": "its first line is not JSON",
        "empty.jsonl": "it is empty",
    }
    for name, why in expected.items():
        done = voiceagent_cli("replay", name, cwd=tmp_path)
        assert done.returncode == 2, done.stdout
        assert done.stderr.startswith(f"error: {name} is not a voiceagent cassette: {why}"), done.stderr
        assert done.stderr.count("\n") == 1
    missing = voiceagent_cli("replay", "nothing-here", cwd=tmp_path)
    assert missing.returncode == 2
    assert "cannot read cassette nothing-here" in missing.stderr
    assert "shipped cassettes: barge_in, parallel_tools, weather" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_the_shipped_cassettes_replay_by_name_from_any_folder(tmp_path: Path) -> None:
    assert cassettes.shipped_names() == ["barge_in", "parallel_tools", "weather"]
    for name in cassettes.shipped_names():
        done = voiceagent_cli("replay", name, "--speed", "0", "--no-chunks", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "replayed with voiceagent.examples.weather_bot:build_agent" in done.stdout
    assert voiceagent_cli("replay", "weather", "--recorded", cwd=tmp_path).returncode == 0


def test_replay_runs_a_users_own_bot_and_cassette_from_the_current_folder(tmp_path: Path) -> None:
    project = tmp_path / "shop"
    write_user_project(project, sys.executable, cassettes.shipped("barge_in"))
    done = voiceagent_cli("replay", "tests/shop.jsonl", "--speed", "0", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replayed with shopbot:build_agent" in done.stdout
    assert "tool start  opening_hours" in done.stdout

    # The factory on the command line wins over the cassette's; a file path works from anywhere.
    (project / "other.py").write_text("from shopbot import build_agent as make\n")
    by_name = voiceagent_cli(
        "replay", "tests/shop.jsonl", "--speed", "0", "--agent", "other:make", cwd=project
    )
    assert by_name.returncode == 0 and "replayed with other:make" in by_name.stdout
    cassette, factory = str(project / "tests" / "shop.jsonl"), f"{project}/shopbot.py:build_agent"
    by_file = voiceagent_cli("replay", cassette, "--speed", "0", "--agent", factory, cwd=tmp_path)
    assert by_file.returncode == 0, by_file.stderr

    # Elsewhere, the cassette's module is not importable: said in one line.
    elsewhere = voiceagent_cli("replay", str(project / "tests/shop.jsonl"), cwd=tmp_path)
    assert elsewhere.returncode == 2
    assert "cannot load the agent factory 'shopbot:build_agent'" in elsewhere.stderr


# ---- errors a user makes -------------------------------------------------------------------------


@pytest.mark.parametrize(("module", "extra"), [("redis", "redis"), ("matplotlib", "timeline")])
def test_a_missing_extra_is_named(tmp_path: Path, module: str, extra: str) -> None:
    probe = (
        "import importlib, sys\n"
        "from voiceagent.commands.errors import run_cleanly\n"
        f"sys.modules[{module!r}] = None  # this interpreter cannot import it, as if not installed\n"
        f"sys.exit(run_cleanly(lambda: importlib.import_module({module + '.submodule'!r}) and 0))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert done.stderr == f"error: this needs {module}: pip install 'voiceagent[{extra}]'\n"


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "voiceagent.examples.web_bot", "--port", str(port)],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
            env=offline_env(SMALLEST_API_KEY="sk_not_used"),
        )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == (
        f"error: 127.0.0.1:{port} is already in use (another server running there? pick another --port)\n"
    )


async def interrupt_once_printed(args: list[str], marker: str, cwd: Path, env: dict[str, str]) -> str:
    """Start the command, wait until it printed ``marker`` (it is running), Ctrl-C it; its stderr."""
    async with await anyio.open_process(args, cwd=cwd, env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        seen = b""
        with anyio.fail_after(LIMIT):
            while marker.encode() not in seen:
                seen += await proc.stdout.receive()
            proc.send_signal(signal.SIGINT)
            stderr = b"".join([chunk async for chunk in proc.stderr])
            assert await proc.wait() == 130, stderr
    return stderr.decode()


@pytest.mark.anyio
async def test_ctrl_c_exits_quietly(tmp_path: Path) -> None:
    # A replay at a hundredth of the recorded pace: it is surely still running when interrupted.
    replay = [sys.executable, "-m", "voiceagent.cli", "replay", "weather", "--speed", "0.01"]
    assert await interrupt_once_printed(replay, "replayed with", tmp_path, offline_env()) == "interrupted\n"
    bot = [sys.executable, "-m", "voiceagent.examples.web_bot", "--port", "0"]
    env = offline_env(SMALLEST_API_KEY="sk_not_used")
    assert await interrupt_once_printed(bot, "press Start", tmp_path, env) == "interrupted\n"


def test_the_bots_take_base_url() -> None:
    from voiceagent.examples.calls import bot_main

    seen: list[str | None] = []

    async def serve(args: object) -> None:
        seen.append(getattr(args, "base_url", "missing"))

    async def selftest() -> int:
        return 0

    for argv, expected in (([], None), (["--base-url", "http://127.0.0.1:9/v1"], "http://127.0.0.1:9/v1")):
        assert bot_main("bot", argv, serve=serve, selftest=selftest) == 0
        assert seen.pop() == expected


def test_a_shipped_cassette_is_package_data() -> None:
    path = cassettes.shipped("weather")
    assert path.is_file() and path.parent.name == "cassettes"
    assert json.loads(path.read_text().splitlines()[0])["type"] == "header"
