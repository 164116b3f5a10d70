"""A throwaway redis-server on 127.0.0.1 for tests: no persistence, stopped and gone afterwards."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def running_redis_server(startup_timeout: float = 20.0) -> Iterator[str]:
    """Start redis-server on a free loopback port, yield its URL, stop it afterwards."""
    path = redis_server_path()
    if path is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="voiceagent-redis-") as workdir:
        # A log file, not a pipe: an unread pipe would fill and stall the server.
        logfile = os.path.join(workdir, "redis.log")
        for _attempt in range(3):  # the borrowed port can be taken by someone else before redis binds it
            port = _free_port()
            proc = subprocess.Popen(
                [
                    path,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    workdir,
                    "--logfile",
                    logfile,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + startup_timeout
            while proc.poll() is None and not _pings(port) and time.monotonic() < deadline:
                time.sleep(0.02)
            if proc.poll() is None and _pings(port):
                break
            proc.kill()
            proc.wait()
        else:
            raise RuntimeError(f"redis-server did not start: {_tail(logfile)}")
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
