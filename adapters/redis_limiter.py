"""A concurrency limiter shared by every worker process of one account, kept in Redis.

Electron caps in-flight requests per account (standard=3, enterprise=20). One process can use the
in-process ``ConcurrencyLimiter``; a fleet of workers sharing one API key needs the count in one place.

Per account (keyed by a hash of the API key, never the key itself) Redis holds:
- ``leases``: sorted set of lease ids scored by expiry (Redis server ms). A slot is a live lease.
- ``queue`` / ``queue_exp``: waiters scored by arrival ticket / by expiry, so slots go out first come,
  first served, and a dead waiter drops out of line after the TTL.
- ``ticket``: arrival counter; ``released``: pub/sub channel that wakes waiters on release.
Every change runs in one Lua script, so prune-count-grant is atomic across processes. A holder renews
its lease from a heartbeat task; a worker that dies (SIGKILL, lost host) stops renewing and its slot
frees itself after ``lease_ttl``. Expiry uses the Redis server clock, so worker clocks may disagree.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import redis.asyncio as aioredis
import redis.exceptions

from voiceagent.errors import VoiceAgentError
from voiceagent.limiter import PLAN_CONCURRENCY
from voiceagent.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")

DEFAULT_LEASE_TTL = 30.0
DEFAULT_KEY_PREFIX = "voiceagent:limiter"

# Shared preamble: server time in ms, then drop expired leases and dead waiters.
_PRUNE = """
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
  for i = 1, #KEYS do
    if redis.call('PTTL', KEYS[i]) < 2 * ttl then redis.call('PEXPIRE', KEYS[i], 2 * ttl) end
  end
end
"""

# KEYS: leases, queue, queue_exp, ticket. ARGV: limit, ttl_ms, lease_id. Returns 1 if granted, else 0.
_ACQUIRE = (
    _PRUNE
    + """
local limit = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local id = ARGV[3]
if redis.call('ZSCORE', KEYS[1], id) then return 1 end  -- a retried call that already won
if not redis.call('ZSCORE', KEYS[2], id) then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), id)
end
redis.call('ZADD', KEYS[3], now + ttl, id)
local granted = 0
-- First come, first served: grant only if every waiter ahead of us fits too.
if redis.call('ZRANK', KEYS[2], id) < limit - redis.call('ZCARD', KEYS[1]) then
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[1], now + ttl, id)
  granted = 1
end
keep_alive(ttl)
return granted
"""
)

# KEYS: leases, queue, queue_exp. ARGV: ttl_ms, lease_id. Returns 1 if the lease was live, 0 if it had
# expired (then it is put back anyway: the request is still in flight and must be counted).
_RENEW = (
    _PRUNE
    + """
local ttl = tonumber(ARGV[1])
local live = redis.call('ZSCORE', KEYS[1], ARGV[2]) and 1 or 0
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
keep_alive(ttl)
return live
"""
)

# KEYS: leases, queue, queue_exp. ARGV: lease_id, channel. Removes the lease or the waiter.
_RELEASE = """
local held = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if held == 1 then redis.call('PUBLISH', ARGV[2], 'released') end
return held
"""

# KEYS: leases, queue, queue_exp. Returns {live leases, live waiters}.
_STATS = (
    _PRUNE
    + """
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])}
"""
)


class LimiterUnavailableError(VoiceAgentError):
    """The shared limiter's Redis could not be reached (refused, timed out, auth failed)."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


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
    released_channel: str

    @classmethod
    def for_account(cls, account: str, prefix: str = DEFAULT_KEY_PREFIX) -> RedisLimiterKeys:
        base = f"{prefix}:{{{account}}}"
        return cls(
            f"{base}:leases", f"{base}:queue", f"{base}:queue_exp", f"{base}:ticket", f"{base}:released"
        )


class RedisConcurrencyLimiter:
    """At most ``limit`` slots at once across all processes sharing ``account`` and ``redis_url``.

    ``account`` is the API key (or any account identifier); only its hash is stored. Waiters are served
    first come, first served. The limiter is asyncio-only (redis.asyncio); close it with ``aclose()`` or
    use it as an async context manager.
    """

    def __init__(
        self,
        limit: int,
        redis_url: str,
        *,
        account: str,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        max_poll_interval: float = 0.5,
        socket_timeout: float = 5.0,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if lease_ttl < 0.05:
            raise ValueError(f"lease_ttl must be at least 0.05 s, got {lease_ttl}")
        if not account:
            raise ValueError("account must be a non-empty API key or account identifier")
        self.limit = limit
        self.lease_ttl = lease_ttl
        self.url = redact_url(redis_url)
        self.account = account_id(account)
        self.keys = RedisLimiterKeys.for_account(self.account, key_prefix)
        # Heartbeats and waiter refreshes must land well inside one TTL.
        self._heartbeat_interval = lease_ttl / 3
        self._max_poll = min(max_poll_interval, lease_ttl / 4)
        self._ttl_ms = max(1, round(lease_ttl * 1000))
        self._lease_tag = f"{socket.gethostname()}:{os.getpid()}"
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
        )
        self._acquire_script = self._redis.register_script(_ACQUIRE)
        self._renew_script = self._redis.register_script(_RENEW)
        self._release_script = self._redis.register_script(_RELEASE)
        self._stats_script = self._redis.register_script(_STATS)

    @classmethod
    def for_plan(
        cls, plan: str, redis_url: str, *, account: str, lease_ttl: float = DEFAULT_LEASE_TTL, **kwargs: Any
    ) -> RedisConcurrencyLimiter:
        try:
            limit = PLAN_CONCURRENCY[plan]
        except KeyError:
            raise ValueError(f"unknown plan {plan!r}; expected one of {sorted(PLAN_CONCURRENCY)}") from None
        return cls(limit, redis_url, account=account, lease_ttl=lease_ttl, **kwargs)

    async def __aenter__(self) -> RedisConcurrencyLimiter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def ping(self) -> None:
        """Raise ``LimiterUnavailableError`` now, not at the first request, if Redis is unreachable."""
        await self._call(self._redis.ping)

    async def in_flight(self) -> int:
        """Live leases of this account, across all processes."""
        return (await self._stats())[0]

    async def waiting(self) -> int:
        """Live waiters of this account, across all processes."""
        return (await self._stats())[1]

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        lease = f"{self._lease_tag}:{uuid.uuid4().hex[:12]}"
        await self._acquire(lease)
        # The body's own exception is carried out of the task group and re-raised as itself, not
        # wrapped in an ExceptionGroup (the heartbeat never raises; cancellation is not wrapped anyway).
        body_error: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat, lease)
                try:
                    yield
                except anyio.get_cancelled_exc_class():
                    raise
                except BaseException as e:
                    body_error = e
                finally:
                    tg.cancel_scope.cancel()
        finally:
            await self._release(lease)
        if body_error is not None:
            raise body_error

    async def _acquire(self, lease: str) -> None:
        granted = False
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
        finally:
            if not granted:
                # Cancelled or failed while queued: leave neither a waiter nor a lease whose grant
                # reply was lost in flight.
                await self._release(lease)

    async def _try_acquire(self, lease: str) -> bool:
        keys = [self.keys.leases, self.keys.queue, self.keys.queue_expiry, self.keys.ticket]
        result = await self._call(self._acquire_script, keys=keys, args=[self.limit, self._ttl_ms, lease])
        return bool(result)

    async def _heartbeat(self, lease: str) -> None:
        keys = [self.keys.leases, self.keys.queue, self.keys.queue_expiry]
        while True:
            await anyio.sleep(self._heartbeat_interval)
            try:
                live = await self._call(self._renew_script, keys=keys, args=[self._ttl_ms, lease])
            except (LimiterUnavailableError, redis.exceptions.RedisError) as e:
                # Keep the request going; the next beat retries. The slot may be handed out meanwhile.
                log.warning("could not renew limiter lease %s: %s", lease, e)
                continue
            if not live:
                log.warning(
                    "limiter lease %s had expired before its renewal (worker stalled?); re-registered it",
                    lease,
                )

    async def _release(self, lease: str) -> None:
        keys = [self.keys.leases, self.keys.queue, self.keys.queue_expiry]
        # Shielded and bounded: runs during cancellation; if Redis is gone the lease's TTL frees the slot.
        with anyio.CancelScope(shield=True), anyio.move_on_after(max(5.0, self.lease_ttl)):
            try:
                await self._call(self._release_script, keys=keys, args=[lease, self.keys.released_channel])
            except (LimiterUnavailableError, redis.exceptions.RedisError) as e:
                # Never mask the body's own outcome over a failed release.
                log.warning("could not release limiter lease %s (it expires on its own): %s", lease, e)

    async def _stats(self) -> tuple[int, int]:
        keys = [self.keys.leases, self.keys.queue, self.keys.queue_expiry]
        leases, waiters = await self._call(self._stats_script, keys=keys, args=[])
        return int(leases), int(waiters)

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        try:
            return await fn(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as e:
            raise LimiterUnavailableError(f"cannot reach Redis at {self.url}: {e}", url=self.url) from e
