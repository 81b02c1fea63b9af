"""Budget counters on a Redis server, shared by every process and host that uses it.

Each operation is one Lua script, which Redis runs atomically: ``reserve`` reclaims expired
reservations, checks every applicable counter and increments all of them or none; ``settle``
and ``release`` move one reservation's money and mark its record. Money is integer
pico-dollars (``HINCRBY``: exact, 64-bit). Lua's numbers are doubles, exact only up to 2**53
pico-dollars (about $9,007), so the scripts never do arithmetic on amounts as numbers: they
compare sums on two limbs below 10**12 each, and pass the digits straight to ``HINCRBY``.

Keys (all in one hash slot, ``{budgets}``, so the scripts stay valid on a Redis Cluster node)::

    <prefix>{budgets}:c:<counter key>   hash: settled, reserved
    <prefix>{budgets}:r:<id>            hash: state, amount, keys (reservation record)
    <prefix>{budgets}:expiring          sorted set: reservation id by expiry (Unix ms)
    <prefix>{budgets}:a:<marker>        string: fire-once threshold marker

On a Redis Cluster pass ``cluster=True``: the store then follows the ``{budgets}`` slot to
whichever node serves it (a plain client works only on that node, and fails on any other).

Times come from the callers' clocks (as the period keys do): hosts sharing a server need
synchronized clocks (NTP). Day and month counters expire 35 days after their period.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from accounting.budgets.store import (
    RECLAIM_BATCH,
    RECORD_RETENTION_MS,
    BudgetStoreError,
    CounterSpec,
    CounterState,
    Refusal,
)

__all__ = ["RedisBudgetStore"]

# Shared by every script: exact comparison of pico-dollar sums, and reclaiming expired ones.
_LIB = """
local B = 1000000000000
-- An integer given as a string of digits, as two exact Lua numbers: hi * 10^12 + lo.
local function limbs(s)
  s = s or '0'
  local sign = 1
  if string.sub(s, 1, 1) == '-' then sign = -1; s = string.sub(s, 2) end
  local n = string.len(s)
  if n <= 12 then return 0, sign * tonumber(s) end
  return sign * tonumber(string.sub(s, 1, n - 12)), sign * tonumber(string.sub(s, n - 11))
end
-- a + b + c > limit, exactly (the negation of core.fits).
local function over(a, b, c, limit)
  local h1, l1 = limbs(a)
  local h2, l2 = limbs(b)
  local h3, l3 = limbs(c)
  local lo = l1 + l2 + l3
  local hi = h1 + h2 + h3 + math.floor(lo / B)
  lo = lo % B
  local lh, ll = limbs(limit)
  return hi > lh or (hi == lh and lo > ll)
end
local function neg(s) if s == '0' then return nil end return '-' .. s end
-- Give back the amounts of reservations that expired before `now`, so a crashed process
-- does not hold money forever; their records stay (state 'expired') so a late settle still
-- records its spend.
local function reclaim(base, zkey, now, retention, batch)
  local ids = redis.call('ZRANGEBYSCORE', zkey, '-inf', now, 'LIMIT', 0, batch)
  for _, id in ipairs(ids) do
    local rkey = base .. 'r:' .. id
    local r = redis.call('HMGET', rkey, 'state', 'amount', 'keys')
    if r[1] == 'reserved' then
      local back = neg(r[2])
      if back then
        for key in string.gmatch(r[3], '%S+') do
          redis.call('HINCRBY', base .. 'c:' .. key, 'reserved', back)
        end
      end
      redis.call('HSET', rkey, 'state', 'expired')
      redis.call('PEXPIRE', rkey, retention)
    end
    redis.call('ZREM', zkey, id)
  end
end
local function keep(key, at) if at ~= '0' then redis.call('PEXPIREAT', key, at) end end
"""

# KEYS: expiring, record, counter...
# ARGV: base, id, amount, now, expires, retention, batch, keys (space-joined),
#       then limit, keep_until for each counter.
_RESERVE = (
    _LIB
    + """
local base, id, amount = ARGV[1], ARGV[2], ARGV[3]
reclaim(base, KEYS[1], ARGV[4], ARGV[6], ARGV[7])
local n = #KEYS - 2
for i = 1, n do
  local c = redis.call('HMGET', KEYS[i + 2], 'settled', 'reserved')
  if over(c[1] or '0', c[2] or '0', amount, ARGV[7 + 2 * i]) then
    return {i - 1, c[1] or '0', c[2] or '0'}
  end
end
for i = 1, n do
  redis.call('HINCRBY', KEYS[i + 2], 'reserved', amount)
  keep(KEYS[i + 2], ARGV[8 + 2 * i])
end
redis.call('HSET', KEYS[2], 'state', 'reserved', 'amount', amount, 'keys', ARGV[8])
redis.call('ZADD', KEYS[1], ARGV[5], id)
return {-1}
"""
)

# KEYS: expiring, record, counter...
# ARGV: id, amount, actual, retention, keys (space-joined), then keep_until for each counter.
# Returns each counter's settled amount afterwards (strings), or nil if already done.
_SETTLE = (
    _LIB
    + """
local r = redis.call('HMGET', KEYS[2], 'state', 'amount')
if r[1] == 'settled' or r[1] == 'released' then return nil end
local back = nil
if r[1] == 'reserved' then back = neg(r[2]) end
local actual = ARGV[3]
local out = {}
for i = 1, #KEYS - 2 do
  if back then redis.call('HINCRBY', KEYS[i + 2], 'reserved', back) end
  if actual ~= '0' then redis.call('HINCRBY', KEYS[i + 2], 'settled', actual) end
  keep(KEYS[i + 2], ARGV[5 + i])
  out[i] = redis.call('HGET', KEYS[i + 2], 'settled') or '0'
end
redis.call('HSET', KEYS[2], 'state', 'settled', 'amount', r[2] or ARGV[2], 'keys', ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('ZREM', KEYS[1], ARGV[1])
return out
"""
)

# KEYS: expiring, record, counter...   ARGV: id, amount, retention, keys (space-joined)
_RELEASE = (
    _LIB
    + """
local r = redis.call('HMGET', KEYS[2], 'state', 'amount')
if r[1] == 'settled' or r[1] == 'released' then return 0 end
if r[1] == 'reserved' then
  local back = neg(r[2])
  if back then
    for i = 3, #KEYS do redis.call('HINCRBY', KEYS[i], 'reserved', back) end
  end
end
redis.call('HSET', KEYS[2], 'state', 'released', 'amount', r[2] or ARGV[2], 'keys', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""
)

_REFUSED_OPTIONS = {
    "decode_responses": "the store decodes replies itself",
    "retry": "a retried reserve would make the caller wait through an outage",
    "retry_on_error": "a retried reserve would make the caller wait through an outage",
    "retry_on_timeout": "a retried reserve would make the caller wait through an outage",
    "connection_pool": "the store builds its own (blocking) pool",
}


def _where(url: str) -> str:
    """``url`` without credentials, for logs and errors."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable url>"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _refused(exc: Exception) -> bool:
    """Whether the server answered with an error that asking again will not clear."""
    transient = (
        redis.exceptions.ReadOnlyError,  # a replica during a failover
        redis.exceptions.ClusterDownError,
        redis.exceptions.TryAgainError,
        redis.exceptions.AskError,
    )
    return isinstance(exc, redis.exceptions.ResponseError) and not isinstance(exc, transient)


class RedisBudgetStore:
    """A :class:`~accounting.budgets.BudgetStore` on a Redis server.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL of the server.
        cluster: the URL names a node of a Redis Cluster (``redis://`` or ``rediss://``).
        prefix: put before every key (default ``"accounting:"``).
        socket_timeout: seconds a command may take before it fails: short, so a reserve never
            hangs on a server that stopped answering.
        connect_timeout: seconds a connection attempt may take.
        max_connections: pool size; past it a caller waits up to ``connect_timeout`` for one.
        client_options: further redis-py client options (TLS files, credentials provider).

    Raises:
        ValueError: a bad URL, timeout, or a ``client_options`` key the store cannot work with.

    Construction never touches the network. No command is retried: a failure is reported at
    once as :class:`BudgetStoreError`, and :class:`~accounting.budgets.Budgets` applies its
    ``on_store_error`` policy.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        cluster: bool = False,
        prefix: str = "accounting:",
        socket_timeout: float = 0.25,
        connect_timeout: float = 0.25,
        max_connections: int = 64,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"RedisBudgetStore url {_where(url)!r} must start with redis://, rediss:// "
                "or unix://"
            )
        if cluster and urlsplit(url).scheme == "unix":
            raise ValueError("RedisBudgetStore cluster=True needs a redis:// or rediss:// url")
        if not socket_timeout > 0 or not connect_timeout > 0:
            raise ValueError("RedisBudgetStore timeouts must be > 0")
        refused = sorted(set(client_options or {}) & _REFUSED_OPTIONS.keys())
        if refused:
            raise ValueError(
                f"RedisBudgetStore client_options[{refused[0]!r}] is not allowed: "
                f"{_REFUSED_OPTIONS[refused[0]]}"
            )
        self.url = url
        self.cluster = cluster
        self._base = f"{prefix}{{budgets}}:"
        self._expiring = self._base + "expiring"
        self._options: dict[str, Any] = {
            # No retries: redis-py's default would retry with backoff, holding the caller.
            "retry": Retry(NoBackoff(), 0),
            "max_connections": max_connections,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
            **(client_options or {}),
        }
        self._lock = threading.Lock()
        self._client: Any = None
        if not cluster:
            pool = redis.BlockingConnectionPool.from_url(
                url, timeout=connect_timeout, **self._options
            )
            self._use(redis.Redis.from_pool(pool))

    def __repr__(self) -> str:
        cluster = ", cluster=True" if self.cluster else ""
        return f"RedisBudgetStore({_where(self.url)!r}{cluster})"

    def _use(self, client: Any) -> None:
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._release = client.register_script(_RELEASE)
        self._client = client

    def _live(self) -> Any:
        """The client; a cluster client is made at first use (thread-safe)."""
        if self._client is None:
            # RedisCluster.from_url connects at once: never in the constructor.
            with self._lock:
                if self._client is None:
                    self._use(redis.RedisCluster.from_url(self.url, **self._options))
        return self._client

    def _run(self, call: Callable[[Any], Any]) -> Any:
        """``call(client)``; a failure of the server (or cluster) as BudgetStoreError."""
        try:
            return call(self._live())
        # RedisClusterException is not a RedisError: a cluster client raises it when no node
        # can be reached, and it must meet the on_store_error policy like any outage.
        except (
            redis.exceptions.RedisError,
            redis.exceptions.RedisClusterException,
            OSError,
        ) as exc:
            # A plain client on a cluster node that does not serve the {budgets} slot.
            hint = (
                " (a Redis Cluster node: pass cluster=True)"
                if isinstance(exc, redis.exceptions.MovedError) and not self.cluster
                else ""
            )
            raise BudgetStoreError(
                f"{self!r}: {type(exc).__name__}: {exc}{hint}",
                store=self.name,
                refused=_refused(exc),
            ) from exc

    def _keys(self, reservation_id: str, counters: Sequence[CounterSpec]) -> list[str]:
        return [
            self._expiring,
            self._base + "r:" + reservation_id,
            *(self._base + "c:" + c.key for c in counters),
        ]

    # -- BudgetStore ------------------------------------------------------------------------

    def reserve(
        self,
        *,
        reservation_id: str,
        counters: Sequence[CounterSpec],
        amount: int,
        expires: int,
        now: int,
    ) -> Refusal | None:
        """See :meth:`BudgetStore.reserve <accounting.budgets.BudgetStore.reserve>`."""
        args: list[Any] = [
            self._base,
            reservation_id,
            amount,
            now,
            expires,
            RECORD_RETENTION_MS,
            RECLAIM_BATCH,
            " ".join(c.key for c in counters),
        ]
        for c in counters:
            args += [c.limit, c.keep_until or 0]
        keys = self._keys(reservation_id, counters)
        reply = self._run(lambda client: self._reserve(keys=keys, args=args, client=client))
        if int(reply[0]) < 0:
            return None
        return Refusal(index=int(reply[0]), settled=int(reply[1]), reserved=int(reply[2]))

    def settle(
        self,
        *,
        reservation_id: str,
        counters: Sequence[CounterSpec],
        amount: int,
        actual: int,
        now: int,
    ) -> list[int] | None:
        """See :meth:`BudgetStore.settle <accounting.budgets.BudgetStore.settle>`."""
        args: list[Any] = [
            reservation_id,
            amount,
            actual,
            RECORD_RETENTION_MS,
            " ".join(c.key for c in counters),
            *(c.keep_until or 0 for c in counters),
        ]
        keys = self._keys(reservation_id, counters)
        reply = self._run(lambda client: self._settle(keys=keys, args=args, client=client))
        return None if reply is None else [int(v) for v in reply]

    def release(
        self, *, reservation_id: str, counters: Sequence[CounterSpec], amount: int, now: int
    ) -> bool:
        """See :meth:`BudgetStore.release <accounting.budgets.BudgetStore.release>`."""
        args = [reservation_id, amount, RECORD_RETENTION_MS, " ".join(c.key for c in counters)]
        keys = self._keys(reservation_id, counters)
        reply = self._run(lambda client: self._release(keys=keys, args=args, client=client))
        return bool(reply)

    def read(self, keys: Sequence[str]) -> list[CounterState]:
        """See :meth:`BudgetStore.read <accounting.budgets.BudgetStore.read>`."""

        def hmget_all(client: Any) -> Any:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(self._base + "c:" + key, "settled", "reserved")
            return pipe.execute()

        replies = self._run(hmget_all)
        return [
            CounterState(settled=int(settled or 0), reserved=int(reserved or 0))
            for settled, reserved in replies
        ]

    def claim(self, marker: str, *, keep_until: int | None) -> bool:
        """See :meth:`BudgetStore.claim <accounting.budgets.BudgetStore.claim>`."""
        key = self._base + "a:" + marker
        return bool(self._run(lambda client: client.set(key, 1, nx=True, pxat=keep_until)))

    def close(self) -> None:
        """Close the connection pool (the nodes' pools, on a cluster)."""
        client = self._client
        if client is None:
            return
        client.close()
        if self.cluster:
            # redis-py 8.1's RedisCluster.close() leaves the nodes' pools open (as RedisTier
            # notes): close them, or their sockets wait for the garbage collector.
            for node in client.get_nodes():
                if node.redis_connection is not None:
                    node.redis_connection.connection_pool.disconnect()
