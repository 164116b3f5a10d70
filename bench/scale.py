"""4. Scale: concurrent sessions at 30 tokens/s each until p99 chunk latency passes 50 ms; memory.

Each session streams ``tokens`` one-word tokens, ``CHUNK_DELAY`` apart (30/s), a full stop every 8 words,
to a zero-delay sink; sessions start spread over the first second, as calls do. Chunk latency is from
the server writing the token that completed a spoken chunk to the sink receiving that chunk (server in
its own process; both stamp CLOCK_MONOTONIC). A chunk is complete on its last token for a framework that
cuts on punctuation, on the next token's first letter for one that looks ahead (ours: ``3.`` may become
``3.14``): the trigger is the latest of those two tokens sent before the chunk reached the sink.

Levels rise until one misses the target, then stop; every level is bounded in sessions and time.

The client's own cost is measured, not inferred from the session count (which on a shared machine is
mostly set by other processes' load): CPU per session-second (client process CPU over the level / the
sessions' streaming seconds), the server process's the same way (from /proc), the event loop's lag (a
10 ms sleeper's overshoot, p99 and max) and the load average at each level. From the CPU per
session-second, ``projected_sessions`` says how many sessions two idle cores would hold. What the rest
of the machine used meanwhile (``/proc/stat``'s busy time less the client's and the server's) is
printed beside it, so a reader can tell a full machine from a limit of ours.

How sessions arrive (``Method``): ``RAMP``, the default since 2026-12-02, starts them at independent
uniform times over a 5 s window (a Poisson process conditioned on the count: N/5 calls a second) and
streams 300 tokens each (10 s), so every session overlaps every other one for the last 5 s; its server is
``ServerProcess(fast=True)``. ``PREVIOUS`` is the method before it: all sessions within 1 s, 150 tokens
(5 s), the plain bench server. A level also reports how long sessions took to open: from a session's
start to the server having read its request (``open_p99_ms``), since a late open is what fails a level
with a quiet chunk p99.
"""

from __future__ import annotations

import gc
import os
import random
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import anyio

from bench.contenders import our_client
from bench.scenarios import scenario, token_words
from bench.server import ServerProcess
from bench.stats import percentile
from voiceagent.agent import Agent
from voiceagent.testing.sinks import RecordingSink
from voiceagent.turn import TurnConfig

CHUNK_DELAY = 1 / 30
P99_TARGET_MS = 50.0
START_SPREAD_S = 1.0  # the previous method's arrival window
LEVEL_TIMEOUT_S = 60.0

# A session's sink events: (time the sink got the chunk, the chunk's text).
SinkLog = list[tuple[float, str]]
# When each session started (its arrival), by tag; a runner fills it in.
Starts = dict[str, float]


@dataclass(frozen=True)
class Method:
    """How a level's sessions arrive and what serves them."""

    label: str
    window_s: float  # sessions start at independent uniform times in [0, window_s)
    tokens: int  # tokens a session streams, at 30/s
    fast_server: bool  # ServerProcess(fast=True): uvloop and a draining accept loop


PREVIOUS = Method("previous: all within 1 s, 150 tokens, plain server", START_SPREAD_S, 150, False)
RAMP = Method("ramp: arrivals over 5 s, 300 tokens (all concurrent for 5 s), fast server", 5.0, 300, True)
# Each contender's method; a contender not here uses RAMP.
CONTENDER_METHODS: dict[str, Method] = {}
# Runs ``sessions`` concurrent sessions (tag, model); returns each tag's sink log.
# Contenders run on uvloop (anyio's backend option) when their name is here; every other on asyncio's loop.
UVLOOP_CONTENDERS: set[str] = set()


# Contenders whose levels run with the young GC generation's threshold raised (voiceagent.runtime.settle_gc).
GC_TUNED_CONTENDERS: set[str] = set()
GC_GEN0 = 7_000  # 10x CPython's 700: 10x fewer young collections, each still small
LAG_TICK_S = 0.01
# The projection's headroom: a loop kept busier than this misses 50 ms at p99 (queueing).
PROJECTION_BUSY = 0.7


def _loop_options(name: str) -> dict[str, bool]:
    return {"use_uvloop": True} if name in UVLOOP_CONTENDERS else {}


SessionRunner = Callable[[str, Sequence[tuple[str, str]], float, Starts], Awaitable[dict[str, SinkLog]]]


@dataclass(frozen=True)
class LevelResult:
    sessions: int
    chunks: int  # spoken chunks measured
    p50_ms: float
    p99_ms: float
    max_ms: float
    rss_per_session_kib: float
    server_rate: float  # tokens/s per session the server achieved (30 when it kept up)
    cpu_share: float  # client CPU seconds per wall second (2.0 = both cores)
    client_ms_per_session_s: float = 0.0  # client CPU ms per second of one session's stream
    server_ms_per_session_s: float = 0.0  # the same for the bench server process
    lag_p99_ms: float = 0.0  # event-loop lag: a 10 ms sleep's overshoot
    lag_max_ms: float = 0.0
    load1: float = 0.0  # the 1-minute load average when the level ended
    # Sessions whose stream took over TurnConfig.filler_after (1 s) to open, so they said "One moment."
    # first: an overloaded level even if its chunks, timed from the server's sends, look fine.
    late_opens: int = 0
    open_p99_ms: float = 0.0  # a session's start → the server has read its request
    open_max_ms: float = 0.0
    window_s: float = START_SPREAD_S  # the arrival window
    # CPU of every other process on the machine over the level, in cores (/proc/stat busy less ours).
    others_cores: float = 0.0
    bench_cores: float = 0.0  # client + bench server CPU over the level, in cores

    @property
    def ok(self) -> bool:
        return self.p99_ms <= P99_TARGET_MS and self.late_opens == 0

    def projected_sessions(self, cores: float = 2.0, *, client_only: bool = False) -> int:
        """Sessions that ``cores`` idle cores would hold at this level's CPU per session-second, client
        and server together (or the client alone, its server elsewhere), each core at most
        ``PROJECTION_BUSY`` busy."""
        server = 0.0 if client_only else self.server_ms_per_session_s
        per_session = (self.client_ms_per_session_s + server) / 1000
        return int(cores * PROJECTION_BUSY / per_session) if per_session > 0 else 0


@dataclass(frozen=True)
class ScaleResult:
    contender: str
    tokens: int
    levels: tuple[LevelResult, ...]
    heap_kib_per_session: float | None  # tracemalloc peak / sessions, from a separate run
    note: str = ""
    method: str = RAMP.label

    @property
    def max_sessions(self) -> int:
        """The most sessions of a level that met the target, 0 if none did."""
        return max((level.sessions for level in self.levels if level.ok), default=0)

    @property
    def saturated(self) -> bool:
        """A level missed the target: ``max_sessions`` is this contender's limit, not the bench's."""
        return any(not level.ok for level in self.levels)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used (all cores; /proc/stat's first line)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def chunk_latencies(words: list[str], sink_log: SinkLog, sent: dict[int, float]) -> list[float]:
    """Milliseconds from the trigger token's send to the sink, for every spoken chunk of one session."""
    index_of = {w.strip(): i for i, w in enumerate(words)}
    last_chunk = max(sent)
    out: list[float] = []
    for at, text in sink_log:
        spoken = text.split()
        if not spoken or spoken[-1] not in index_of:
            continue  # not the stream's words: the turn's "One moment." (see late_opens)
        last = index_of[spoken[-1]]
        # Candidates: the chunk's last token, or the next one (look-ahead); past the last word, the
        # stream's closing chunks.
        candidates = [last, last + 1] if last + 1 < len(words) else [last, *range(len(words), last_chunk + 1)]
        before = [sent[k] for k in candidates if k in sent and sent[k] <= at]
        trigger = max(before) if before else sent[last]
        out.append((at - trigger) * 1000)
    return out


async def run_ours(
    base_url: str, sessions: Sequence[tuple[str, str]], spread: float, starts: Starts
) -> dict[str, SinkLog]:
    llm = our_client(base_url)
    logs: dict[str, SinkLog] = {}
    rng = random.Random(7)

    async def session(tag: str, model: str, delay: float) -> None:
        await anyio.sleep(delay)
        starts[tag] = time.perf_counter()
        sink = RecordingSink()
        agent = Agent(llm=llm, sink=sink, system_prompt="bench", config=TurnConfig(params={"model": model}))
        result = await agent.respond("Talk to me.")
        if result.error:
            raise RuntimeError(f"session {tag} failed: {result.error}")
        logs[tag] = [(c.at, c.text) for c in sink.calls if c.kind == "speak_start"]

    try:
        async with anyio.create_task_group() as tg:
            for tag, model in sessions:
                tg.start_soon(session, tag, model, rng.uniform(0, spread))
    finally:
        await llm.aclose()
    return logs


async def run_pipecat(
    base_url: str, sessions: Sequence[tuple[str, str]], spread: float, starts: Starts
) -> dict[str, SinkLog]:
    from bench.pipecat_harness import PipecatSession

    rng = random.Random(7)
    logs: dict[str, SinkLog] = {}

    async def session(tag: str, model: str, delay: float, last_word: str) -> None:
        bot = PipecatSession(base_url, model, seconds_per_char=0.0, tool_seconds=0.0)
        async with bot.running():
            await anyio.sleep(delay)
            starts[tag] = time.perf_counter()
            await bot.turn("Talk to me.", lambda log: any(last_word in t for _, t in log.tts_texts))
        logs[tag] = list(bot.log.tts_texts)

    async with anyio.create_task_group() as tg:
        for tag, model in sessions:
            tokens = int(model.rsplit("tokens=", 1)[1].split(",")[0])
            last_word = token_words(tokens)[-1].strip()
            tg.start_soon(session, tag, model, rng.uniform(0, spread), last_word)
    return logs


def run_level(
    server: ServerProcess,
    runner: SessionRunner,
    name: str,
    sessions: int,
    tokens: int,
    *,
    window_s: float = START_SPREAD_S,
) -> LevelResult:
    words = token_words(tokens)
    specs = _specs(f"{name}-{sessions}", sessions, tokens)
    starts: Starts = {}
    server.send_log()
    server.request_log()
    gc.collect()
    rss_before = rss_kib()
    peak = [rss_before]
    lags: list[float] = []

    async def level() -> dict[str, SinkLog]:
        async def watch_rss() -> None:
            while True:
                peak[0] = max(peak[0], rss_kib())
                await anyio.sleep(0.1)

        async def watch_lag() -> None:
            while True:
                began = time.perf_counter()
                await anyio.sleep(LAG_TICK_S)
                lags.append((time.perf_counter() - began - LAG_TICK_S) * 1000)

        with anyio.fail_after(LEVEL_TIMEOUT_S):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_rss)
                tg.start_soon(watch_lag)
                logs = await runner(server.base_url, specs, window_s, starts)
                tg.cancel_scope.cancel()
        return logs

    threshold = gc.get_threshold()
    if name in GC_TUNED_CONTENDERS:
        gc.set_threshold(GC_GEN0, threshold[1], threshold[2])
    server_pid = server.pid
    wall0, cpu0, server0 = time.perf_counter(), time.process_time(), process_cpu_s(server_pid)
    machine0 = machine_busy_s()
    try:
        logs = anyio.run(level, backend_options=_loop_options(name))
    finally:
        gc.set_threshold(*threshold)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    server_cpu = process_cpu_s(server_pid) - server0
    others = max(0.0, machine_busy_s() - machine0 - cpu - server_cpu)
    arrived = server.request_log()
    opens = [(arrived[tag][0] - starts[tag]) * 1000 for tag, _ in specs if tag in arrived and tag in starts]
    session_seconds = sessions * (tokens + 1) * CHUNK_DELAY  # each session's stream lasts this long
    sent = server.send_log()
    latencies: list[float] = []
    rates: list[float] = []
    known = {w.strip() for w in words}
    late_opens = sum(
        any(text.split() and text.split()[-1] not in known for _, text in logs[tag]) for tag, _ in specs
    )
    for tag, _ in specs:
        latencies += chunk_latencies(words, logs[tag], sent[tag])
        times = [sent[tag][k] for k in range(len(words))]
        rates.append((len(words) - 1) / (times[-1] - times[0]))
    return LevelResult(
        sessions=sessions,
        chunks=len(latencies),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies),
        rss_per_session_kib=(peak[0] - rss_before) / sessions,
        server_rate=sorted(rates)[len(rates) // 2],
        cpu_share=cpu / wall,
        client_ms_per_session_s=cpu * 1000 / session_seconds,
        server_ms_per_session_s=server_cpu * 1000 / session_seconds,
        lag_p99_ms=percentile(lags, 99) if lags else 0.0,
        lag_max_ms=max(lags, default=0.0),
        load1=os.getloadavg()[0],
        late_opens=late_opens,
        open_p99_ms=percentile(opens, 99) if opens else 0.0,
        open_max_ms=max(opens, default=0.0),
        window_s=window_s,
        others_cores=others / wall,
        bench_cores=(cpu + server_cpu) / wall,
    )


def _specs(prefix: str, sessions: int, tokens: int) -> list[tuple[str, str]]:
    tags = [f"{prefix}-{i}" for i in range(sessions)]
    return [(tag, scenario(tag, "text", tokens=tokens, delay=CHUNK_DELAY).model) for tag in tags]


def heap_per_session(
    server: ServerProcess, runner: SessionRunner, name: str, sessions: int, tokens: int
) -> float:
    """Peak Python heap (tracemalloc) per concurrent session, KiB."""
    specs = _specs(f"{name}-mem", sessions, tokens)

    async def run() -> float:
        await runner(server.base_url, specs[:1], 0.0, {})  # imports and first-use caches are not per session
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            # All sessions start together so their peaks coincide.
            await runner(server.base_url, specs, 0.0, {})
            return (tracemalloc.get_traced_memory()[1] - base) / 1024 / sessions
        finally:
            tracemalloc.stop()

    result = anyio.run(run, backend_options=_loop_options(name))
    server.send_log()
    server.request_log()
    return result


def measure_scale(
    server: ServerProcess,
    runners: dict[str, SessionRunner],
    *,
    levels: Sequence[int],
    memory_sessions: int,
    budget_s: float,
    fast_server: ServerProcess | None = None,
    shrink: float = 1.0,
) -> list[ScaleResult]:
    """Every contender at each level in turn (so load from elsewhere hits them alike), until it misses
    the target; then each one's heap per session. Each contender's sessions arrive by its method
    (``CONTENDER_METHODS``, else ``RAMP``), served by ``fast_server`` when the method asks for it;
    ``shrink`` scales every method's tokens and window (the quick run's 0.2)."""
    methods = {
        name: replace(method, tokens=round(method.tokens * shrink), window_s=method.window_s * shrink)
        for name, method in ((n, CONTENDER_METHODS.get(n, RAMP)) for n in runners)
    }
    servers = {
        name: fast_server if methods[name].fast_server and fast_server is not None else server
        for name in runners
    }
    for name, runner in runners.items():  # first use (imports, pools, caches) is not per-session cost
        warm = [(f"{name}-warm", scenario(f"{name}-warm", "text", tokens=16).model)]
        anyio.run(runner, servers[name].base_url, warm, 0.0, {}, backend_options=_loop_options(name))
    # What a long-running voice server does after start-up: the ~100k objects of the imported modules
    # (openai's types, Pipecat's) leave the collector's view, or every full collection stalls every
    # session in the process for ~50 ms on this machine (seen as p99 spikes).
    gc.collect()
    gc.freeze()
    try:
        for each in {*servers.values()}:
            each.send_log()
            each.request_log()
        started = time.perf_counter()
        results: dict[str, list[LevelResult]] = {name: [] for name in runners}
        notes = {name: "" for name in runners}
        active = list(runners)
        for sessions in levels:
            if not active:
                break
            if time.perf_counter() - started > budget_s:
                for name in active:
                    notes[name] = f"stopped at the {budget_s:.0f} s time budget"
                break
            for name in list(active):
                method = methods[name]
                result = run_level(
                    servers[name], runners[name], name, sessions, method.tokens, window_s=method.window_s
                )
                results[name].append(result)
                if not result.ok:
                    active.remove(name)
        else:
            for name in active:
                notes[name] = f"met the target at every level run (up to {levels[-1]})"
        return [
            ScaleResult(
                name,
                methods[name].tokens,
                tuple(results[name]),
                heap_per_session(servers[name], runners[name], name, memory_sessions, 60),
                notes[name],
                methods[name].label,
            )
            for name in runners
        ]
    finally:
        gc.unfreeze()
