"""A ``voiceagent serve`` process for tests: its own process group, its JSON log read from a file,
and always killed (the whole group) at the end."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

TOKEN = "serve-test-auth-token"
ROOT = Path(__file__).resolve().parents[1]


class ServeProcess:
    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.process = process
        self.log_path = log_path
        self.port = 0

    def records(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        out = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            out.append(record if isinstance(record, dict) else {"raw": line})
        return out

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], count: int = 1
    ) -> list[dict[str, Any]]:
        while True:
            found = [r for r in self.records() if predicate(r)]
            if len(found) >= count:
                return found
            if self.process.poll() is not None:
                raise AssertionError(
                    f"serve exited ({self.process.returncode}):\n{self.log_path.read_text()}"
                )
            await anyio.sleep(0.05)

    async def exited(self) -> int:
        while self.process.poll() is None:  # noqa: ASYNC110 (another process: polled)
            await anyio.sleep(0.05)
        return self.process.returncode

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str) -> float:
        """The value of one sample line, e.g. ``voiceagent_calls_total{transport="twilio"}`` (0 if absent)."""
        _, text = self.get("/metrics")
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/media"


@contextmanager
def serve_process(tmp_path: Path, *args: str) -> Iterator[ServeProcess]:
    log_path = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "SMALLEST_API_KEY"}
    env["TWILIO_AUTH_TOKEN"] = TOKEN
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "voiceagent.cli", "serve", "voiceagent.examples.weather_bot:build_agent",
             "--port", "0", "--replay", "weather", *args],
            stdout=log, stderr=log, cwd=tmp_path, env=env, start_new_session=True,
        )  # fmt: skip
    serve = ServeProcess(process, log_path)
    try:
        yield serve
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        # The workers run in their own sessions: none may survive the test.
        for record in serve.records():
            pid = record.get("pid")
            if isinstance(pid, int) and record.get("event") == "ready":
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


async def started(serve: ServeProcess, workers: int = 1) -> ServeProcess:
    listening = await serve.wait_for(lambda r: r.get("event") == "listening")
    serve.port = int(listening[0]["port"])
    await serve.wait_for(lambda r: r.get("event") == "worker_up", workers)
    return serve


def worker_pids(serve: ServeProcess) -> list[int]:
    """The pid of every worker started so far, in start order."""
    ups = [r for r in serve.records() if r.get("event") == "worker_up"]
    return [int(m.group(1)) for r in ups if (m := re.search(r"\(pid (\d+)\)", str(r.get("msg"))))]
