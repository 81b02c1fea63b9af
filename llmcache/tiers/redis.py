"""Shared tier on a Redis server or Redis Cluster, behind a circuit breaker."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.cluster
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from llmcache._exceptions import TierUnavailable
from llmcache.codec import CorruptEntry
from llmcache.tiers.breaker import CircuitBreaker

__all__ = ["RedisTier"]

log = logging.getLogger("llmcache.redis")
T = TypeVar("T")

# Errors that say "the server is not there", as opposed to a command the server refused.
# RedisClusterException: no startup node of the cluster could be reached, or its slots are not
# all served (it is not a RedisError).
_DOWN = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,
    redis.exceptions.RedisClusterException,
    OSError,
)
# client_options that would break the tier, and why.
_REFUSED_OPTIONS = {
    "decode_responses": "values are bytes; decoded str replies would all read as corrupt",
    "retry": "the circuit breaker decides; client-side retries multiply the cost of an outage",
    "retry_on_error": "the circuit breaker decides; client-side retries multiply the cost",
    "retry_on_timeout": "the circuit breaker decides; client-side retries multiply the cost",
    "connection_pool": "the tier builds its own pools (a blocking one, one per event loop)",
    "single_connection_client": "one connection cannot serve concurrent callers",
}
_SCHEMES = ("redis", "rediss", "unix")
# Compare-and-delete, so a holder whose lease ran out cannot free the next holder's lock.
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


def _foreign(exc: redis.exceptions.ResponseError) -> Exception:
    # WRONGTYPE: another program keeps a list, a hash ... under our key. That is a bad entry
    # (counted as corrupt, then overwritten), not a failing server.
    if str(exc).startswith("WRONGTYPE"):
        return CorruptEntry(f"the key holds another Redis type ({exc})")
    return exc


def _pool_exhausted(exc: BaseException) -> bool:
    # redis-py's BlockingConnectionPool (sync and asyncio, 8.1) raises a plain ConnectionError,
    # not MaxConnectionsError, when no connection frees up within its timeout; the message is
    # the only mark it leaves. Either way it is this process's own limit, not the server down.
    return isinstance(exc, redis.exceptions.MaxConnectionsError) or (
        type(exc) is redis.exceptions.ConnectionError and exc.args == ("No connection available.",)
    )


def _answered(exc: BaseException) -> bool:
    # A refused command (WRONGTYPE, OOM, READONLY, NOPERM, ...) is a reply: the server is up.
    # CLUSTERDOWN is a reply too, but it says the cluster cannot serve: that counts as down.
    return isinstance(exc, redis.exceptions.ResponseError) and not isinstance(
        exc, redis.exceptions.ClusterError
    )


def _direct_get(pool: Any, name: str) -> bytes | None:
    """``GET name`` on a connection of ``pool``: the wire exchange of ``Redis.get``, no more.

    A hit is the hot path. With retries off, ``Redis.get`` adds only per-command machinery
    around this exchange (a retry wrapper, redis-py's observability hooks, a response-callback
    lookup that GET does not use): about 14 µs of a 150 µs loopback GET on a 2-core machine.
    """
    conn = pool.get_connection()
    try:
        conn.send_packed_command(conn.pack_command("GET", name))
        value: bytes | None = conn.read_response()
    except redis.exceptions.ResponseError:
        raise  # a whole reply was read: the connection is in step and goes back to the pool
    except BaseException:
        # Timed out, cut off or interrupted mid-reply: a late reply must not reach the next
        # caller, as Redis.get ensures by the same means.
        conn.disconnect()
        raise
    finally:
        pool.release(conn)
    return value


def redact(url: str) -> str:
    """Return ``url`` with any password replaced, fit for logs and error messages.

    The password is the one :func:`urllib.parse.urlsplit` parses (so it may contain ``@``);
    query-string values other than ``db`` are replaced too.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable url>"
    if not parts.netloc and "@" in url:
        # No "//": urlsplit sees no credentials, but the text before the last @ may be some.
        return "***@" + url.rpartition("@")[2]
    if password is None and not parts.query:
        return url
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        netloc = userinfo.partition(":")[0] + ":***@" + hostinfo
    out = f"{parts.scheme}://{netloc}{parts.path}"
    if parts.query:
        fields = (f.partition("=") for f in parts.query.split("&"))
        out += "?" + "&".join(k + s + (v if k == "db" or not s else "***") for k, s, v in fields)
    if parts.fragment:
        out += "#" + parts.fragment
    return out


class RedisTier:
    """Entries on Redis, shared by every process and host that uses the same server.

    Args:
        url: ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL, with database and credentials.
        cluster: the URL names a node of a Redis Cluster (explicit: never guessed from the URL).
        prefix: put before every key, to share a database with other applications.
        ttl: longest life of an entry here, in seconds; Redis expires it on the server.
        socket_timeout: seconds a command may take before it counts as a failure.
        connect_timeout: seconds a connection attempt may take.
        max_connections: size of the connection pool (per event loop for async use).
        failure_threshold: consecutive connection failures that open the circuit breaker.
        cooldown: seconds the breaker stays open before one call probes the server again.
        client_options: further keyword arguments for the redis-py client (TLS certificates,
            credentials provider, ...). Options never come from the URL's query string.

    Raises:
        ValueError: a bad URL, option value, or a ``client_options`` key the tier cannot work
            with (``decode_responses``, ``retry``, ``retry_on_error``, ``retry_on_timeout``,
            ``connection_pool``, ``single_connection_client``).

    Construction never touches the network, for a cluster too: the first call connects.
    Failures are raised to the :class:`~llmcache.Cache`, which counts them and goes on without
    this tier; while the breaker is open the tier is skipped without touching the network.
    Connection failures and timeouts open the breaker; a command the server refused does not
    (it answered), and neither does waiting in vain for a free pooled connection (a limit of
    this process, not the server down).
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        cluster: bool = False,
        prefix: str = "",
        ttl: float | None = None,
        socket_timeout: float = 0.25,
        connect_timeout: float = 0.25,
        max_connections: int = 64,
        failure_threshold: int = 3,
        cooldown: float = 1.0,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme
        if scheme not in _SCHEMES:
            raise ValueError(
                f"RedisTier url {redact(url)!r} must start with redis://, rediss:// or unix://"
            )
        extra = {k for k, _ in parse_qsl(parts.query, keep_blank_values=True)} - {"db"}
        if extra:
            # redis-py would turn these into client options behind our back; options are
            # explicit arguments here, checked and typed.
            raise ValueError(
                f"RedisTier url {redact(url)!r} carries options {sorted(extra)} in its query "
                "string; pass them as RedisTier(client_options={...}) instead"
            )
        if cluster and scheme == "unix":
            raise ValueError("RedisTier cluster=True needs a redis:// or rediss:// url")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"RedisTier ttl must be > 0 or None, got {ttl}")
        refused = sorted(set(client_options or {}) & _REFUSED_OPTIONS.keys())
        if refused:
            raise ValueError(
                f"RedisTier client_options[{refused[0]!r}] is not allowed: "
                f"{_REFUSED_OPTIONS[refused[0]]}"
            )
        self.url = url
        self.cluster = cluster
        self.prefix = prefix
        self.ttl = ttl
        self.breaker = CircuitBreaker(threshold=failure_threshold, cooldown=cooldown)
        # Made once: skipped calls are frequent while a server is down, and redact() is a regex.
        self._skipped = f"{self!r} is skipped: circuit breaker open"
        self._options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
            "max_connections": max_connections,
            **(client_options or {}),
        }
        # Beyond max_connections concurrent calls, a caller waits this long for a free one.
        self._pool_wait = connect_timeout
        # Guards making the sync client (which may take a while for a cluster); _loops_lock
        # guards _aclients, and is never held across I/O.
        self._lock = threading.Lock()
        self._loops_lock = threading.Lock()
        # A standalone client connects lazily; RedisCluster.from_url connects at once, so the
        # cluster client is made at first use (_sync), never in this constructor.
        self._client: Any = None if cluster else self._make_client()
        # Per event loop: its client, and the async generator that closes it with the loop.
        self._aclients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[Any, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"RedisTier({redact(self.url)!r}, cluster={self.cluster})"

    # -- clients ------------------------------------------------------------------------------

    def _make_client(self) -> Any:
        # No client-side retries: the breaker decides, and a retry would multiply the cost of
        # every call while the server is down.
        retry = Retry(NoBackoff(), 0)
        if self.cluster:
            return redis.cluster.RedisCluster.from_url(self.url, retry=retry, **self._options)
        # A blocking pool: past max_connections concurrent calls a caller waits for a free
        # connection, rather than failing on a healthy server (which would open the breaker).
        pool = redis.BlockingConnectionPool.from_url(
            self.url, retry=retry, timeout=self._pool_wait, **self._options
        )
        return redis.Redis.from_pool(pool)

    def _sync(self) -> Any:
        """The sync client, made on first use (thread-safe); a failure is the call's failure."""
        client = self._client
        if client is None:
            with self._lock:
                client = self._client
                if client is None:
                    client = self._client = self._make_client()
        return client

    async def _aclient(self) -> Any:
        # asyncio connections belong to the loop that opened them: one client per loop.
        loop = asyncio.get_running_loop()
        held = self._aclients.get(loop)
        if held is not None:
            return held[0]
        self._forget_closed_loops()
        retry = redis.asyncio.retry.Retry(NoBackoff(), 0)
        client: Any
        if self.cluster:
            client = redis.asyncio.cluster.RedisCluster.from_url(
                self.url, retry=retry, **self._options
            )
        else:
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self.url, retry=retry, timeout=self._pool_wait, **self._options
            )
            client = redis.asyncio.Redis.from_pool(pool)
        # asyncio.run() finalizes the async generators still suspended (shutdown_asyncgens)
        # before it closes its loop: this one then closes the client, so a loop that ends
        # without aclose() leaves no connection behind. (The entry's value refers to the loop,
        # so the weak key alone would never let it go.)
        closer = self._close_with_loop(loop, client)
        await anext(closer)
        with self._loops_lock:
            self._aclients[loop] = (client, closer)
        return client

    def _forget_closed_loops(self) -> None:
        # A loop closed without shutdown_asyncgens (new_event_loop() ... close(), rather than
        # asyncio.run) never ran its closer: drop its client, or every such loop would keep one
        # (and its connections) for the life of the tier. Its sockets cannot be closed from
        # here: closing an asyncio transport needs its loop, and redis-py offers no synchronous
        # close of a pool. Once dropped, they close when the garbage collector frees them.
        with self._loops_lock:
            for loop in [loop for loop in self._aclients if loop.is_closed()]:
                del self._aclients[loop]

    async def _close_with_loop(
        self, loop: asyncio.AbstractEventLoop, client: Any
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._loops_lock:
                held = self._aclients.get(loop)
                if held is not None and held[0] is client:
                    del self._aclients[loop]
            await client.aclose()

    # -- the breaker around every call (sync and async faces of one policy) -------------------

    def _check(self) -> None:
        if not self.breaker.allow():
            raise TierUnavailable(self._skipped, tier=self.name)

    def _failed(self, exc: BaseException, started: float) -> None:
        if _answered(exc):
            # The server replied: it is up. As a probe, this closes the breaker.
            self._ok(started)
            return
        if not isinstance(exc, _DOWN) or _pool_exhausted(exc):
            # Not a verdict on the server (cancelled, bad data, our own pool limit): nothing
            # to record. A probe that ends so costs one cool-down (CircuitBreaker.allow).
            return
        if self.breaker.failure():
            log.warning(
                "%r is failing (%s: %s); skipping it, next probe in %.1fs",
                self,
                type(exc).__name__,
                exc,
                self.breaker.cooldown,
            )

    def _ok(self, started: float) -> None:
        if self.breaker.success(started):
            log.warning("%r is back; serving from it again", self)

    def _run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._guarded(lambda client: getattr(client, method)(*args, **kwargs))

    def _guarded(self, fn: Callable[[Any], T]) -> T:
        self._check()
        started = time.monotonic()
        try:
            result = fn(self._sync())
        except BaseException as exc:
            self._failed(exc, started)
            raise
        self._ok(started)
        return result

    async def _arun(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self._check()
        started = time.monotonic()
        try:
            client = await self._aclient()
            result = await getattr(client, method)(*args, **kwargs)
        except BaseException as exc:
            self._failed(exc, started)
            raise
        self._ok(started)
        return result

    # -- Tier ---------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """Return the bytes under ``key``, or ``None``."""
        name = self.prefix + key
        try:
            value: bytes | None
            if self.cluster:
                value = self._run("get", name)
            else:
                value = self._guarded(lambda client: _direct_get(client.connection_pool, name))
        except redis.exceptions.ResponseError as exc:
            raise _foreign(exc) from None
        return value

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store ``value``; the server expires it after ``ttl`` seconds."""
        px = None if ttl is None else max(1, int(ttl * 1000))
        self._run("set", self.prefix + key, value, px=px)

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        self._run("unlink", self.prefix + key)

    def clear(self) -> None:
        """Remove every llmcache entry under this tier's prefix (SCAN + UNLINK, never FLUSHDB).

        Namespace counters stay, so generations only move forward.
        """
        self._guarded(self._clear_sync)

    def _clear_sync(self, client: Any) -> None:
        batch: list[bytes] = []
        for key in client.scan_iter(match=self._pattern(), count=1000):
            if b":~gen:" in key:
                continue  # counters stay: generations must only move forward
            batch.append(key)
            if len(batch) >= 500:
                self._unlink_many(client, batch)
                batch = []
        if batch:
            self._unlink_many(client, batch)

    def _unlink_many(self, client: Any, keys: list[bytes]) -> None:
        if self.cluster:
            # Keys of a batch live in different hash slots; one UNLINK each.
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.unlink(key)
            pipe.execute()
        else:
            client.unlink(*keys)

    def _pattern(self) -> str:
        return re.sub(r"([*?\[\]\\])", r"\\\1", self.prefix) + "llmcache:*"

    def close(self) -> None:
        """Close the sync connection pool (async clients close with :meth:`aclose`)."""
        self._forget_closed_loops()
        client = self._client
        if client is None:
            return
        client.close()
        if self.cluster:
            # redis-py 8.1's RedisCluster.close() leaves the nodes' pools open (each node's
            # client was handed its pool, so it does not close it); close them here, or their
            # sockets wait for the garbage collector.
            for node in client.get_nodes():
                if node.redis_connection is not None:
                    node.redis_connection.connection_pool.disconnect()

    async def aget(self, key: str) -> bytes | None:
        """Async :meth:`get`."""
        try:
            value: bytes | None = await self._arun("get", self.prefix + key)
        except redis.exceptions.ResponseError as exc:
            raise _foreign(exc) from None
        return value

    async def aset(self, key: str, value: bytes, ttl: float | None) -> None:
        """Async :meth:`set`."""
        px = None if ttl is None else max(1, int(ttl * 1000))
        await self._arun("set", self.prefix + key, value, px=px)

    async def adelete(self, key: str) -> None:
        """Async :meth:`delete`."""
        await self._arun("unlink", self.prefix + key)

    async def aclear(self) -> None:
        """Async :meth:`clear` (runs the sync SCAN in a thread: clearing is rare and bulky)."""
        await asyncio.to_thread(self.clear)

    async def aclose(self) -> None:
        """Close this event loop's async client and the sync pool (used by :meth:`aclear`)."""
        loop = asyncio.get_running_loop()
        with self._loops_lock:
            held = self._aclients.pop(loop, None)
        if held is not None:
            await held[1].aclose()  # _close_with_loop's finally closes the client
        self.close()

    # -- CounterTier ----------------------------------------------------------------------------

    def counter(self, key: str) -> int:
        """Return a counter shared by every user of this server."""
        value = self._run("get", self.prefix + key)
        return int(value) if value is not None else 0

    def incr(self, key: str) -> int:
        """Increment a shared counter atomically (INCR)."""
        return int(self._run("incr", self.prefix + key))

    async def acounter(self, key: str) -> int:
        """Async :meth:`counter`."""
        value = await self._arun("get", self.prefix + key)
        return int(value) if value is not None else 0

    async def aincr(self, key: str) -> int:
        """Async :meth:`incr`."""
        return int(await self._arun("incr", self.prefix + key))

    # -- LockTier -------------------------------------------------------------------------------

    def acquire(self, key: str, token: str, lease: float) -> bool:
        """Take the lease (SET NX PX): it frees itself after ``lease`` seconds."""
        px = max(1, int(lease * 1000))
        return bool(self._run("set", self.prefix + key, token, nx=True, px=px))

    def release(self, key: str, token: str) -> None:
        """Free the lease if ``token`` still holds it."""
        self._run("eval", _RELEASE, 1, self.prefix + key, token)

    async def aacquire(self, key: str, token: str, lease: float) -> bool:
        """Async :meth:`acquire`."""
        px = max(1, int(lease * 1000))
        return bool(await self._arun("set", self.prefix + key, token, nx=True, px=px))

    async def arelease(self, key: str, token: str) -> None:
        """Async :meth:`release`."""
        await self._arun("eval", _RELEASE, 1, self.prefix + key, token)
