"""The ``voiceagent serve`` supervisor: N worker processes behind one port.

It owns the public port and forwards each connection, byte for byte (the Twilio signature and the web
page's tokens pass untouched), to a live worker: ``/media`` to a worker's Twilio server, every other
path to its web server. It answers ``/healthz`` (the supervisor is up), ``/readyz`` (a worker is ready
and no drain is under way) and ``/metrics`` (every worker's metrics, summed) itself, and restarts a
worker that dies. On SIGTERM it stops routing new calls (503; ``/readyz`` turns 503), passes SIGTERM to
every worker, waits for them to drain, and exits.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace

import anyio
from anyio.abc import ByteStream, Process, SocketStream, TaskGroup

from voiceagent.logs import get_logger

from .worker import WorkerConfig

log = get_logger("voiceagent.serve")

MAX_HEAD = 16 * 1024
HEAD_TIMEOUT = 10.0
RESTART_DELAY = 0.5
TWILIO_PATH = "/media"


@dataclass
class _Slot:
    index: int
    process: Process | None = None
    ports: dict[str, int] | None = None
    restarts: int = 0


class Supervisor:
    def __init__(self, config: WorkerConfig, *, workers: int, host: str, port: int) -> None:
        if workers < 1:
            raise ValueError("--workers must be 1 or more")
        self.config = config
        self.host = host
        self.port = port
        self.slots = [_Slot(i) for i in range(workers)]
        self.draining = False
        self.bound_port: int | None = None
        self._rr = itertools.count()
        self._metrics_dir = tempfile.mkdtemp(prefix="voiceagent-metrics-")
        self.ready = anyio.Event()
        self.stopped_by: int | None = None  # the signal that started the drain

    # ---- workers -----------------------------------------------------------------------------------

    async def _keep_worker(self, slot: _Slot) -> None:
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=self._metrics_dir)
        config = replace(self.config, index=slot.index).to_json()
        failures = 0
        while not self.draining:
            process = await anyio.open_process(
                [sys.executable, "-m", "voiceagent.serving.worker", config],
                stdout=subprocess.PIPE,
                stderr=None,  # the worker's JSON log lines go straight to ours
                env=env,
                start_new_session=True,  # our Ctrl-C is not theirs: they drain when told to
            )
            slot.process = process
            came_up = False
            try:
                line = await _read_line(process)
                try:
                    ports = {k: int(v) for k, v in json.loads(line or b"{}").items() if k.endswith("_port")}
                except (ValueError, AttributeError, TypeError):
                    ports = {}
                if ports:
                    came_up = True
                    slot.ports = ports
                    log.info("worker %d up (pid %d)", slot.index, process.pid, extra={"event": "worker_up"})
                    if all(s.ports for s in self.slots):
                        self.ready.set()
                else:
                    log.error("worker %d did not start", slot.index)
                    process.kill()
                code = await process.wait()
            finally:
                slot.ports = None
                _mark_dead(process.pid, self._metrics_dir)
            if self.draining:
                return
            slot.restarts += 1
            log.warning(
                "worker %d (pid %d) died with %s; restarting",
                slot.index,
                process.pid,
                code,
                extra={"event": "worker_restart"},
            )
            # One that cannot even start (a broken deploy) is retried ever more slowly, up to 30 s.
            failures = 0 if came_up else failures + 1
            await anyio.sleep(min(30.0, RESTART_DELAY * 2**failures))

    async def _stop_workers(self) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                slot.process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(self.config.drain_seconds + 15) as waiting:
            for slot in self.slots:
                if slot.process is not None:
                    await slot.process.wait()
        if waiting.cancelled_caught:  # a worker stuck past its own deadline: end it
            for slot in self.slots:
                if slot.process is not None and slot.process.returncode is None:
                    slot.process.kill()

    # ---- the public port -------------------------------------------------------------------------

    async def _handle(self, client: SocketStream) -> None:
        try:
            await self._handle_connection(client)
        except Exception:  # one connection's trouble never ends the server
            log.exception("connection failed")

    async def _handle_connection(self, client: SocketStream) -> None:
        async with client:
            head = b""
            with anyio.move_on_after(HEAD_TIMEOUT):
                while b"\r\n\r\n" not in head and len(head) <= MAX_HEAD:
                    try:
                        head += await client.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
            if b"\r\n\r\n" not in head:
                await _respond(client, 431 if len(head) > MAX_HEAD else 408, "bad request head\n")
                return
            target = head.split(b"\r\n", 1)[0].split(b" ")
            path = target[1].decode("latin-1").split("?", 1)[0] if len(target) >= 2 else ""
            if path == "/healthz":
                await _respond(client, 200, "ok\n")
            elif path == "/readyz":
                ready = not self.draining and any(s.ports for s in self.slots)
                await _respond(client, 200 if ready else 503, "ready\n" if ready else "not ready\n")
            elif path == "/metrics":
                await _respond(client, 200, self.metrics_text(), "text/plain; version=0.0.4")
            elif self.draining:
                await _respond(client, 503, "draining\n")
            elif path == TWILIO_PATH and self.config.twilio:
                await self._forward(client, head, "twilio_port")
            elif path != TWILIO_PATH and self.config.web:
                await self._forward(client, head, "web_port")
            else:
                await _respond(client, 404, "not found\n")

    async def _forward(self, client: SocketStream, head: bytes, kind: str) -> None:
        ports = [s.ports[kind] for s in self.slots if s.ports and kind in s.ports]
        start = next(self._rr)
        for attempt in range(len(ports)):
            port = ports[(start + attempt) % len(ports)]
            try:
                upstream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                continue  # that worker just died: try the next one
            async with upstream, anyio.create_task_group() as tg:
                await upstream.send(head)
                tg.start_soon(_pipe, client, upstream, tg)
                tg.start_soon(_pipe, upstream, client, tg)
            return
        await _respond(client, 503, "no worker ready\n")

    def metrics_text(self) -> str:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._metrics_dir)  # type: ignore[no-untyped-call]
        text = generate_latest(registry).decode("utf-8")
        ready = sum(1 for s in self.slots if s.ports)
        restarts = sum(s.restarts for s in self.slots)
        return text + (
            "# HELP voiceagent_workers_ready Worker processes ready\n"
            "# TYPE voiceagent_workers_ready gauge\n"
            f"voiceagent_workers_ready {ready}\n"
            "# HELP voiceagent_worker_restarts_total Worker processes restarted after dying\n"
            "# TYPE voiceagent_worker_restarts_total counter\n"
            f"voiceagent_worker_restarts_total {restarts}\n"
        )

    # ---- the process -----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
            async with listener, anyio.create_task_group() as tg:
                self.bound_port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
                for slot in self.slots:
                    tg.start_soon(self._keep_worker, slot)
                tg.start_soon(listener.serve, self._handle)
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    log.info(
                        "serving on %s:%d with %d worker(s)",
                        self.host,
                        self.bound_port,
                        len(self.slots),
                        extra={"event": "listening", "port": self.bound_port},
                    )
                    async for signum in signals:
                        self.stopped_by = signum
                        break
                self.draining = True
                name = signal.Signals(self.stopped_by).name if self.stopped_by else "stop"
                log.info("%s: draining", name, extra={"event": "drain"})
                await self._stop_workers()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                for slot in self.slots:  # however we got here, no worker outlives us
                    if slot.process is not None and slot.process.returncode is None:
                        slot.process.kill()
                        await slot.process.wait()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)


async def _read_line(process: Process) -> bytes | None:
    assert process.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        try:
            line += await process.stdout.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return None
    return line


async def _pipe(source: ByteStream, sink: ByteStream, tg: TaskGroup) -> None:
    try:
        async for data in source:
            await sink.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    tg.cancel_scope.cancel()  # one side is gone: so is the connection


async def _respond(client: SocketStream, status: int, body: str, content_type: str = "text/plain") -> None:
    reason = {
        200: "OK",
        404: "Not Found",
        408: "Request Timeout",
        431: "Request Header Fields Too Large",
    }.get(status, "Service Unavailable")
    data = body.encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    try:
        await client.send(head.encode("latin-1") + data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass


def _mark_dead(pid: int, path: str) -> None:
    try:
        from prometheus_client import multiprocess

        # Its live gauges (active calls) stop counting.
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    except Exception:
        pass
