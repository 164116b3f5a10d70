"""``python -m voiceagent.adapters.web`` as a user runs it: a real process, real signals, a real port."""

from __future__ import annotations

import signal
import socket
import sys

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

pytestmark = pytest.mark.anyio

COMMAND = [sys.executable, "-m", "voiceagent.adapters.web"]


async def _first_line(process: Process) -> str:
    assert process.stdout is not None
    text = ""
    async for piece in TextReceiveStream(process.stdout):
        text += piece
        if "\n" in text:
            break
    return text.partition("\n")[0]


async def _drain(stream: anyio.abc.ByteReceiveStream | None) -> str:
    assert stream is not None
    return "".join([piece async for piece in TextReceiveStream(stream)])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_stops_the_server_cleanly(signum: signal.Signals) -> None:
    with anyio.fail_after(60):
        async with await anyio.open_process([*COMMAND, "--port", "0"]) as process:
            try:
                line = await _first_line(process)
                assert line.startswith("open http://127.0.0.1:"), line
                port = int(line.split(":")[2].split("/")[0])
                stream = await anyio.connect_tcp("127.0.0.1", port)  # it is really listening
                await stream.aclose()
                process.send_signal(signum)
                stderr = await _drain(process.stderr)
                code = await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr


async def test_a_port_in_use_is_one_clear_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with anyio.fail_after(60):
            result = await anyio.run_process([*COMMAND, "--port", str(port)], check=False)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert stderr.strip().splitlines() == [
        f"python -m voiceagent.adapters.web: 127.0.0.1:{port} is already in use; pick another --port"
    ]
    assert result.stdout == b""
