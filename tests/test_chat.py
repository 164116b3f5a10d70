"""``voiceagent chat`` driven through a real pseudo-terminal, as a person types to it."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

BOT = "voiceagent.examples.weather_bot:build_agent"
QUESTION = "What's the weather in Paris right now?"


def _read_until(fd: int, wanted: bytes, limit: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + limit  # a bound on a hung child, not a timing assertion
    while wanted not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(
                f"no {wanted!r} in the terminal within {limit} s:\n{seen.decode(errors='replace')}"
            )
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_chat_in_a_terminal_shows_the_tool_call_and_the_answer(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "SMALLEST_API_KEY"}
    process = subprocess.Popen(
        [sys.executable, "-m", "voiceagent.cli", "chat", "voiceagent.examples.weather_bot:build_agent",
         "--replay", "weather", "--wav", str(tmp_path / "chat.wav")],
        stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path, env=env, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    try:
        _read_until(master, b"you> ", 60)
        os.write(master, QUESTION.encode() + b"\n")
        shown = _read_until(master, b"you> ", 60).decode(errors="replace")
        os.write(master, b"\n")  # an empty line ends the chat
        rest = _read_until(master, b"wrote", 60).decode(errors="replace")
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        os.close(master)
    lines = shown.replace("\r\n", "\n").splitlines()
    assert QUESTION in lines[0]  # the terminal echoed what was typed
    tool = [line for line in lines if "[tool] get_weather(" in line]
    assert tool and '"city": "Paris"' in tool[0]
    assert any("[tool] get_weather -> Paris: 18 degrees C, sunny." in line for line in lines)
    answer = [line for line in lines if line.startswith("bot> ") and "18 degrees" in line]
    assert answer and "sunny in Paris" in answer[0]
    assert lines.index(tool[0]) < lines.index(answer[0])
    assert any("[turn]" in line and "2 round(s)" in line and "prompt" in line for line in lines)
    assert (tmp_path / "chat.wav").stat().st_size > 1000 and "wrote" in rest


async def _chat_against_a_local_server(tmp_path: Path) -> tuple[str, int]:
    import anyio

    from voiceagent.testing.openai_server import FakeOpenAIServer, text_reply, tool_reply

    async with FakeOpenAIServer() as server:
        server.enqueue(
            tool_reply([("get_weather", {"city": "Tokyo"})], filler="Let me look.", usage=(120, 9, 100)),
            text_reply("Tokyo is clear at 16 degrees.", usage=(150, 8, 120)),
        )

        def drive() -> tuple[str, int]:
            master, slave = pty.openpty()
            env = {k: v for k, v in os.environ.items() if k != "SMALLEST_API_KEY"}
            process = subprocess.Popen(
                [sys.executable, "-m", "voiceagent.cli", "chat", BOT, "--base-url", server.base_url],
                stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path, env=env, start_new_session=True,
            )  # fmt: skip
            os.close(slave)
            try:
                _read_until(master, b"you> ", 60)
                os.write(master, b"And in Tokyo?\n")
                shown = _read_until(master, b"you> ", 60).decode(errors="replace")
                os.write(master, b"\n")
                return shown, process.wait(timeout=30)
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
                os.close(master)

        return await anyio.to_thread.run_sync(drive)


def test_chat_on_a_local_openai_compatible_server(tmp_path: Path) -> None:
    import anyio

    shown, code = anyio.run(_chat_against_a_local_server, tmp_path)
    assert code == 0, shown
    lines = shown.replace("\r\n", "\n").splitlines()
    assert any('[tool] get_weather({"city": "Tokyo"})' in line for line in lines)
    assert any("get_weather -> Tokyo: 16 degrees C, clear." in line for line in lines)  # the real tool ran
    assert any(line.startswith("bot> ") and "Tokyo is clear at 16 degrees." in line for line in lines)
    assert any("tokens 270 prompt (220 cached, 81%) + 17 completion" in line for line in lines)
