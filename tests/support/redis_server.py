"""A throwaway redis-server on 127.0.0.1 for tests: no persistence, stopped and gone afterwards.

``RedisServer`` can also be stopped, started again on the same port (a restart loses every key, as a
Redis without persistence does) and paused with SIGSTOP (a hung Redis: connections are accepted by the
kernel, nothing is answered), so tests can put real faults under a client.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

REDIS_SERVER = "redis-server"


def redis_server_path() -> str | None:
    return shutil.which(REDIS_SERVER)


def _free_port() -> int:
    # redis-server cannot listen on port 0, so borrow a free port from the kernel first.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _tail(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-2000:]
    except OSError:
        return "(no log)"


class RedisServer:
    """``with RedisServer() as server:`` runs redis-server on ``server.url`` until the block exits."""

    def __init__(self, *, startup_timeout: float = 20.0) -> None:
        path = redis_server_path()
        if path is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self._path = path
        self.startup_timeout = startup_timeout
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> RedisServer:
        self._workdir = tempfile.TemporaryDirectory(prefix="voiceagent-redis-")
        try:
            for _attempt in range(3):  # the borrowed port can be taken by someone else before redis binds it
                self.port = _free_port()
                if self._spawn():
                    return self
            raise RuntimeError(f"redis-server did not start: {_tail(self._logfile)}")
        except BaseException:
            self._workdir.cleanup()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.stop()
        finally:
            if self._workdir is not None:
                self._workdir.cleanup()

    @property
    def _logfile(self) -> str:
        assert self._workdir is not None
        return os.path.join(self._workdir.name, "redis.log")

    def _spawn(self) -> bool:
        assert self._workdir is not None
        # A log file, not a pipe: an unread pipe would fill and stall the server.
        proc = subprocess.Popen(
            [
                self._path,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._workdir.name,
                "--logfile",
                self._logfile,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self.startup_timeout
        while proc.poll() is None and not _pings(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None and _pings(self.port):
            self._proc = proc
            return True
        proc.kill()
        proc.wait()
        return False

    def start(self) -> None:
        """Start again on the same port after ``stop()``: an empty Redis, as after a restart."""
        if self._proc is not None:
            raise RuntimeError("redis-server is already running")
        if not self._spawn():
            raise RuntimeError(
                f"redis-server did not start again on port {self.port}: {_tail(self._logfile)}"
            )

    def stop(self) -> None:
        """Stop the server (a paused one too); its keys are gone. Clients then get connection refused."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: a hung Redis. Connects still succeed (the kernel's backlog), no command is answered."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)


@contextmanager
def running_redis_server(startup_timeout: float = 20.0) -> Iterator[str]:
    """Start redis-server on a free loopback port, yield its URL, stop it afterwards."""
    with RedisServer(startup_timeout=startup_timeout) as server:
        yield server.url
