"""The bench's OpenAI-compatible server, in its own process so its CPU is never charged to a contender.

``python -m bench.server`` serves ``FakeOpenAIServer`` on 127.0.0.1 with the replies of
``bench.scenarios``, prints ``PORT <n>``, then answers commands on stdin, one per line:
``log`` prints (one JSON line) every chunk sent since the last ``log``: ``[tag, chunk_index, sent_at]``;
``quit`` stops it. ``sent_at`` is ``time.perf_counter()`` just before the chunk is written to the socket
(a stamp taken after the write can come late: the woken client often takes the CPU first).
On Linux that clock is CLOCK_MONOTONIC, which is system-wide, so it compares with the client's clock.

``--fast`` (``ServerProcess(fast=True)``, the scale section's server): ``bench.lean_server`` (the same
bytes from an asyncio ``Protocol``, at a fraction of the CPU; it accepts every pending connection per
wake-up) on uvloop when installed.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import anyio
import anyio.to_thread

from bench.lean_server import LeanServer
from bench.scenarios import parse_model, reply_for
from voiceagent.runtime import server_loop_options
from voiceagent.testing.openai_server import FakeOpenAIServer, Reply

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0


def shared_clock() -> bool:
    """perf_counter is the system-wide monotonic clock, so send times from the server process and event
    times in the client process are on one time line."""
    info = time.get_clock_info("perf_counter")
    return sys.platform.startswith("linux") and "CLOCK_MONOTONIC" in info.implementation


def _respond(body: dict[str, Any]) -> Reply:
    return reply_for(body)


async def _serve(fast: bool = False) -> None:
    server: FakeOpenAIServer | LeanServer
    async with LeanServer(_respond) if fast else FakeOpenAIServer() as server:
        if isinstance(server, FakeOpenAIServer):
            server.responder = _respond
        print(f"PORT {server.port}", flush=True)
        reported = requests_reported = 0
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            command = line.strip()
            if command in ("quit", ""):
                return
            if command == "log":
                log = server.send_started_log[reported:]
                reported += len(log)
                tags = [parse_model(str(r.body.get("model", ""))).tag for r in server.requests]
                entries = [[tags[index], chunk, at] for index, chunk, at in log]
                print(json.dumps(entries), flush=True)
            elif command == "requests":  # when each request since the last ask arrived, by tag
                fresh = server.requests[requests_reported:]
                requests_reported += len(fresh)
                arrivals = [[parse_model(str(r.body.get("model", ""))).tag, r.received_at] for r in fresh]
                print(json.dumps(arrivals), flush=True)
            else:
                print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)


class ServerProcess:
    """``with ServerProcess() as server:`` a bench server on ``server.base_url`` in a child process."""

    def __init__(self, *, fast: bool = False) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.fast = fast  # bench.lean_server on uvloop (when installed): see the module's doc

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ServerProcess:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.server", *(["--fast"] if self.fast else [])],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self._readline(START_TIMEOUT)
        if not line.startswith("PORT "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"bench server did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def send_log(self) -> dict[str, dict[int, float]]:
        """Send times of every chunk since the last call: ``{tag: {chunk_index: sent_at}}``."""
        proc = self._running()
        assert proc.stdin is not None
        proc.stdin.write("log\n")
        proc.stdin.flush()
        entries = json.loads(self._readline(START_TIMEOUT))
        by_tag: dict[str, dict[int, float]] = {}
        for tag, chunk, at in entries:
            by_tag.setdefault(tag, {})[int(chunk)] = float(at)
        return by_tag

    @property
    def pid(self) -> int:
        return self._running().pid

    def request_log(self) -> dict[str, list[float]]:
        """When each request since the last call arrived (its body read): ``{tag: [received_at, ...]}``."""
        proc = self._running()
        assert proc.stdin is not None
        proc.stdin.write("requests\n")
        proc.stdin.flush()
        by_tag: dict[str, list[float]] = {}
        for tag, at in json.loads(self._readline(START_TIMEOUT)):
            by_tag.setdefault(tag, []).append(float(at))
        return by_tag

    def _running(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("the bench server is not running")
        return self._proc

    def _readline(self, timeout: float) -> str:
        proc = self._running()
        stdout: IO[str] | None = proc.stdout
        assert stdout is not None
        # A bounded wait: a wedged server must not hang the bench.
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise RuntimeError(f"bench server gave no answer within {timeout} s")
        return stdout.readline().strip()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None and proc.stdin is not None:
                proc.stdin.write("quit\n")
                proc.stdin.flush()
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    if "--fast" in sys.argv[1:]:
        anyio.run(_serve, True, backend_options=server_loop_options())
    else:
        anyio.run(_serve)
