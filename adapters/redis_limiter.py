"""A concurrency limiter shared by every worker process of one account, kept in Redis.

Electron caps in-flight requests per account (standard=3, enterprise=20). One process can use the
in-process ``ConcurrencyLimiter``; a fleet of workers sharing one API key needs the count in one place.

Per account (keyed by a hash of the API key, never the key itself) Redis holds:
- ``leases``: sorted set of lease ids scored by expiry (Redis server ms). A slot is a live lease.
- ``queue`` / ``queue_exp``: waiters scored by arrival ticket / by expiry, so slots go out first come,
  first served, and a dead waiter drops out of line after the TTL.
- ``ticket``: arrival counter; ``released``: pub/sub channel that wakes waiters on release.
- ``epoch``: when Redis started keeping this account's state. A Redis that restarted without
  persistence has lost every lease while the requests behind them are still in flight, so for
  ``restart_grace`` after its start (``LASTSAVE``) no slot is granted: every live holder re-registers
  its lease on its next heartbeat first. Without that, a restart hands out the plan a second time
  (HTTP 429s). A fresh account on a Redis that has been up for longer pays no grace.
Every change runs in one Lua script, so prune-count-grant is atomic across processes.

One background task per limiter (started by ``async with limiter:``) renews every lease this process
holds, in one script call per beat. ``slot()`` opens no task group, so a slot can be taken in one cancel
scope and given back in another (``LLMStream`` closes it in a shielded scope). A worker that dies stops
renewing and its slots free themselves after ``lease_ttl`` (3 s by default). Expiry uses the Redis
server clock, so worker clocks may disagree.

When Redis cannot be reached (down, hung, restarting), a slot keeps trying it for ``fallback_after``
(2 s: a restart's down window, so no local slot lands on top of leases about to be re-registered),
then the limiter degrades to the in-process limit (at most ``limit`` slots in this process;
``fallback="fail"`` raises ``LimiterUnavailableError`` instead), logs one warning per outage, and goes
back to the shared count as soon as Redis answers again; slots taken meanwhile are registered in Redis
by the next heartbeat. See docs/reliability.md, "Fleet limiter".
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc

try:
    import redis.asyncio as aioredis
    import redis.exceptions
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
except ModuleNotFoundError as exc:  # name the extra, not just the missing module
    raise ModuleNotFoundError(
        "RedisConcurrencyLimiter needs the redis package: pip install 'voiceagent[redis]'", name=exc.name
    ) from exc

from voiceagent.errors import LimiterUnavailableError, SlotTimeoutError
from voiceagent.limiter import PLAN_CONCURRENCY
from voiceagent.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")

DEFAULT_LEASE_TTL = 3.0
DEFAULT_ACQUIRE_TIMEOUT = 10.0
DEFAULT_SOCKET_TIMEOUT = 1.0
DEFAULT_FALLBACK_AFTER = 2.0
DEFAULT_KEY_PREFIX = "voiceagent:limiter"
_EPOCH_TTL_MS = 24 * 3600 * 1000  # outlives any idle spell worth a grace; only a real loss resets it

Fallback = Literal["local", "fail"]

# KEYS (every script): leases, queue, queue_exp, ticket, epoch.
# Shared preamble: server time in ms, then drop expired leases and dead waiters.
_PRUNE = (
    f"local EPOCH_TTL = {_EPOCH_TTL_MS}\n"
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, id in ipairs(dead) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
local function keep_alive(ttl)
  -- Idle accounts leave nothing behind; never shorten a TTL a worker with a longer lease set.
  for i = 1, 4 do
    if redis.call('PTTL', KEYS[i]) < 2 * ttl then redis.call('PEXPIRE', KEYS[i], 2 * ttl) end
  end
end
local function recovering(grace)
  local born = redis.call('GET', KEYS[5])
  if born then
    redis.call('PEXPIRE', KEYS[5], EPOCH_TTL)
  else
    -- No epoch: this Redis lost the account's state or never had it. Only one that started within
    -- the grace can have lost leases still in flight; without saves, LASTSAVE is its start time
    -- (whole seconds, so rounded up). Otherwise the new epoch is already past its grace.
    local started = (redis.call('LASTSAVE') + 1) * 1000
    if now - started < grace then born = started else born = now - grace end
    redis.call('SET', KEYS[5], born, 'PX', EPOCH_TTL)
  end
  return now < tonumber(born) + grace
end
"""
)

# ARGV: limit, ttl_ms, lease_id, grace_ms. Returns 1 if granted, else 0.
_ACQUIRE = (
    _PRUNE
    + """
local limit = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local id = ARGV[3]
if redis.call('ZSCORE', KEYS[1], id) then return 1 end  -- a retried call that already won
local blocked = recovering(tonumber(ARGV[4]))
if not redis.call('ZSCORE', KEYS[2], id) then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), id)
end
redis.call('ZADD', KEYS[3], now + ttl, id)
local granted = 0
-- First come, first served: grant only if every waiter ahead of us fits too.
if not blocked and redis.call('ZRANK', KEYS[2], id) < limit - redis.call('ZCARD', KEYS[1]) then
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[1], now + ttl, id)
  granted = 1
end
keep_alive(ttl)
return granted
"""
)

# ARGV: ttl_ms, grace_ms, lease ids... Renews every lease; one that had expired (a stalled worker, a
# restarted Redis) is put back anyway: its request is still in flight and must be counted. Returns how
# many had expired.
_RENEW = (
    _PRUNE
    + """
local ttl = tonumber(ARGV[1])
recovering(tonumber(ARGV[2]))
local lapsed = 0
for i = 3, #ARGV do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then lapsed = lapsed + 1 end
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
end
keep_alive(ttl)
return lapsed
"""
)

# ARGV: channel, lease ids... Removes each lease or waiter; wakes waiters if a lease was freed.
_RELEASE = """
local held = 0
for i = 2, #ARGV do
  held = held + redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
  redis.call('ZREM', KEYS[3], ARGV[i])
end
if held > 0 then redis.call('PUBLISH', ARGV[1], 'released') end
return held
"""

# Returns {live leases, live waiters}.
_STATS = (
    _PRUNE
    + """
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])}
"""
)

__all__ = [
    "DEFAULT_LEASE_TTL",
    "LimiterUnavailableError",
    "RedisConcurrencyLimiter",
    "RedisLimiterKeys",
    "SlotTimeoutError",
    "account_id",
    "redact_url",
]


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:***"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def account_id(api_key: str) -> str:
    """A stable, non-reversible account id: the first 16 hex digits of sha256(api_key)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class RedisLimiterKeys:
    """The Redis keys of one account. The ``{id}`` hash tag keeps them in one Redis Cluster slot."""

    leases: str
    queue: str
    queue_expiry: str
    ticket: str
    epoch: str
    released_channel: str

    @classmethod
    def for_account(cls, account: str, prefix: str = DEFAULT_KEY_PREFIX) -> RedisLimiterKeys:
        base = f"{prefix}:{{{account}}}"
        return cls(
            f"{base}:leases",
            f"{base}:queue",
            f"{base}:queue_exp",
            f"{base}:ticket",
            f"{base}:epoch",
            f"{base}:released",
        )

    @property
    def script_keys(self) -> list[str]:
        return [self.leases, self.queue, self.queue_expiry, self.ticket, self.epoch]


class RedisConcurrencyLimiter:
    """At most ``limit`` slots at once across all processes sharing ``account`` and ``redis_url``.

    ``async with RedisConcurrencyLimiter(...) as limiter:`` starts the heartbeat that keeps this
    process's leases alive; ``slot()`` refuses to run outside it. ``account`` is the API key (or any
    account identifier); only its hash is stored. Waiters are served first come, first served; a wait
    longer than ``acquire_timeout`` raises ``SlotTimeoutError``. ``lease_ttl``: how long a dead worker's
    slot stays taken. ``fallback``: what to do once Redis has been unreachable for ``fallback_after``
    seconds, ``"local"`` (the in-process limit, a warning) or ``"fail"`` (``LimiterUnavailableError``).
    ``restart_grace`` (default ``lease_ttl``): how long after a restart of Redis no slot is granted.
    ``socket_timeout`` bounds each Redis command (a hung Redis). asyncio only.
    """

    def __init__(
        self,
        limit: int,
        redis_url: str,
        *,
        account: str,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        acquire_timeout: float | None = DEFAULT_ACQUIRE_TIMEOUT,
        fallback: Fallback = "local",
        fallback_after: float = DEFAULT_FALLBACK_AFTER,
        restart_grace: float | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        max_poll_interval: float = 0.5,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if lease_ttl < 0.05:
            raise ValueError(f"lease_ttl must be at least 0.05 s, got {lease_ttl}")
        if not account:
            raise ValueError("account must be a non-empty API key or account identifier")
        if fallback not in ("local", "fail"):
            raise ValueError(f"fallback must be 'local' or 'fail', got {fallback!r}")
        if acquire_timeout is not None and acquire_timeout <= 0:
            raise ValueError(f"acquire_timeout must be positive or None, got {acquire_timeout}")
        self.limit = limit
        self.lease_ttl = lease_ttl
        self.acquire_timeout = acquire_timeout
        self.fallback: Fallback = fallback
        self.fallback_after = max(0.0, fallback_after)
        self.restart_grace = lease_ttl if restart_grace is None else max(0.0, restart_grace)
        self.url = redact_url(redis_url)
        self.account = account_id(account)
        self.keys = RedisLimiterKeys.for_account(self.account, key_prefix)
        # Heartbeats and waiter refreshes must land well inside one TTL.
        self._heartbeat_interval = lease_ttl / 3
        self._max_poll = min(max_poll_interval, lease_ttl / 4)
        self._ttl_ms = max(1, round(lease_ttl * 1000))
        self._grace_ms = round(self.restart_grace * 1000)
        self._op_timeout = socket_timeout
        self._lease_tag = f"{socket.gethostname()}:{os.getpid()}"
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            redis_url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            # One immediate retry on a broken connection (a pooled socket a restart closed); never on a
            # timeout: a hung Redis would cost each retry another socket_timeout of dead air.
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
        )
        self._acquire_script = self._redis.register_script(_ACQUIRE)
        self._renew_script = self._redis.register_script(_RENEW)
        self._release_script = self._redis.register_script(_RELEASE)
        self._stats_script = self._redis.register_script(_STATS)
        # Every slot also holds a local token: one process never exceeds the plan, and while Redis is
        # unreachable this is the whole limit.
        self._local = anyio.CapacityLimiter(limit)
        self._held: set[str] = set()
        # Leases that may be in Redis but could not be released (or whose acquire failed in flight):
        # released by the first heartbeat that reaches Redis. Stamped with monotonic time; one older
        # than a TTL has expired by itself and is dropped, so this stays bounded.
        self._unreleased: dict[str, float] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self._degraded_since: float | None = None  # monotonic start of a declared outage

    @classmethod
    def for_plan(cls, plan: str, redis_url: str, *, account: str, **kwargs: Any) -> RedisConcurrencyLimiter:
        try:
            limit = PLAN_CONCURRENCY[plan]
        except KeyError:
            raise ValueError(f"unknown plan {plan!r}; expected one of {sorted(PLAN_CONCURRENCY)}") from None
        return cls(limit, redis_url, account=account, **kwargs)

    # ---- lifecycle ----

    async def __aenter__(self) -> RedisConcurrencyLimiter:
        if self._task_group is not None:
            raise RuntimeError("this RedisConcurrencyLimiter is already running")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        task_group.start_soon(self._heartbeat)
        self._task_group = task_group
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task_group, self._task_group = self._task_group, None
        try:
            if task_group is not None:
                task_group.cancel_scope.cancel()
                # Not the body's exception: the heartbeat never raises, and passing it would wrap the
                # body's own error in an ExceptionGroup. Its True (it caught its own cancellation) is
                # no verdict on the body's exception, which always propagates.
                await task_group.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                await self.aclose()

    async def aclose(self) -> None:
        """Close the Redis connections (``async with`` does this on exit)."""
        await self._redis.aclose()

    # ---- introspection ----

    @property
    def degraded(self) -> bool:
        """True while Redis is unreachable and slots come from the in-process limit."""
        return self._degraded_since is not None

    @property
    def held(self) -> int:
        """Slots this process holds now."""
        return len(self._held)

    async def ping(self) -> None:
        """Raise ``LimiterUnavailableError`` now, not at the first request, if Redis is unreachable."""
        await self._call(self._redis.ping)

    async def in_flight(self) -> int:
        """Live leases of this account, across all processes."""
        return (await self._stats())[0]

    async def waiting(self) -> int:
        """Live waiters of this account, across all processes."""
        return (await self._stats())[1]

    # ---- slots ----

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._task_group is None:
            raise RuntimeError(
                "RedisConcurrencyLimiter is not running: enter it first "
                "(async with RedisConcurrencyLimiter(...) as limiter:), which starts the heartbeat "
                "that keeps its leases alive"
            )
        lease = f"{self._lease_tag}:{uuid.uuid4().hex[:12]}"
        borrower = object()  # a fresh borrower per slot: one task may hold two slots
        # The deadline's scope opens and closes here, before the yield: nothing of ours spans the body.
        with anyio.move_on_after(self.acquire_timeout) as deadline:
            await self._local.acquire_on_behalf_of(borrower)
            try:
                await self._acquire(lease)
            except BaseException:
                self._local.release_on_behalf_of(borrower)
                raise
        if deadline.cancelled_caught:
            raise SlotTimeoutError(
                f"no LLM concurrency slot came free within {self.acquire_timeout:g} s "
                f"(limit {self.limit} for this account)"
            )
        self._held.add(lease)
        try:
            yield
        finally:
            self._held.discard(lease)  # first, so the heartbeat stops renewing it
            try:
                await self._release([lease])
            finally:
                self._local.release_on_behalf_of(borrower)

    async def _acquire(self, lease: str) -> None:
        """Take ``lease`` in Redis; once Redis has been unreachable for ``fallback_after``, the local
        token already held is the slot (or, with ``fallback="fail"``, LimiterUnavailableError)."""
        if self._degraded_since is not None:
            # A declared outage: only the heartbeat probes Redis, so no slot pays a socket timeout.
            self._fall_back(None)
            return
        # A restart's down window is short: keep trying Redis for a while before falling back, or the
        # local slots would come on top of the leases the holders are about to re-register (429s).
        give_up_at = time.monotonic() + self.fallback_after
        while True:
            try:
                await self._acquire_in_redis(lease)
            except LimiterUnavailableError as exc:
                now = time.monotonic()
                if now < give_up_at and self._degraded_since is None:  # another slot may declare it
                    await anyio.sleep(min(0.1, give_up_at - now))
                    continue
                self._mark_down(exc)
                self._fall_back(exc)
                return
            self._mark_up()
            return

    def _fall_back(self, cause: LimiterUnavailableError | None) -> None:
        if self.fallback == "fail":
            assert self._degraded_since is not None
            down_for = time.monotonic() - self._degraded_since
            message = f"cannot reach Redis at {self.url} (unreachable for {down_for:.1f} s)"
            raise LimiterUnavailableError(message, url=self.url) from cause

    async def _acquire_in_redis(self, lease: str) -> None:
        granted = False
        unreachable = False
        try:
            granted = await self._try_acquire(lease)
            if granted:
                return
            pubsub = self._redis.pubsub()
            try:
                # Subscribe before the next attempt, so a release in between still wakes us.
                await self._call(pubsub.subscribe, self.keys.released_channel)
                delay = 0.01
                while not (granted := await self._try_acquire(lease)):
                    await self._call(pubsub.get_message, ignore_subscribe_messages=True, timeout=delay)
                    delay = min(self._max_poll, delay * 2) * random.uniform(0.8, 1.0)
            finally:
                with anyio.CancelScope(shield=True):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
        except LimiterUnavailableError:
            unreachable = True
            raise
        finally:
            if not granted:
                # Cancelled, timed out or failed while queued: leave neither a waiter nor a lease whose
                # grant reply was lost in flight. An unreachable Redis gets it from the heartbeat later.
                if unreachable:
                    self._defer_release([lease])
                else:
                    await self._release([lease])

    async def _try_acquire(self, lease: str) -> bool:
        args = [self.limit, self._ttl_ms, lease, self._grace_ms]
        result = await self._call(self._acquire_script, keys=self.keys.script_keys, args=args)
        return bool(result)

    async def _release(self, leases: list[str]) -> None:
        if self._degraded_since is not None:
            self._defer_release(leases)  # no dead air waiting on an unreachable Redis
            return
        # Shielded and bounded: runs during cancellation and must not add dead air if Redis hangs.
        released = False
        with anyio.CancelScope(shield=True), anyio.move_on_after(2 * self._op_timeout):
            try:
                args = [self.keys.released_channel, *leases]
                await self._call(self._release_script, keys=self.keys.script_keys, args=args)
                released = True
            except LimiterUnavailableError as exc:
                # Never mask the body's own outcome over a failed release.
                log.debug("could not release limiter leases %s (retried by the heartbeat): %s", leases, exc)
        if not released:
            self._defer_release(leases)

    def _defer_release(self, leases: list[str]) -> None:
        now = time.monotonic()
        for lease in leases:
            self._unreleased[lease] = now

    async def _heartbeat(self) -> None:
        """Renew every lease this process holds, once per ``lease_ttl / 3``; while Redis is down, probe it.

        The first beat runs at once, held leases or not: it opens the account's epoch if Redis has none,
        so a restart grace runs while the worker starts, not during its first call."""
        first = True
        while True:
            if not first:
                await anyio.sleep(self._heartbeat_interval)
            held = list(self._held)
            if not (first or held or self._unreleased or self._degraded_since is not None):
                continue
            first = False
            try:
                args = [self._ttl_ms, self._grace_ms, *held]
                lapsed = await self._call(self._renew_script, keys=self.keys.script_keys, args=args)
            except LimiterUnavailableError as exc:
                # The requests go on; the next beat retries. One failed beat is no outage (a restart
                # blips); only an acquire that waited fallback_after declares one.
                if self._degraded_since is None:
                    log.info("could not renew limiter leases (retrying next beat): %s", exc)
                continue
            self._mark_up()
            if lapsed:
                log.warning(
                    "%d limiter lease(s) had expired before their renewal (stalled worker, or Redis "
                    "restarted); registered them again",
                    lapsed,
                )
            # A slot that ended while the renewal was in flight may have been put back after its
            # release: release it again, now that the renewal has landed.
            gone = [lease for lease in held if lease not in self._held]
            cutoff = time.monotonic() - self.lease_ttl
            gone += [lease for lease, at in self._unreleased.items() if at > cutoff]
            self._unreleased.clear()
            if gone:
                await self._release(gone)

    def _mark_down(self, exc: LimiterUnavailableError) -> None:
        if self._degraded_since is None:
            self._degraded_since = time.monotonic()
            policy = (
                f"falling back to the in-process limit of {self.limit}"
                if self.fallback == "local"
                else "refusing slots"
            )
            log.warning("fleet limiter: %s; %s until Redis answers again", exc, policy)

    def _mark_up(self) -> None:
        if self._degraded_since is not None:
            outage = time.monotonic() - self._degraded_since
            self._degraded_since = None
            log.warning(
                "fleet limiter: Redis at %s answers again after %.1f s; shared limit restored",
                self.url,
                outage,
            )

    async def _stats(self) -> tuple[int, int]:
        leases, waiters = await self._call(self._stats_script, keys=self.keys.script_keys, args=[])
        return int(leases), int(waiters)

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        try:
            return await fn(*args, **kwargs)
        except (redis.exceptions.RedisError, OSError) as e:
            raise LimiterUnavailableError(f"cannot reach Redis at {self.url}: {e}", url=self.url) from e
